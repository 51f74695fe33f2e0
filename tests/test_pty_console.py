"""The virtual board's pty console: bursts keep their order under a slow reader; nothing blocks the device."""

from __future__ import annotations

import os
import select
import threading

from otalib.board.virtual import _PtyConsole

#: Lines in a burst: far more than the pty holds (about 64 KiB), so the writer's backlog is used.
BURST = 4000
WAIT = 30.0


def _numbered(n: int) -> bytes:
    return f"{n:06d} TCP 5660c5c0 received: 1460 bytes\r\n".encode()


def test_burst_keeps_line_order_under_a_slow_reader() -> None:
    # stall: the reader is never gone long enough for the writer to drop text (nothing may be lost here)
    pty = _PtyConsole(stall=WAIT)
    reader = os.open(pty.path, os.O_RDONLY | os.O_NOCTTY)
    expected = b"".join(_numbered(n) for n in range(BURST))
    got = bytearray()
    done = threading.Event()

    def read_slowly() -> None:  # small reads: the writer gets ahead and its backlog fills
        while len(got) < len(expected):
            chunk = os.read(reader, 256)
            if not chunk:
                break
            got.extend(chunk)
        done.set()

    try:
        for n in range(BURST):
            pty.write(_numbered(n))  # the device's writes never wait for the reader
        threading.Thread(target=read_slowly, daemon=True).start()
        assert done.wait(WAIT), f"the reader got {len(got)} of {len(expected)} bytes"
        assert bytes(got) == expected
        assert pty.dropped == 0
    finally:
        pty.close()
        os.close(reader)


def test_nobody_reading_drops_the_oldest_text() -> None:
    pty = _PtyConsole(max_pending=100, stall=0.01)
    try:
        for n in range(BURST):  # nobody reads: the writes return at once all the same
            pty.write(_numbered(n))
        pty.write(b"last\r\n")
        reader = os.open(pty.path, os.O_RDONLY | os.O_NOCTTY)
        try:
            got = bytearray()
            while not got.endswith(b"last\r\n"):
                assert select.select([reader], [], [], WAIT)[0], "the last line never reached the pty"
                got.extend(os.read(reader, 65536))
        finally:
            os.close(reader)
        assert pty.dropped > 0
        assert not got.startswith(_numbered(0))  # the oldest text went, the newest came through
    finally:
        pty.close()
