"""Follow an update on a board's console: the one watch loop of trials, lab sessions, the demo and ``otalab monitor``.

:func:`follow_update` reads any :class:`~otalib.board.protocol.ConsoleProtocol` from a
cursor, feeds each line to an :class:`~otalib.board.console.OutcomeTracker` and yields it;
when the tracker decides (on a line, or by time: ``skipped``, ``timeout``) it also yields a
synthetic ``outcome`` line (:func:`~otalib.board.console.outcome_line`). It ends when
``until`` is met, after ``timeout`` s, or when the console closes, and says which
(:class:`Ending`). Hooks bring in what the console does not show: a virtual board's side
channels, a fault to inject, the phase clock of a trial.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterator

from otalib.board.console import OutcomeTracker, outcome_line, reached
from otalib.board.protocol import ConsoleLine, ConsoleProtocol
from otalib.errors import BoardError
from otalib.vocabulary import Outcome


class Ending(enum.Enum):
    """Why a :class:`Follow` ended."""

    UNTIL = "until"  # the ``until`` condition was met
    TIMEOUT = "timeout"
    CLOSED = "closed"  # the console ended


def is_decision(line: ConsoleLine) -> bool:
    """Is ``line`` a synthetic ``outcome`` line (a decision, not console text)?"""
    return line.event == "outcome" and not line.line


#: ``until`` for "the first decision" (the tracker's or a side channel's).
DECIDED: Callable[[ConsoleLine], bool] = is_decision

#: What ends a follow: an event name or an outcome (``updated``, ``rejected``…), a predicate, or None (only time).
Until = str | Callable[[ConsoleLine], bool] | None


class Follow:
    """One pass over a console; iterate it for the lines (and decisions), then read what it found.

    After the iteration: :attr:`ending`, :attr:`outcome` (the last decision, None if none),
    :attr:`cursor` (where the next follow of this console starts) and :attr:`last`
    (the last console line read).
    """

    def __init__(
        self,
        console: ConsoleProtocol,
        tracker: OutcomeTracker | None,
        until: Until,
        timeout: float | None,
        *,
        start: int | None = None,
        on_tick: Callable[[], Outcome | None] | None = None,
        on_line: Callable[[ConsoleLine], None] | None = None,
        on_outcome: Callable[[Outcome, ConsoleLine | None], bool] | None = None,
        rearm: bool = False,
        poll_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.console = console
        self.tracker = tracker
        self.until = until
        self.timeout = timeout
        self.cursor = console.end if start is None else start
        self.on_tick = on_tick
        self.on_line = on_line
        self.on_outcome = on_outcome
        self.rearm = rearm
        self.poll_s = poll_s
        self.clock = clock
        self.ending: Ending | None = None
        self.outcome: Outcome | None = None
        self.last: ConsoleLine | None = None

    def _met(self, line: ConsoleLine) -> bool:
        if self.until is None:
            return False
        if isinstance(self.until, str):
            return reached(line, self.until)
        return self.until(line)

    def _decision(self, outcome: Outcome, t: float) -> ConsoleLine:
        self.outcome = outcome
        if self.rearm and self.tracker is not None:
            self.tracker.rearm()
        return outcome_line(outcome, t)

    def __iter__(self) -> Iterator[ConsoleLine]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self.ending = None
        while self.ending is None:
            for item in self._round(deadline):
                yield item
                if self._met(item):
                    self.ending = Ending.UNTIL
                    return

    def _round(self, deadline: float | None) -> list[ConsoleLine]:
        """One round: the side channels, then one console line (or, caught up, the tracker's clock)."""
        side = self.on_tick() if self.on_tick is not None else None
        if side is not None:
            return [self._decision(side, self.clock())]
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            self.ending = Ending.TIMEOUT
            return []
        wait = self.poll_s if remaining is None else min(self.poll_s, remaining)
        line, self.cursor = self.console.line_at(self.cursor, wait)
        produced: list[ConsoleLine] = []
        decided: Outcome | None = None
        if line is not None:
            self.last = line
            if self.on_line is not None:
                self.on_line(line)
            produced.append(line)
            decided = self.tracker.feed(line) if self.tracker is not None else None
        elif self.tracker is not None:  # caught up: time-based decisions (never before a backlog is read)
            decided = self.tracker.poll(self.clock())
        if decided is not None and (self.on_outcome is None or self.on_outcome(decided, line)):
            produced.append(self._decision(decided, line.t if line is not None else self.clock()))
        if line is None and self.console.closed:
            self.ending = Ending.CLOSED
        return produced

    def run(self) -> Follow:
        """Follow to the end, dropping the lines; returns itself."""
        for _ in self:
            pass
        return self


def follow_update(
    console: ConsoleProtocol,
    tracker: OutcomeTracker | None,
    until: Until = DECIDED,
    timeout: float | None = None,
    *,
    start: int | None = None,
    on_tick: Callable[[], Outcome | None] | None = None,
    on_line: Callable[[ConsoleLine], None] | None = None,
    on_outcome: Callable[[Outcome, ConsoleLine | None], bool] | None = None,
    rearm: bool = False,
    poll_s: float = 0.05,
    clock: Callable[[], float] = time.time,
) -> Follow:
    """Follow ``console`` feeding ``tracker`` until ``until`` (default: the first decision) or ``timeout`` s.

    ``start``: the cursor (default: the lines after this call); ``on_tick()``
    (called each round, up to every ``poll_s`` s: a side channel; an outcome it returns is
    a decision), ``on_line(line)`` (each console line, before the tracker), ``on_outcome(outcome,
    line)`` (the tracker's decision; False sets it aside: the hook re-arms the tracker),
    ``rearm`` (re-arm the tracker after each decision, to follow update after update),
    ``poll_s``, ``clock`` (the tracker's clock, default ``time.time``).
    """
    return Follow(
        console,
        tracker,
        until,
        timeout,
        start=start,
        on_tick=on_tick,
        on_line=on_line,
        on_outcome=on_outcome,
        rearm=rearm,
        poll_s=poll_s,
        clock=clock,
    )


def follow_subscription(
    console: ConsoleProtocol,
    tracker: OutcomeTracker,
    timeout: float,
    *,
    suback: threading.Event | None = None,
    start: int = 0,
) -> Follow:
    """Feed the boot lines to ``tracker`` until the board is connected and subscribed.

    The device prints ``subscription … registered`` when it queues the request, before its
    TCP connection is up: the ``tcp_connected`` after it ends the wait on the console. An
    in-process virtual board also reports the broker's SUBACK (``suback``), waited for in
    the time left. Raises :class:`BoardError` when either does not come within ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    follow = Follow(console, tracker, "subscribed", timeout, start=start).run()
    if follow.ending is Ending.UNTIL:
        follow = Follow(
            console, tracker, "tcp_connected", max(0.0, deadline - time.monotonic()), start=follow.cursor
        ).run()
    if follow.ending is not Ending.UNTIL:
        last = follow.last.line if follow.last is not None else "(none)"
        why = "the console closed" if follow.ending is Ending.CLOSED else f"not within {timeout:g}s"
        raise BoardError(f"the board did not connect and subscribe ({why}); last line: {last!r}")
    if suback is not None and not suback.wait(max(0.0, deadline - time.monotonic())):
        raise BoardError(f"the broker did not acknowledge the board's subscription within {timeout:g}s")
    return follow
