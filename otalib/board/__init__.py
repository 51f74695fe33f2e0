"""Boards behind one protocol: console lines and events, expect, reset, version.

:mod:`.protocol` (the protocol and the shared console buffer), :mod:`.console`
(patterns, parser, outcome inference), :mod:`.sming_console` (the device's console
renderer), :mod:`.serial_board` (a real board on a serial line), :mod:`.esp_flash`
(esptool: chip info, flash, read back).
"""

from __future__ import annotations

from otalib.board.console import DEFAULT_PATTERNS, ConsoleParser, OutcomeTracker, Pattern
from otalib.board.protocol import Board, ConsoleBuffer, ConsoleLine

__all__ = ["DEFAULT_PATTERNS", "Board", "ConsoleBuffer", "ConsoleLine", "ConsoleParser", "OutcomeTracker", "Pattern"]
