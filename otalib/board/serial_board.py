"""A real board on a serial line (any pyserial URL), behind the board protocol.

A reader thread splits the byte stream into lines (partial lines kept until their
newline, ``\\r`` and NULs dropped, undecodable bytes replaced), timestamps each line
with the arrival time of its first byte, parses it and pushes it to the board's
:class:`~otalib.board.protocol.ConsoleBuffer`, read through the console protocol.

Reset and power, as a USB-serial adapter wired the esptool way (RTS -> EN, DTR -> GPIO0):
the port is opened with both lines released (a board wired RTS -> EN is not held in
reset while the monitor runs), :meth:`SerialBoard.reset` is esptool's hard reset (EN
pulsed low with GPIO0 released: the board boots its application, not the ROM's download
mode), and :meth:`SerialBoard.power_cycle` runs a :class:`PowerHook` (a USB hub port or
a relay switched by a command); without one it is refused.
"""

from __future__ import annotations

import contextlib
import enum
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
        if not self._buf and data[-1:] == b"\n" and data.isascii():  # whole ASCII lines: one decode (the usual case)
            text = data.decode("ascii")
            if "\r" in text or "\x00" in text:
                text = text.replace("\r", "").replace("\x00", "")
            return [(t, line) for line in text.split("\n")[:-1]]
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


#: How long esptool's hard reset holds EN low (``esptool.reset.HardReset``: 0.1 s, 0.2 s for USB-JTAG).
RESET_HOLD_S = 0.1


class BoardReset(str, enum.Enum):
    """How a real board is brought to a known state before a trial."""

    RTS = "rts"  # esptool's hard reset: RTS -> EN pulsed low, DTR -> GPIO0 released
    POWER = "power"  # the power hook (a board without the reset line wired; the pty-backed board)
    NONE = "none"  # as it is


def _command(text: str | Sequence[str], what: str) -> list[str]:
    """A hook's command as an argument list (a string is split as a shell would, but no shell runs)."""
    if isinstance(text, str):
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise BoardError(f"bad {what} {text!r}: {exc}") from None
    else:
        argv = [str(a) for a in text]
    if not argv:
        raise BoardError(f"empty {what}")
    return argv


@dataclass(frozen=True)
class PowerHook:
    """Commands that switch a board's power: a USB hub port (``uhubctl -a cycle -p 2``), a relay.

    Either ``cycle`` (one command that switches off and on again) or ``off`` and ``on``
    (run ``off_s`` s apart). Commands run without a shell (``sh -c '…'`` for one), each
    within ``timeout`` s; a failure is a :class:`~otalib.errors.BoardError` naming the command.
    """

    cycle: str | None = None
    off: str | None = None
    on: str | None = None
    off_s: float = 1.0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.cycle is None and (self.off is None or self.on is None):
            raise BoardError("a power hook needs a cycle command, or both an off and an on command")
        if self.cycle is not None and (self.off is not None or self.on is not None):
            raise BoardError("a power hook takes a cycle command or off/on commands, not both")
        if not 0 <= self.off_s <= 600:
            raise BoardError(f"bad power-off time {self.off_s!r}: 0..600 s")
        for name in ("cycle", "off", "on"):
            command = getattr(self, name)
            if command is not None:
                _command(command, f"power {name} command")

    @classmethod
    def from_spec(cls, value: object) -> PowerHook | None:
        """From a campaign spec's ``power``: a command string (cycle) or ``{cycle|off+on, off_s}``."""
        if value is None:
            return None
        if isinstance(value, str):
            return cls(cycle=value)
        if isinstance(value, dict):
            unknown = set(value) - {"cycle", "off", "on", "off_s", "timeout"}
            if unknown:
                raise BoardError(f"unknown power hook key(s): {', '.join(sorted(map(str, unknown)))}")
            for key in ("cycle", "off", "on"):
                if key in value and not isinstance(value[key], str):
                    raise BoardError(f"power hook {key!r} must be a command string")
            try:
                numbers = {k: float(value[k]) for k in ("off_s", "timeout") if k in value}
            except (TypeError, ValueError):
                raise BoardError("power hook off_s/timeout must be numbers of seconds") from None
            return cls(cycle=value.get("cycle"), off=value.get("off"), on=value.get("on"), **numbers)
        raise BoardError(f"a power hook is a command string or a mapping, not {type(value).__name__}")

    def describe(self) -> str:
        """One line for metadata and notes."""
        if self.cycle is not None:
            return f"cycle: {self.cycle}"
        return f"off: {self.off}; {self.off_s:g} s; on: {self.on}"

    def run(self, what: str) -> None:
        """Run one of the commands (``cycle``, ``off``, ``on``)."""
        command = getattr(self, what)
        argv = _command(command, f"power {what} command")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise BoardError(f"power {what} command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise BoardError(f"power {what} command did not finish within {self.timeout:g}s: {command}") from None
        except OSError as exc:
            raise BoardError(f"cannot run power {what} command {command!r}: {_reason(exc)}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            why = f": {tail[-1][:200]}" if tail else ""
            raise BoardError(f"power {what} command failed (exit {done.returncode}){why}: {command}")

    def power_cycle(self) -> None:
        """Switch the board off and on again."""
        if self.cycle is not None:
            self.run("cycle")
            return
        self.run("off")
        time.sleep(self.off_s)
        self.run("on")


class SerialBoard(BufferedConsole):
    """A board on ``url`` (``/dev/ttyUSB0``, ``rfc2217://host:port``, ``socket://…``, a pty path).

    ``reset_via_rts``: the adapter's RTS drives EN and DTR drives GPIO0 (esptool's wiring), so
    :meth:`reset` can pulse EN; ``power``: the :class:`PowerHook` of :meth:`power_cycle`.
    The port opens with RTS and DTR released either way.
    """

    def __init__(
        self,
        url: str,
        baud: int = 115200,
        parser: ConsoleParser | None = None,
        reset_via_rts: bool = True,
        *,
        power: PowerHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = url
        self.url = url
        self.baud = baud
        self.parser = parser or ConsoleParser()
        self.reset_via_rts = reset_via_rts
        self.power = power
        self._console = ConsoleBuffer()
        self._clock = clock
        self._version: str | None = None
        self._slot: int | None = None
        self._serial = open_released(url, baud)
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
    def _set_rts(self, state: bool) -> None:
        self._serial.rts = state
        # esptool: adapters on Windows' usbser.sys apply RTS only with the next DTR write
        self._serial.dtr = self._serial.dtr

    def reset(self) -> None:
        """esptool's hard reset: GPIO0 released (DTR off), EN low (RTS on) for :data:`RESET_HOLD_S`, released.

        The board boots its application (GPIO0 high), not the ROM's download mode.
        """
        if not self.reset_via_rts:
            raise BoardError(f"{self.url}: no reset line (RTS -> EN) wired on this board")
        try:
            self._serial.dtr = False
            self._set_rts(True)
            time.sleep(RESET_HOLD_S)
            self._set_rts(False)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BoardError(f"cannot reset board on {self.url}: {_reason(exc)}") from None

    def power_cycle(self) -> None:
        """Switch the board's power off and on through its :class:`PowerHook`."""
        if self.power is None:
            raise BoardError(f"{self.url}: no power hook (a command switching a USB hub port or relay)")
        self.power.power_cycle()

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


def open_released(url: str, baud: int, timeout: float = 0.05) -> serial.SerialBase:
    """Open ``url`` with RTS and DTR released from the start.

    Opening a tty asserts both lines by default, which holds a board wired RTS -> EN in
    reset (and DTR -> GPIO0 low) while the port is open; pyserial applies the states
    set on an unopened port when it opens it.
    """
    try:
        port = serial.serial_for_url(url, baudrate=baud, timeout=timeout, do_not_open=True)
        port.rts = False
        port.dtr = False
        port.open()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise BoardError(f"cannot open serial port {url}: {_reason(exc)}") from None
    return port


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
