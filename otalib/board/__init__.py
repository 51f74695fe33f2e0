"""Boards behind one protocol: console lines and events, expect, reset, version.

:mod:`.protocol` (the protocol and the shared console buffer), :mod:`.console`
(patterns, parser, outcome inference), :mod:`.serial_board` (a real board on a serial
line), :mod:`.virtual` (the virtual board: the :mod:`.sim` device model behind MQTT),
:mod:`.sim` (the pure device model: flash chip, rBoot + OTA application, console renderer).
"""

from __future__ import annotations

from otalib.board.console import DEFAULT_PATTERNS, ConsoleParser, OutcomeTracker, Pattern
from otalib.board.protocol import Board, ConsoleBuffer, ConsoleLine

__all__ = ["DEFAULT_PATTERNS", "Board", "ConsoleBuffer", "ConsoleLine", "ConsoleParser", "OutcomeTracker", "Pattern"]
