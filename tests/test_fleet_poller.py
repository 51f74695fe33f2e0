"""The fleet loop's readiness: a paused socket does not wake the loop, a resumed one does (epoll and selectors)."""

from __future__ import annotations

import selectors
import socket

import pytest

from otalib.fleet import loop

POLLERS = [loop._Poller] + ([loop._EpollPoller] if hasattr(loop.select, "epoll") else [])


@pytest.mark.parametrize("poller_class", POLLERS)
def test_a_paused_socket_stays_quiet_and_is_read_again_once_resumed(poller_class):
    poller = poller_class()
    a, b = socket.socketpair()
    try:
        assert poller.set(a, selectors.EVENT_READ, "a", False)
        b.send(b"x")
        assert poller.wait(1.0) == [("a", selectors.EVENT_READ)]
        registered = poller.set(a, 0, "a", True)  # paused: the data stays unread
        assert poller.wait(0.05) == []
        assert poller.set(a, selectors.EVENT_READ, "a", registered)
        assert poller.wait(1.0) == [("a", selectors.EVENT_READ)]
        poller.set(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "a", True)
        assert poller.wait(1.0) == [("a", selectors.EVENT_READ | selectors.EVENT_WRITE)]
        poller.drop(a)
        assert poller.wait(0.05) == [] and len(poller) == 0
    finally:
        a.close()
        b.close()
        poller.close()


@pytest.mark.parametrize("poller_class", POLLERS)
def test_a_closed_sockets_number_taken_by_a_new_socket_is_watched(poller_class):
    poller = poller_class()
    a, b = socket.socketpair()
    poller.set(a, selectors.EVENT_READ, "old", False)
    poller.drop(a)
    a.close()
    b.close()
    c, d = socket.socketpair()  # most likely the numbers just freed
    try:
        assert poller.set(c, selectors.EVENT_READ, "new", False)
        d.send(b"x")
        assert poller.wait(1.0) == [("new", selectors.EVENT_READ)]
    finally:
        c.close()
        d.close()
        poller.close()
