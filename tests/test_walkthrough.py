"""The README's walkthrough, run as written: each terminal's block in its own pseudo-terminal.

The blocks are read from README.md itself (each follows a ``<!-- walkthrough:terminal-N -->``
marker). They run in a temporary checkout-like folder whose ``.venv/bin/activate`` puts this
interpreter's ``bin`` first on PATH, as activating the venv would. Terminals start in the
order the README gives, each once the previous one shows it is ready; the test passes when
the monitor (terminal 3) exits 0 on ``>>> updated``. Every wait is bounded and every process
group started is stopped.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from board_helpers import deliver, make_device, make_flash
from paho.mqtt.enums import CallbackAPIVersion
from process_helpers import otalab_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- walkthrough:terminal-(\d+) -->\s*```sh\n(.*?)```", re.S)
WAIT = 60.0

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="needs Mosquitto")


def walkthrough_blocks(text: str) -> dict[int, str]:
    """Terminal number -> the shell text of its block, as the README shows it."""
    blocks = {int(n): body for n, body in MARKER.findall(text)}
    assert blocks, "README.md has no <!-- walkthrough:terminal-N --> blocks"
    assert sorted(blocks) == list(range(1, len(blocks) + 1)), f"terminals not numbered 1..N: {sorted(blocks)}"
    return blocks


def fixed_port(blocks: dict[int, str]) -> int:
    """The broker port the walkthrough fixes (``otalab broker --port N``)."""
    match = re.search(r"otalab broker --port (\d+)", blocks[1])
    assert match, "terminal 1 does not start the broker on a fixed port"
    return int(match.group(1))


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Terminal:
    """``bash`` running one block with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, number: int, script: str, cwd: Path, env: dict[str, str]) -> None:
        self.number = number
        master, slave = os.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", script],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.text = ""
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every process holding the slave has gone
                data = b""
            with self._changed:
                if not data:
                    self._changed.notify_all()
                    return
                self.text += data.decode(errors="replace").replace("\r\n", "\n")
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first match of ``pattern`` in this terminal's output (fails on timeout or exit)."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search(self.text)
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._changed.wait(0.5)):
                    pytest.fail(f"terminal {self.number}: no {pattern!r}; output:\n{self.text[-3000:]}")
                self._changed.wait(min(left, 1.0))

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"terminal {self.number} did not finish; output:\n{self.text[-3000:]}")

    def stop(self) -> None:
        """SIGINT (Ctrl-C) to the whole process group, then SIGKILL if it lingers."""
        for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):  # children left behind by the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.close(self.master)


def retained_payload(port: int, topic: str, timeout: float = 10.0) -> bytes | None:
    """The retained message on ``topic`` (None when there is none).

    Mosquitto queues a subscription's retained messages when it handles the SUBSCRIBE, so a
    marker published (on a topic of its own) after the SUBACK arrives after them.
    """
    marker_topic = "walkthrough/marker"
    got: list[bytes] = []
    done, subscribed = threading.Event(), threading.Event()

    def on_message(client, userdata, msg) -> None:
        if msg.topic == marker_topic:
            done.set()
        elif msg.retain:
            got.append(msg.payload)

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe([(topic, 1), (marker_topic, 1)])
        assert subscribed.wait(timeout), "no SUBACK"
        client.publish(marker_topic, b"marker", qos=1)
        assert done.wait(timeout), "marker not received"
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0] if got else None


def test_readme_blocks_are_numbered_terminals_that_activate_the_venv() -> None:
    blocks = walkthrough_blocks(README.read_text())
    assert len(blocks) >= 3
    for number, block in blocks.items():
        assert block.splitlines()[0] == ". .venv/bin/activate", f"terminal {number} does not activate the venv"
    everything = "\n".join(blocks.values())
    for path in re.findall(r"(?:-o|--dir|--flash|--console-link|-k|--verify-key) (\S+)", everything):
        assert path.startswith("lab/"), f"{path} is outside lab/"
    # the walkthrough's lab/ (keys, flash) is ignored by git; the library's otalib/lab/ is not
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        check = ["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path]
        return subprocess.run(check, capture_output=True).returncode == 0

    assert ignored("lab/ota.key") and ignored("lab/flash.bin")
    assert not ignored("otalib/lab/new_module.py") and not ignored("tests/lab/x.py")


def run_walkthrough(blocks: dict[int, str], folder: Path, env: dict[str, str], port: int) -> None:
    """The four terminals in the README's order; asserts the board took the update once and nothing stays retained."""
    terminals: list[Terminal] = []
    try:
        terminals.append(Terminal(1, blocks[1], folder, env))
        terminals[0].wait_for(r"^ready")
        terminals.append(Terminal(2, blocks[2], folder, env))
        terminals[1].wait_for(r"^waiting for a monitor")
        terminals.append(Terminal(3, blocks[3], folder, env))
        monitor = terminals[2]
        monitor.wait_for(r"^\S+ boot ")  # the monitor sees the board boot: it powered on once watched
        terminals[1].wait_for(r"^subscribed: a/test/u/4\.3 ")  # the broker's SUBACK: a publish now reaches it
        terminals.append(Terminal(4, blocks[4], folder, env))
        assert terminals[3].wait_exit() == 0, terminals[3].text
        assert monitor.wait_exit() == 0, monitor.text
        assert re.search(r"outcome\s+>>> updated", monitor.text)
        slots = re.findall(r"^\S+ running .*Currently running rom(\d)", monitor.text, re.M)
        assert len(slots) == 2 and slots[0] != slots[1], monitor.text  # booted, then restarted into the other slot
        board = terminals[1].text
        outcomes = re.findall(r'^update: \{"outcome": "(\w+)"', board, re.M)
        assert outcomes[:1] == ["applied"], board
        assert set(outcomes) <= {"applied", "ignored"}, board  # the clear is no fault
        assert "truncated" not in board
        terminals[1].stop()  # the board, before looking at the broker's retained message
        assert retained_payload(port, "a/test/u/4.3") is None
    finally:
        for terminal in reversed(terminals):
            terminal.stop()
    assert not (folder / "lab/console").is_symlink(), "the board left its console link behind"


def test_walkthrough_as_written_updates_the_board_twice_over(tmp_path: Path) -> None:
    """Pasted as written, and pasted again the next day in the same checkout (lab/ kept)."""
    blocks = walkthrough_blocks(README.read_text())
    port = fixed_port(blocks)
    if not port_free(port):  # someone else uses the README's port: same text, another port
        new = free_port()
        blocks = {n: re.sub(rf"\b{port}\b", str(new), text) for n, text in blocks.items()}
        port = new
    venv_bin = Path(sys.executable).parent
    (tmp_path / ".venv/bin").mkdir(parents=True)
    (tmp_path / ".venv/bin/activate").write_text(f'export PATH="{venv_bin}:$PATH"\n')
    env = {**otalab_env(), "TERM": "dumb"}
    for name in [n for n in env if n.startswith(("MQTT_", "APP_", "ENABLE_", "OTALAB_"))]:
        del env[name]
    run_walkthrough(blocks, tmp_path, env, port)
    key = (tmp_path / "lab/ota.key").read_bytes()
    assert stat.S_IMODE((tmp_path / "lab/ota.key").stat().st_mode) == 0o600
    assert (tmp_path / "lab/app.bin").stat().st_size >= 64 * 1024  # big enough to watch
    run_walkthrough(blocks, tmp_path, env, port)
    assert (tmp_path / "lab/ota.key").read_bytes() == key  # made once, never replaced


def test_an_empty_message_is_skipped_silently(tmp_path: Path) -> None:
    """The clear as the sample takes it: its parser opens no stream and ends without a word."""
    with make_flash(tmp_path / "flash.bin", "4.3.5") as flash:
        device, console = make_device(flash)
        device.boot()
        console.clear()
        result = deliver(device, b"")
        assert (result.outcome, result.error) == ("ignored", None)
        assert "empty message" in result.detail and "truncated" not in result.detail
        assert console.output == ""
        assert device.state == "running" and flash.boot_config().current_rom == 0
