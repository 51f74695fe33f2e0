"""A real board on a serial line (any pyserial URL), behind the board protocol.

A reader thread splits the byte stream into lines (partial lines kept until their
newline, ``\\r`` and NULs dropped, undecodable bytes replaced), timestamps each line
with the arrival time of its first byte, parses it and pushes it to the board's
:class:`~otalib.board.protocol.ConsoleBuffer`, read through the console protocol.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import serial

from otalib.board.console import ConsoleParser
from otalib.board.protocol import BufferedConsole, ConsoleBuffer
from otalib.errors import BoardError


class LineSplitter:
    """Bytes in, complete text lines out (sans-IO; keeps the partial tail)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._t_first: float | None = None

    def feed(self, data: bytes, t: float) -> list[tuple[float, str]]:
        """Add bytes received at ``t``; return ``(first-byte time, line)`` for each completed line."""
        out: list[tuple[float, str]] = []
        for piece in data.split(b"\n")[:-1] if b"\n" in data else []:
            self._buf += piece
            out.append((self._t_first if self._t_first is not None else t, self._decode(bytes(self._buf))))
            self._buf.clear()
            self._t_first = None
        tail = data.rsplit(b"\n", 1)[-1]
        if tail:
            if not self._buf:
                self._t_first = t
            self._buf += tail
        return out

    def end_of_input(self, t: float) -> list[tuple[float, str]]:
        """The stream ended at ``t``: the pending partial line, if any."""
        if not self._buf:
            return []
        line = (self._t_first if self._t_first is not None else t, self._decode(bytes(self._buf)))
        self._buf.clear()
        self._t_first = None
        return [line]

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.decode("utf-8", errors="replace").replace("\r", "").replace("\x00", "")


class SerialBoard(BufferedConsole):
    """A board on ``url`` (``/dev/ttyUSB0``, ``rfc2217://host:port``, ``socket://…``, a pty path)."""

    def __init__(
        self,
        url: str,
        baud: int = 115200,
        parser: ConsoleParser | None = None,
        reset_via_rts: bool = True,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = url
        self.url = url
        self.baud = baud
        self.parser = parser or ConsoleParser()
        self.reset_via_rts = reset_via_rts
        self._console = ConsoleBuffer()
        self._clock = clock
        self._version: str | None = None
        self._slot: int | None = None
        try:
            self._serial = serial.serial_for_url(url, baudrate=baud, timeout=0.05, do_not_open=False)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BoardError(f"cannot open serial port {url}: {_reason(exc)}") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, name=f"serial-{url}", daemon=True)
        self._thread.start()

    # -- reader thread --
    def _reader(self) -> None:
        splitter = LineSplitter()
        try:
            while not self._stop.is_set():
                try:
                    data = self._serial.read(max(1, self._serial.in_waiting))
                except (serial.SerialException, OSError, TypeError) as exc:
                    if self._stop.is_set():
                        break
                    self._console.fail(BoardError(f"serial port {self.url} failed: {_reason(exc)}"))
                    break
                if data:
                    for t, text in splitter.feed(data, self._clock()):
                        self._push(t, text)
            for t, text in splitter.end_of_input(self._clock()):
                self._push(t, text)
        finally:
            self._console.close()

    def _push(self, t: float, text: str) -> None:
        line = self.parser.parse(text, t)
        if line.event == "running":
            self._version = line.fields.get("version")
            self._slot = line.fields.get("slot")
        self._console.push(line)

    # -- Board protocol (the console part comes from BufferedConsole) --
    def _pulse(self, hold: float) -> None:
        if not self.reset_via_rts:
            raise BoardError(f"{self.url}: reset lines not wired (reset_via_rts=False)")
        try:
            # as esptool's hard reset: IO0 high (DTR off), EN low (RTS on), then release
            self._serial.dtr = False
            self._serial.rts = True
            time.sleep(hold)
            self._serial.rts = False
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BoardError(f"cannot reset board on {self.url}: {_reason(exc)}") from None

    def reset(self) -> None:
        """Pulse EN low through RTS (DTR kept off so the chip boots the firmware)."""
        self._pulse(0.1)

    def power_cycle(self) -> None:
        """A serial line has no power switch: hold reset longer (brown-out-like restart)."""
        self._pulse(0.5)

    def current_version(self) -> str | None:
        return self._version

    def current_slot(self) -> int | None:
        """ROM slot the board last reported running, if known."""
        return self._slot

    def write(self, data: bytes) -> None:
        """Send bytes to the board's console."""
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise BoardError(f"cannot write to {self.url}: {_reason(exc)}") from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(serial.SerialException, OSError):
            self._serial.close()
        self._console.close()

    def __enter__(self) -> SerialBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
