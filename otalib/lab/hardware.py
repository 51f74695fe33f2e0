"""Notebook cells that need a real board: each skips with one clear line when no port is given."""

from __future__ import annotations

#: What a skipped cell tells the reader to do.
HOW_TO_CONNECT = 'set PORT in the parameters cell (e.g. "/dev/ttyUSB0" or "rfc2217://lab-host:4000")'


def board_port(port: str | None, what: str) -> bool:
    """True when ``port`` names a board; otherwise print that ``what`` is skipped, and why, and return False."""
    if port and str(port).strip():
        return True
    print(f"skipped: {what} needs a board on a serial port: {HOW_TO_CONNECT}")
    return False
