"""The managed Mosquitto's log as evidence: a board's connections, subscriptions and deliveries.

A :class:`BrokerLogWatch` tails ``mosquitto.log`` in a thread and turns the lines that name
clients into :class:`BrokerEvent` s, stamped with ``time.time()`` when read (the log's own
timestamps are whole seconds). Waiters (:meth:`BrokerLogWatch.wait_for`) wake on each new event.
Mosquitto 2 prints, with ``log_type subscribe`` and ``log_type debug`` (the generated
configuration has ``log_type all``)::

    New client connected from 127.0.0.1:50411 as sming (p2, c1, k60).
    sming 0 a/test/u/4.3                                   <- subscribe (client, QoS, topic)
    Sending PUBLISH to sming (d0, q0, r1, m0, 'a/test/u/4.3', ... (5000 bytes))   <- r1: the retained copy
    Client sming closed its connection.

The embedded broker keeps no such log: there a trial has only the board's console.
"""

from __future__ import annotations

import enum
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class BrokerEventKind(enum.Enum):
    """What the broker's log says about a client."""

    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    SENT = "sent"  # the broker started sending it a PUBLISH
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class BrokerEvent:
    """One client event read from the broker's log (``t``: ``time.time()`` when read)."""

    t: float
    kind: BrokerEventKind
    client: str
    topic: str = ""
    size: int | None = None  # payload bytes of a SENT publish
    retained: bool = False  # a SENT publish is the retained copy (sent at the subscription)


_STAMP = re.compile(r"^\d+: ")
_PATTERNS: tuple[tuple[BrokerEventKind, re.Pattern[str]], ...] = (
    (BrokerEventKind.CONNECTED, re.compile(r"^New client connected from \S+ as (?P<client>\S+) \(")),
    (BrokerEventKind.SUBSCRIBED, re.compile(r"^(?P<client>\S+) [012] (?P<topic>\S+)$")),
    (
        BrokerEventKind.SENT,
        re.compile(
            r"^Sending PUBLISH to (?P<client>\S+) \(d\d, q\d, r(?P<retain>\d), m\d+, '(?P<topic>[^']*)',"
            r" \.\.\. \((?P<size>\d+) bytes\)\)$"
        ),
    ),
    (
        BrokerEventKind.DISCONNECTED,
        re.compile(
            r"^(?:Client (?P<client>\S+) (?:closed its connection|disconnected|has exceeded timeout"
            r"|already connected, closing old connection)"
            r"|Socket error on client (?P<client2>\S+), disconnecting)"
        ),
    ),
)


def parse_log_line(text: str, t: float) -> BrokerEvent | None:
    """The client event of one Mosquitto log line (timestamp prefix optional), or None."""
    text = _STAMP.sub("", text.rstrip("\r\n"), count=1)
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if m is None:
            continue
        client = m.group("client") or (m.groupdict().get("client2") or "")
        if kind is BrokerEventKind.SUBSCRIBED and text.startswith(("Sending ", "Received ")):
            return None
        size = m.groupdict().get("size")
        return BrokerEvent(
            t,
            kind,
            client,
            topic=m.groupdict().get("topic") or "",
            size=int(size) if size is not None else None,
            retained=m.groupdict().get("retain") == "1",
        )
    return None


class BrokerLogWatch:
    """Tail a Mosquitto log from its start; keep the last ``maxlen`` events and each client's state.

    ``subscribed(client, topic)`` says whether the broker holds that subscription now (from the
    whole log, so a board subscribed before the watch began counts). Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str], *, maxlen: int = 10_000, poll_s: float = 0.02) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._events: deque[BrokerEvent] = deque(maxlen=maxlen)
        self._seq = 0  # events seen since the start (the deque forgets the oldest)
        self._subscriptions: dict[str, set[str]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-log-watch", daemon=True)

    def __enter__(self) -> BrokerLogWatch:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> BrokerLogWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    # -- reader thread --
    def _run(self) -> None:
        offset = 0
        partial = b""
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read(1 << 20)
            except OSError:
                data = b""
            if not data:
                self._stop.wait(self.poll_s)
                continue
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")
            now = time.time()
            events = [parse_log_line(line.decode(errors="replace"), now) for line in lines]
            self._add([e for e in events if e is not None])

    def _add(self, events: list[BrokerEvent]) -> None:
        if not events:
            return
        with self._cond:
            for event in events:
                subs = self._subscriptions.setdefault(event.client, set())
                if event.kind is BrokerEventKind.SUBSCRIBED:
                    subs.add(event.topic)
                elif event.kind in (BrokerEventKind.CONNECTED, BrokerEventKind.DISCONNECTED):
                    subs.clear()  # clean sessions: a new connection subscribes again
                self._events.append(event)
                self._seq += 1
            self._cond.notify_all()

    # -- readers --
    @property
    def mark(self) -> int:
        """A position: events after it are the ones :meth:`wait_for` with ``after=mark`` sees."""
        with self._cond:
            return self._seq

    def subscribed(self, client: str, topic: str) -> bool:
        """Does the broker hold ``client``'s subscription to ``topic`` (an exact filter) now?"""
        with self._cond:
            return topic in self._subscriptions.get(client, ())

    def events(self, after: int = 0) -> list[BrokerEvent]:
        """The events kept after position ``after``."""
        with self._cond:
            return self._since(after)

    def _since(self, after: int) -> list[BrokerEvent]:
        skip = max(0, after - (self._seq - len(self._events)))
        return list(self._events)[skip:]

    def wait_for(
        self, predicate: Callable[[BrokerEvent], bool], timeout: float, *, after: int = 0
    ) -> BrokerEvent | None:
        """The first event after position ``after`` satisfying ``predicate`` (waiting up to ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._since(after):
                    if predicate(event):
                        return event
                after = self._seq
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(remaining)
