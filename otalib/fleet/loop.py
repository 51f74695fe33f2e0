"""One selectors loop for many paho clients: no thread per board.

paho's external-loop API: a client reports its socket through ``on_socket_open`` /
``on_socket_close`` and whether it has something to send through
``on_socket_register_write`` / ``on_socket_unregister_write``; the loop calls
``loop_read`` / ``loop_write`` when the socket is ready and ``loop_misc`` (keepalive)
once a second. Timers (restarts, reconnects, fault times) run on the same thread.
A board may pause its reads (a slow link: the TCP window closes, as on a real link); on Linux a
paused socket stays in the loop's epoll set with no events, so a pause or a resume is one system call
(a timed board pauses several times a second).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import select
import selectors
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

#: Seconds between two ``loop_misc`` rounds (keepalive pings).
MISC_INTERVAL = 1.0
#: Seconds between two looks at a run's end condition.
UNTIL_INTERVAL = 0.02


class Timer:
    """A call due at ``when`` (monotonic); :meth:`cancel` drops it. Timers order by ``(when, seq)``."""

    __slots__ = ("cancelled", "fn", "seq", "when")

    def __init__(self, when: float, seq: int, fn: Callable[[], Any], cancelled: bool = False) -> None:
        self.when = when
        self.seq = seq
        self.fn = fn
        self.cancelled = cancelled

    def __lt__(self, other: Timer) -> bool:  # the heap's order, without a tuple per comparison
        return self.when < other.when or (self.when == other.when and self.seq < other.seq)

    def __repr__(self) -> str:
        return f"Timer(when={self.when!r}, seq={self.seq!r}, cancelled={self.cancelled!r})"

    def cancel(self) -> None:
        self.cancelled = True


class _Poller:
    """Sockets and the events each waits for, with what to hand back when one is ready (``selectors``:
    a socket waiting for nothing is taken out)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def set(self, sock: Any, events: int, data: Any, registered: bool) -> bool:
        """Wait for ``events`` (``selectors.EVENT_*``) on ``sock``; whether it is registered now."""
        if not events:
            if registered:
                self._selector.unregister(sock)
            return False
        if registered:
            self._selector.modify(sock, events, data)
        else:
            self._selector.register(sock, events, data)
        return True

    def drop(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)

    def __len__(self) -> int:
        return len(self._selector.get_map())

    def wait(self, timeout: float) -> list[tuple[Any, int]]:
        return [(key.data, mask) for key, mask in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


class _EpollPoller(_Poller):
    """:class:`_Poller` on Linux's epoll: a socket waiting for nothing stays registered with no events."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._data: dict[int, Any] = {}  # fd -> data
        self._fds: dict[int, int] = {}  # id(socket) -> fd (a closed socket has no number any more)

    def set(self, sock: Any, events: int, data: Any, registered: bool) -> bool:
        mask = (select.EPOLLIN if events & selectors.EVENT_READ else 0) | (
            select.EPOLLOUT if events & selectors.EVENT_WRITE else 0
        )
        fd = self._fds.setdefault(id(sock), sock.fileno())
        if registered:
            self._epoll.modify(fd, mask)
        else:
            try:
                self._epoll.register(fd, mask)
            except FileExistsError:  # a closed socket's number, taken again before we heard of the close
                self._epoll.modify(fd, mask)
        self._data[fd] = data
        return True

    def drop(self, sock: Any) -> None:
        fd = self._fds.pop(id(sock), None)
        if fd is not None:
            self._data.pop(fd, None)
            with contextlib.suppress(OSError, ValueError):  # closed: the kernel took it out already
                self._epoll.unregister(fd)

    def __len__(self) -> int:
        return len(self._data)

    def wait(self, timeout: float) -> list[tuple[Any, int]]:
        data, out = self._data, []
        for fd, event in self._epoll.poll(timeout):
            watch = data.get(fd)
            if watch is not None:  # as selectors maps them: errors and hang-ups wake both sides
                mask = (selectors.EVENT_WRITE if event & ~select.EPOLLIN else 0) | (
                    selectors.EVENT_READ if event & ~select.EPOLLOUT else 0
                )
                out.append((watch, mask))
        return out

    def close(self) -> None:
        self._epoll.close()


class _Watch:
    """The loop's view of one client: its socket and what to wait for."""

    __slots__ = ("client", "paused", "registered", "sock", "waiting", "want_write")

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.sock: Any = None
        self.want_write = False
        self.paused = False
        self.registered = False  # the poller has the socket
        self.waiting = 0  # the events the poller waits for on it

    def events(self) -> int:
        return (0 if self.paused else selectors.EVENT_READ) | (selectors.EVENT_WRITE if self.want_write else 0)


class FleetLoop:
    """Drives many paho clients and timers on the calling thread (:meth:`run`)."""

    def __init__(self) -> None:
        self._poller = _EpollPoller() if hasattr(select, "epoll") else _Poller()
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._watches: dict[int, _Watch] = {}  # id(client) -> watch
        self._next_misc = time.monotonic() + MISC_INTERVAL
        self.stopped = False

    # -- timers --
    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), next(self._seq), fn)
        heapq.heappush(self._timers, timer)
        return timer

    # -- clients --
    def attach(self, client: mqtt.Client) -> None:
        """Let the loop drive ``client`` (set before its ``connect``)."""
        watch = _Watch(client)
        self._watches[id(client)] = watch

        def on_open(_c: Any, _u: Any, sock: Any) -> None:
            self._forget(watch)
            watch.sock, watch.want_write = sock, False
            self._update(watch)

        def on_close(_c: Any, _u: Any, sock: Any) -> None:
            self._forget(watch)

        def on_write(_c: Any, _u: Any, _sock: Any) -> None:
            watch.want_write = True
            self._update(watch)

        def on_no_write(_c: Any, _u: Any, _sock: Any) -> None:
            watch.want_write = False
            self._update(watch)

        client.on_socket_open = on_open
        client.on_socket_close = on_close
        client.on_socket_register_write = on_write
        client.on_socket_unregister_write = on_no_write

    def detach(self, client: mqtt.Client) -> None:
        watch = self._watches.pop(id(client), None)
        if watch is not None:
            self._forget(watch)

    def _forget(self, watch: _Watch) -> None:
        """The socket is gone (or going): the selector drops it."""
        if watch.sock is not None and watch.registered:
            self._poller.drop(watch.sock)
        watch.sock, watch.registered, watch.waiting = None, False, 0

    def pause_reading(self, client: mqtt.Client, paused: bool) -> None:
        """Stop (or resume) reading ``client``'s socket."""
        watch = self._watches.get(id(client))
        if watch is not None and watch.paused != paused:
            watch.paused = paused
            self._update(watch)

    def _update(self, watch: _Watch) -> None:
        """Tell the selector what ``watch`` waits for now."""
        if watch.sock is None:
            return
        events = watch.events()
        if events == watch.waiting and watch.registered:
            return
        try:
            watch.registered = self._poller.set(watch.sock, events, watch, watch.registered)
            watch.waiting = events
        except (KeyError, ValueError, OSError):  # the socket closed under us: paho notices on its next call
            watch.registered, watch.waiting = False, 0

    @property
    def clients(self) -> int:
        return len(self._watches)

    # -- running --
    def run(self, until: Callable[[], bool], deadline: float | None = None) -> bool:
        """Serve sockets and timers until ``until()`` is true (True) or ``deadline`` passes (False).

        ``until`` is asked at most every :data:`UNTIL_INTERVAL` seconds (it may look at every board)."""
        next_until = 0.0
        while not self.stopped:
            now = time.monotonic()
            if now >= next_until:
                next_until = now + UNTIL_INTERVAL
                if until():
                    return True
            if deadline is not None and now >= deadline:
                return False
            self._run_timers(now)
            if now >= self._next_misc:
                self._next_misc = now + MISC_INTERVAL
                for watch in list(self._watches.values()):
                    if watch.sock is not None:
                        watch.client.loop_misc()
            wake = min(self._next_misc, next_until, math.inf if deadline is None else deadline)
            if self._timers:
                wake = min(wake, self._timers[0].when)
            wait = wake - time.monotonic()
            wait = max(0.0, min(wait, 0.1))
            if not len(self._poller):
                time.sleep(wait)
                continue
            for watch, mask in self._poller.wait(wait):
                if mask & selectors.EVENT_WRITE and watch.sock is not None:
                    watch.client.loop_write()
                if mask & selectors.EVENT_READ and watch.sock is not None and not watch.paused:
                    watch.client.loop_read()
        return False

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0].when <= now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.fn()

    def close(self) -> None:
        for watch in list(self._watches.values()):
            self.detach(watch.client)
        self._poller.close()
