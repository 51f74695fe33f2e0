"""SerialBoard and ``otalab monitor`` against a real pty (and pyserial's loop:// and socket:// URLs)."""

from __future__ import annotations

import json
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from otalib.board.console import ConsoleParser
from otalib.board.protocol import Board
from otalib.board.serial_board import LineSplitter, SerialBoard
from otalib.errors import BoardError

OTALAB = Path(sys.executable).parent / "otalab"
GARBAGE = b"\xff\xfe\x00"


@pytest.fixture
def pty():
    """(master fd, slave path) of a raw pty; both ends closed afterwards."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def write_chunks(fd: int, data: bytes, seed: int = 1) -> None:
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 50, 333, 1500])
        os.write(fd, data[i : i + n])
        i += n


#: How long a test waits for something that should come at once (generous: the machine may be loaded).
WAIT = 10.0
#: ``otalab monitor --timeout`` of the tests that need it to run out (their sync must fit well inside).
MONITOR_TIMEOUT = 4.0


def synced(board: SerialBoard, master: int) -> None:
    """Wait until the board's reader is running (pyserial flushes input when it opens the port), then
    until every probe written meanwhile was read: the last line read is ``sync`` and nothing is pending."""
    deadline = time.monotonic() + WAIT
    while True:
        os.write(master, b"probe\n")
        try:
            board.expect("^probe$", 0.2)
            break
        except BoardError:
            assert time.monotonic() < deadline, "the board never saw a probe line"
    os.write(master, b"sync\n")  # after every probe: once it is read, no probe is left behind it
    board.expect("^sync$", WAIT)


def with_garbage(data: bytes) -> tuple[bytes, list[str]]:
    """Insert garbage lines between recorded lines; return the bytes and the expected line texts."""
    raw_lines = data.split(b"\n")[:-1]
    out, expected = bytearray(GARBAGE + b"\n"), ["\ufffd\ufffd"]
    for i, raw in enumerate(raw_lines):
        out += raw + b"\n"
        expected.append(raw.decode().replace("\r", ""))
        if i % 97 == 50:
            out += GARBAGE + b"junk\r\n"
            expected.append("\ufffd\ufffdjunk")
    return bytes(out), expected


def test_line_splitter_keeps_partial_lines() -> None:
    s = LineSplitter()
    assert s.feed(b"abc", 1.0) == []
    assert s.feed(b"def\r\nxy", 2.0) == [(1.0, "abcdef")]
    assert s.feed(b"\n\n\xff\x00z", 3.0) == [(2.0, "xy"), (3.0, "")]
    assert s.end_of_input(4.0) == [(3.0, "\ufffdz")]


def test_line_splitter_whole_lines_and_byte_chunks_agree(consoles: Path) -> None:
    # whole-line writes take the splitter's one-decode path, single bytes its general one: same lines
    for path in sorted(consoles.rglob("*.log")):
        data, _ = with_garbage(path.read_bytes() + b"nul\x00 and cr\r\n\r\n")
        whole, single = LineSplitter(), LineSplitter()
        by_line = [line for raw in data.splitlines(keepends=True) for line in whole.feed(raw, 1.0)]
        by_byte = [line for i in range(len(data)) for line in single.feed(data[i : i + 1], 1.0)]
        assert by_line == by_byte, path.name
        assert all("\r" not in text and "\x00" not in text for _, text in by_line)
    assert LineSplitter().feed(b"a\r\n\x00b\r\n", 2.0) == [(2.0, "a"), (2.0, "b")]


@pytest.mark.parametrize("name", ["std-p1-L3-v5.log", "adv32-v5-tampered.log"])
def test_serial_board_reads_recorded_console_in_random_chunks(pty, consoles: Path, name: str) -> None:
    master, path = pty
    data, expected = with_garbage((consoles / name).read_bytes())
    with SerialBoard(path) as board:
        assert isinstance(board, Board)
        synced(board, master)
        start = board.end
        t0 = time.time()
        write_chunks(master, data)
        last = board.expect(["switch_failed", "restart"], 5)
        while board.history(board.end - 1)[-1].line != expected[-1]:  # the tail after the expected event
            board.expect(".", 2)
        got = board.history(start)
        t1 = time.time()
    assert [cl.line for cl in got] == expected
    offline = ConsoleParser()
    assert [(cl.event, cl.fields) for cl in got] == [
        (p.event, p.fields) for p in (offline.parse(text, 0) for text in expected)
    ]
    times = [cl.t for cl in got]
    assert times == sorted(times) and t0 <= times[0] and times[-1] <= t1
    assert last.event in ("switch_failed", "restart")
    assert board.current_version() == "4.3"


def test_expect_partial_line_and_timeout(pty) -> None:
    master, path = pty
    reads: queue.Queue[float] = queue.Queue()  # the board's clock is read once per chunk of bytes it reads

    def clock() -> float:
        now = time.time()
        reads.put(now)
        return now

    with SerialBoard(path, clock=clock) as board:
        synced(board, master)
        while not reads.empty():
            reads.get_nowait()
        os.write(master, b"Currently running rom1: 0x108")
        t_first = reads.get(timeout=WAIT)  # the reader has the first part of the line
        with pytest.raises(BoardError, match=r"timed out after 0.3s waiting for running; last line: 'sync'"):
            board.expect("running", 0.3)
        os.write(master, b"000. Application version: 4.4\r\n")
        line = board.expect("running", WAIT)
        assert line.fields == {"name": "rom1", "slot": 1, "address": 0x108000, "version": "4.4"}
        assert line.t == t_first  # stamped at the arrival of its first byte, not of its newline
        assert board.current_version() == "4.4" and board.current_slot() == 1
        # pty has no modem lines: resetting is a clear BoardError, not a crash
        with pytest.raises(BoardError, match="cannot reset board"):
            board.reset()


def test_lines_iterator_sees_new_lines(pty) -> None:
    master, path = pty
    with SerialBoard(path) as board:
        synced(board, master)
        got = []
        lines = board.lines()  # starts here: whenever the thread gets to run, it misses nothing

        def read():
            for cl in lines:
                got.append(cl)
                if cl.event == "switch_ok":
                    return

        reader = threading.Thread(target=read)
        reader.start()
        os.write(
            master,
            b"1 Swapping from rom0 @ 0x00008000 to rom1 @ 0x00108000.\r\n\r\n"
            b"2 Switching was successful. Restarting...\r\n",
        )
        reader.join(WAIT)
        assert not reader.is_alive()
    assert [cl.event for cl in got] == ["swapping", None, "switch_ok"]


def test_other_pyserial_urls(consoles: Path) -> None:
    with SerialBoard("loop://") as board:
        board.write(b"Checking for a new application firmware...\r\n")
        assert board.expect("checking", 2).line == "Checking for a new application firmware..."
    # socket://: a TCP server plays the recording
    data = (consoles / "adv32-v5-oldtimestamp.log").read_bytes()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(1)  # the board is open (pyserial discards input that arrives while it opens)
            conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with SerialBoard(f"socket://127.0.0.1:{port}") as board:
            board.write(b"go")
            assert board.expect("device_error", 5).fields["error"] == "DowngradeNotAllowed"
            # the peer hangs up: the failure is sticky and named
            with pytest.raises(BoardError, match=r"serial port socket://127\.0\.0\.1:\d+ failed: read failed"):
                board.expect("never_printed", 5)
    finally:
        thread.join(5)
        server.close()


def test_missing_port_is_board_error() -> None:
    with pytest.raises(BoardError, match="cannot open serial port /dev/otalab-nonexistent"):
        SerialBoard("/dev/otalab-nonexistent")


# -- otalab monitor ----------------------------------------------------------------------------------------------


class Monitor:
    """``otalab monitor`` in a subprocess, its stdout collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(OTALAB), "monitor", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.out: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.out.append(line.rstrip("\n"))

    def sync(self, master: int) -> None:
        deadline = time.monotonic() + 10
        while not any("sync" in o for o in self.out):
            assert time.monotonic() < deadline, "monitor never showed the sync line"
            assert self.proc.poll() is None, self.proc.stderr.read()
            os.write(master, b"sync\n")
            time.sleep(0.1)

    def finish(self) -> tuple[int, str]:
        try:
            self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        return self.proc.returncode, self.proc.stderr.read()


def test_monitor_json_until_switch_ok(pty, consoles: Path, tmp_path: Path) -> None:
    master, path = pty
    log = tmp_path / "console.jsonl"
    mon = Monitor(path, "--json", "--until", "switch_ok", "--timeout", "20", "--log", str(log))
    mon.sync(master)
    write_chunks(master, GARBAGE + b"\n" + (consoles / "std-p1-L3-v5.log").read_bytes(), seed=7)
    code, err = mon.finish()
    assert (code, err) == (0, "")
    records = [json.loads(o) for o in mon.out]
    assert all({"t", "event", "line"} <= set(r) for r in records)
    assert records[-1]["event"] == "switch_ok" and records[-1]["line"].endswith(
        "Switching was successful. Restarting..."
    )
    assert any(r["line"] == "\ufffd\ufffd" and r["event"] is None for r in records)
    assert [r["fields"]["total"] for r in records if r["event"] == "ota_write"][-1] == 204800
    assert not any(r["event"] == "restart" for r in records)  # stopped at --until
    assert log.read_text().splitlines() == mon.out


def test_monitor_infers_update_at_default_level(pty, consoles: Path) -> None:
    master, path = pty
    mon = Monitor(path, "--json", "--until", "updated", "--timeout", "20")
    mon.sync(master)
    second_boot = (consoles / "retained-loop-boot2.log").read_bytes().split(b"Checking")[0]
    write_chunks(master, (consoles / "std-p1-L2-v5.log").read_bytes() + second_boot)
    code, err = mon.finish()
    assert (code, err) == (0, "")
    last = json.loads(mon.out[-1])
    assert (last["event"], last["fields"]["outcome"]) == ("outcome", "updated")
    assert {json.loads(o)["event"] for o in mon.out}.isdisjoint({"ota_write", "swapping", "switch_ok"})


def test_monitor_timeout_and_text_output(pty) -> None:
    master, path = pty
    mon = Monitor(path, "--timeout", str(MONITOR_TIMEOUT))
    mon.sync(master)
    os.write(master, b"1850874 Switching was successful. Restarting...\r\n")
    code, err = mon.finish()
    assert (code, err) == (0, "")
    assert any(o.split()[1:3] == ["switch_ok", "1850874"] for o in mon.out)


def test_monitor_until_not_reached_is_one_line_error(pty) -> None:
    master, path = pty
    mon = Monitor(path, "--until", "switch_ok", "--timeout", str(MONITOR_TIMEOUT))
    mon.sync(master)
    code, err = mon.finish()
    assert code != 0
    assert err.splitlines() == [
        f"otalab: error: timed out after {MONITOR_TIMEOUT:g}s waiting for switch_ok; last line: 'sync'"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/dev/otalab-nonexistent"], "otalab: error: cannot open serial port /dev/otalab-nonexistent"),
        (["loop://", "--pattern", "Bad=x"], "otalab: error: bad --pattern 'Bad=x'"),
        (["loop://", "--timeout", "0"], "otalab: error: --timeout must be positive"),
    ],
)
def test_monitor_bad_input_is_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run([str(OTALAB), "monitor", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(message)
    assert "Traceback" not in proc.stderr
