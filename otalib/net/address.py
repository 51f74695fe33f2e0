"""``HOST:PORT`` addresses: the one parser for every command and class that takes one."""

from __future__ import annotations

import re

from otalib.errors import UsageError

_PORT = re.compile(r"[0-9]{1,5}")


def parse_hostport(
    text: str, default_host: str | None = "127.0.0.1", *, port_zero: bool = True, what: str = "address"
) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT`` alone when there is a ``default_host``) as a (host, port) pair.

    ``[::1]:1883`` gives ``("::1", 1883)``. ``port_zero`` allows port 0 (listen on any free
    port); ``what`` names the value in the error (e.g. ``"--link"``).
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or (default_host or "")
    if not host or not _PORT.fullmatch(port):
        raise UsageError(f"bad {what} {text!r}: expected HOST:PORT")
    number = int(port)
    low = 0 if port_zero else 1
    if not low <= number <= 65535:
        raise UsageError(f"bad port in {what} {text!r}: {low}..65535")
    return host, number
