"""The console buffer keeps a bounded history; cursors stay absolute across trims."""

from __future__ import annotations

from otalib.board.protocol import ConsoleBuffer, ConsoleLine


def _line(n: int) -> ConsoleLine:
    return ConsoleLine(t=float(n), line=f"line {n}")


def test_history_is_bounded_and_cursors_stay_absolute() -> None:
    buffer = ConsoleBuffer(maxlen=8)
    for n in range(100):
        buffer.push(_line(n))
    kept = buffer.history()
    assert 8 <= len(kept) <= 10  # trimmed in batches, never past a quarter over the bound
    assert kept[-1].line == "line 99" and buffer.end == 100
    # a cursor into what was dropped moves on to the oldest line kept
    line, cursor = buffer.line_at(0, timeout=0)
    assert line is kept[0] and cursor == 100 - len(kept) + 1
    assert buffer.history(95) == kept[-5:]
    assert buffer.line_at(buffer.end, timeout=0) == (None, 100)
