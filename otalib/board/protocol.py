"""The board protocols: what orchestration and notebooks see of any board.

labgrid style, one small protocol per capability: :class:`ConsoleProtocol` (timestamped
console lines read by cursor, ``lines()``, ``expect()``), :class:`ResetProtocol`,
:class:`PowerProtocol`; :class:`Board` is all three plus a name, the running version and
``close()``. A serial board, the in-process virtual board and the virtual board process
all implement :class:`Board`, so :class:`~otalib.lab.trial.Trial`,
:class:`~otalib.lab.session.LabSession` and ``otalab monitor`` never know which one they drive.

:class:`ConsoleBuffer` is the drivers' shared core: a thread-safe store of console lines
with blocking waits (a driver only ``push()``es lines); :class:`BufferedConsole` gives a
driver the console protocol over its buffer.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, Union, runtime_checkable

from otalib.errors import BoardError

#: What ``expect`` waits for: an event name, a regex, or several of them (any matches).
Expectation = Union[str, re.Pattern, Sequence[Union[str, re.Pattern]]]  # noqa: UP007 (runtime alias, py3.10)

_EVENT_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True, init=False)
class ConsoleLine:
    """One console line: arrival time (``time.time()``), raw text, parsed event and its fields."""

    t: float
    line: str
    event: str | None = None
    fields: dict = field(default_factory=dict)

    def __init__(self, t: float, line: str, event: str | None = None, fields: dict | None = None) -> None:
        # the dataclass's frozen __init__ would call object.__setattr__ per field: a board makes
        # two lines per TCP segment, so the instance dict is filled directly (still frozen after)
        values = self.__dict__
        values["t"] = t
        values["line"] = line
        values["event"] = event
        values["fields"] = {} if fields is None else fields

    def to_json(self) -> dict:
        """A JSON-ready dict (``t``, ``event``, ``line``, ``fields``)."""
        return {"t": self.t, "event": self.event, "line": self.line, "fields": dict(self.fields)}


@runtime_checkable
class ConsoleProtocol(Protocol):
    """A board's console: timestamped lines, each at a cursor (its position since the console opened).

    ``line_at`` and ``history`` read by cursor and never consume; ``expect`` consumes
    (each call searches from just after its previous match; ``skip`` moves that mark to the end).
    """

    @property
    def end(self) -> int:
        """The cursor just after the newest line."""
        ...

    @property
    def closed(self) -> bool:
        """True once the console has ended (no line will follow the ones it has)."""
        ...

    def line_at(self, cursor: int, timeout: float | None) -> tuple[ConsoleLine | None, int]:
        """The line at ``cursor`` (waiting up to ``timeout`` s, None = forever) and the next cursor;
        ``(None, cursor)`` on timeout or when closed."""
        ...

    def history(self, start: int = 0) -> list[ConsoleLine]:
        """The lines from cursor ``start`` on."""
        ...

    def lines(self, start: int | None = None) -> Iterator[ConsoleLine]:
        """Blocking iterator of lines from ``start`` (default: the lines after this call); ends when closed."""
        ...

    def expect(self, what: Expectation, timeout: float) -> ConsoleLine:
        """Wait for an event name (or regex, or any of several); raise BoardError on timeout."""
        ...

    def skip(self) -> None:
        """Make the next ``expect`` ignore every line received so far."""
        ...


@runtime_checkable
class ResetProtocol(Protocol):
    """A reset button (or the driver's closest equivalent)."""

    def reset(self) -> None:
        """Reset the board (it reboots and prints its boot banner)."""
        ...


@runtime_checkable
class PowerProtocol(Protocol):
    """A power switch (or the driver's closest equivalent)."""

    def power_cycle(self) -> None:
        """Remove and restore power (the flash keeps what was written)."""
        ...


@runtime_checkable
class Board(ConsoleProtocol, ResetProtocol, PowerProtocol, Protocol):
    """One board, real or virtual, as orchestration sees it: console, reset, power, version."""

    name: str

    def current_version(self) -> str | None:
        """Application version the board last reported running, if known."""
        ...

    def close(self) -> None:
        """Release the board; ``lines()`` iterators end."""
        ...


def describe(what: Expectation) -> str:
    """Human-readable form of an expectation, for error messages."""
    if isinstance(what, re.Pattern):
        return f"/{what.pattern}/"
    if isinstance(what, str):
        return what
    return " or ".join(describe(w) for w in what)


def matches(line: ConsoleLine, what: Expectation) -> ConsoleLine | None:
    """Return ``line`` (regex groups merged into its fields) if it satisfies ``what``, else None.

    A string that looks like an event name (``[a-z_][a-z0-9_]*``) matches the line's event;
    any other string, or a compiled pattern, is searched in the raw line.
    """
    if isinstance(what, str) and _EVENT_NAME.match(what):
        return line if line.event == what else None
    if isinstance(what, (str, re.Pattern)):
        m = re.search(what, line.line)
        if m is None:
            return None
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        return replace(line, fields={**line.fields, **groups}) if groups else line
    for w in what:
        hit = matches(line, w)
        if hit is not None:
            return hit
    return None


class ConsoleBuffer:
    """Thread-safe history of console lines with blocking waits.

    Drivers call :meth:`push`; readers use :meth:`lines`, :meth:`line_at` or :meth:`expect`.
    ``expect`` consumes: each call searches from just after the previous match (lines that
    arrived before the call still count, so nothing is lost to a race). A failure stored
    with :meth:`fail` is sticky: every later wait raises it.
    """

    def __init__(self, maxlen: int = 200_000) -> None:
        self._lines: list[ConsoleLine] = []
        self._dropped = 0  # lines removed from the front (history bound)
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self._closed = False
        self._error: BoardError | None = None
        self._expect_pos = 0

    # -- writer side --
    def push(self, line: ConsoleLine) -> None:
        """Append one line and wake waiters."""
        self.push_many((line,))

    def push_many(self, lines: Sequence[ConsoleLine]) -> None:
        """Append lines (in order) and wake waiters once."""
        if not lines:
            return
        with self._cond:
            self._lines.extend(lines)
            if len(self._lines) > self._maxlen + self._maxlen // 4:  # trim in batches, not a memmove a line
                cut = len(self._lines) - self._maxlen
                del self._lines[:cut]
                self._dropped += cut
            self._cond.notify_all()

    def fail(self, error: BoardError) -> None:
        """Store the first driver failure; waits raise it from now on."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def close(self) -> None:
        """Mark the console closed; iterators end and waits stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- reader side --
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def end(self) -> int:
        """Position just after the newest line (a cursor for :meth:`line_at`)."""
        with self._cond:
            return self._dropped + len(self._lines)

    def history(self, start: int = 0) -> list[ConsoleLine]:
        """Copy of the lines from position ``start`` on."""
        with self._cond:
            return list(self._lines[max(0, start - self._dropped) :])

    def last(self) -> ConsoleLine | None:
        """The newest line, if any."""
        with self._cond:
            return self._lines[-1] if self._lines else None

    def line_at(self, cursor: int, timeout: float | None) -> tuple[ConsoleLine | None, int]:
        """Line at ``cursor`` (waiting up to ``timeout`` s, None = forever) and the next cursor.

        Returns ``(None, cursor)`` on timeout or when closed with nothing left.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                cursor = max(cursor, self._dropped)
                index = cursor - self._dropped
                if index < len(self._lines):
                    return self._lines[index], cursor + 1
                if self._error is not None:
                    raise self._error
                if self._closed:
                    return None, cursor
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None, cursor
                self._cond.wait(remaining)

    def lines(self, start: int | None = None) -> Iterator[ConsoleLine]:
        """Blocking iterator from ``start`` (default: the lines after this call); ends when closed.

        The position is taken at the call, not at the first ``next()``, so an iterator handed to
        another thread misses nothing that arrives in between.
        """
        return self._lines_from(self.end if start is None else start)

    def _lines_from(self, cursor: int) -> Iterator[ConsoleLine]:
        while True:
            line, cursor = self.line_at(cursor, None)
            if line is None:
                return
            yield line

    def skip(self) -> None:
        """Make the next :meth:`expect` ignore every line received so far."""
        self._expect_pos = self.end

    def expect(self, what: Expectation, timeout: float) -> ConsoleLine:
        """Next line (after the previous match) satisfying ``what``; BoardError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        cursor = self._expect_pos
        while True:
            remaining = deadline - time.monotonic()
            line, cursor = self.line_at(cursor, max(0.0, remaining))
            if line is None:
                last = self.last()
                why = "console closed" if self._closed else f"timed out after {timeout:g}s"
                raise BoardError(f"{why} waiting for {describe(what)}; last line: {last.line if last else '(none)'!r}")
            hit = matches(line, what)
            if hit is not None:
                self._expect_pos = cursor
                return hit


class BufferedConsole:
    """:class:`ConsoleProtocol` for a driver that keeps its lines in a :class:`ConsoleBuffer` (``_console``)."""

    _console: ConsoleBuffer

    @property
    def end(self) -> int:
        return self._console.end

    @property
    def closed(self) -> bool:
        return self._console.closed

    def line_at(self, cursor: int, timeout: float | None) -> tuple[ConsoleLine | None, int]:
        return self._console.line_at(cursor, timeout)

    def history(self, start: int = 0) -> list[ConsoleLine]:
        return self._console.history(start)

    def lines(self, start: int | None = None) -> Iterator[ConsoleLine]:
        return self._console.lines(start)

    def expect(self, what: Expectation, timeout: float) -> ConsoleLine:
        return self._console.expect(what, timeout)

    def skip(self) -> None:
        self._console.skip()
