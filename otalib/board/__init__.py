"""Boards behind small capability protocols: console (lines, cursor, expect), reset, power.

:mod:`.protocol` (the protocols and the shared console buffer), :mod:`.console`
(patterns, parser, outcome inference), :mod:`.follow` (the one loop that follows an update
on any console), :mod:`.serial_board` (a real board on a serial line), :mod:`.virtual`
(the virtual board: the :mod:`.sim` device model behind MQTT), :mod:`.sim` (the pure
device model: flash chip, rBoot + OTA application, console renderer).
"""

from __future__ import annotations

from otalib.board.console import DEFAULT_PATTERNS, ConsoleParser, OutcomeTracker, Pattern
from otalib.board.protocol import Board, ConsoleBuffer, ConsoleLine, ConsoleProtocol, PowerProtocol, ResetProtocol

__all__ = [
    "DEFAULT_PATTERNS",
    "Board",
    "ConsoleBuffer",
    "ConsoleLine",
    "ConsoleParser",
    "ConsoleProtocol",
    "OutcomeTracker",
    "Pattern",
    "PowerProtocol",
    "ResetProtocol",
]
