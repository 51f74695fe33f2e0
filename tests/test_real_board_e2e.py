"""Trials on a serial-only board, end to end, without hardware (issue 14).

``otalab board --serial-only`` is a virtual board that otalab can only treat as a real one: its
console pty is a serial port (opened by :class:`~otalib.board.serial_board.SerialBoard`, the
trial's real-board path), with ESP8266 ROM and rBoot banners, no side channel (no SUBACK or
update results on stdout, no in-process console), reset and power only through the power hook
(``kill -USR2 PID``, the stand-in for a relay). It runs Sming's real ``rom0.bin`` and takes
signed updates of it, made with a real key, over a slow link (a :class:`LinkProxy` between it
and Mosquitto: every reconnect takes a few hundred milliseconds).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from otalib.board.serial_board import PowerHook, SerialBoard
from otalib.broker import find_mosquitto, start_broker
from otalib.keys import generate_key_file
from otalib.lab.campaign import CampaignSpec
from otalib.lab.trial import run_campaign_on_bench
from otalib.mqtt.url import parse_url
from otalib.net.link import LinkProfile, LinkProxy

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

ROM0 = Path(__file__).parent / "vectors" / "esp8266" / "rom0.bin"
#: the build time of the firmware the board runs (ms since 1900); the published one is a minute newer
BOARD_BUILD = 3_970_000_000_000
#: the board's link: slow enough for a power cut mid-transfer, slow to reconnect
LINK = LinkProfile(rate_Bps=400_000, latency_s=0.15, name="slow-wifi", up_rate_Bps=400_000)


@contextlib.contextmanager
def serial_only_board(broker_url: str, link: str, verify_key: Path, flash: Path):
    """``otalab board --serial-only`` running rom0.bin (4.3.1): yields (console pty, pid)."""
    command = [sys.executable, "-m", "otalib", "board", "--serial-only", "--broker", broker_url]
    command += ["--link", link, "--flash", str(flash), "--rom", str(ROM0)]
    command += ["--app-id", "test", "--version", "4.3.1", "--verify-key", str(verify_key)]
    command += ["--restart-delay", "0.2", "--hold", "--build-timestamp", str(BOARD_BUILD)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline()
        assert first.startswith("console: "), first + (proc.stderr.read() if proc.stderr else "")
        proc.stdout.readline()  # the status line
        stdout_rest: list[str] = []
        reader = threading.Thread(target=lambda: stdout_rest.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
        reader.start()
        proc.stdin.write("\n")  # power on
        proc.stdin.flush()
        yield first.split(":", 1)[1].strip(), proc.pid, stdout_rest
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_campaign_on_the_serial_only_board(tmp_path: Path) -> None:
    """The campaign's real-board path: the board's key file and ROMs from the spec, a fresh start per trial."""
    key, _ = generate_key_file(tmp_path / "ota.key")
    verify_key = tmp_path / "verify.key.bin"
    verify_key.write_bytes(key.verify_key)
    hook_log = tmp_path / "power.log"
    with start_broker("mosquitto", workdir=tmp_path / "broker") as broker:
        url = parse_url(broker.url)
        with (
            LinkProxy(url.host, url.port, LINK) as proxy,
            serial_only_board(broker.url, proxy.address, verify_key, tmp_path / "flash.bin") as (pty, pid, stdout),
        ):
            spec = CampaignSpec.from_dict(
                {
                    "name": "serial-only",
                    "repeats": 2,
                    "grid": {"fault": ["none", "power-loss@0.4"]},
                    "fixed": {"board": pty, "mode": "signed", "broker_url": broker.url, "timeout_s": 60},
                    "key": str(tmp_path / "ota.key"),
                    "roms": [f"{ROM0}@0x2000", f"{ROM0}@0x102000"],  # Sming's two-ROM .ota of one build
                    "firmware": {"patch": 2, "build_timestamp": BOARD_BUILD + 60_000},
                    # the power hook, as a relay's command would be: logs, then signals the board process
                    "power": f"sh -c 'echo cycle >> {hook_log} && kill -USR2 {pid}'",
                    "board_reset": "power",
                }
            )
            frame = run_campaign_on_bench(spec, tmp_path / "run", progress=False)
            with SerialBoard(pty, reset_via_rts=False, power=PowerHook(cycle=f"kill -USR2 {pid}")) as port:
                port.power_cycle()  # what a boot looks like on the port: the ESP8266's banners, rBoot's slot
                boot = [port.expect(event, 20) for event in ("boot", "bootloader", "rom_boot", "running")]
                assert boot[0].fields["rst_cause"] == 1 and boot[2].fields["slot"] == boot[3].fields["slot"]
                assert not [line for line in port.history() if "Sming Host emulator" in line.line]
    assert len(frame) == 4
    for row in frame.itertuples():
        assert row.outcome == "updated", (row.fault, row.outcome, row.notes)
        # the board took this trial's package: its first byte came after this trial's publish
        assert row.t_first_byte > row.t_publish_start, row
        assert row.t_new_version >= row.t_restart > row.t_first_byte  # the reboot seen in the ESP8266 banners
        assert "board reset (power)" in row.notes
        assert row.board_updates == ""  # no side channel
    cuts = frame[frame.fault == "power-loss@0.4"]
    assert list(cuts.faults_fired) == ["power-loss"] * 2 and cuts.notes.str.contains("power cut by the hook").all()
    assert list(frame[frame.fault == "none"].faults_fired) == ["", ""]
    # one power cycle per trial's fresh start, one per power loss
    assert hook_log.read_text().splitlines() == ["cycle"] * 6
    assert not [line for line in stdout if line.startswith(("update:", "subscribed:"))]
