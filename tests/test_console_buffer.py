"""The console buffer keeps a bounded history; cursors stay absolute across trims."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

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


def test_console_line_is_a_frozen_dataclass_with_every_field_set() -> None:
    line = ConsoleLine(1.5, "12 ROM update complete", "rom_update_complete", {"us": 12})
    assert {f.name: getattr(line, f.name) for f in dataclasses.fields(ConsoleLine)} == {
        "t": 1.5,
        "line": "12 ROM update complete",
        "event": "rom_update_complete",
        "fields": {"us": 12},
    }
    assert line == ConsoleLine(t=1.5, line="12 ROM update complete", event="rom_update_complete", fields={"us": 12})
    bare = ConsoleLine(0.0, "text")
    assert (bare.event, bare.fields) == (None, {})
    assert bare.fields is not ConsoleLine(0.0, "text").fields  # a dict of its own, as default_factory gives
    assert dataclasses.replace(bare, event="x") == ConsoleLine(0.0, "text", "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        bare.t = 2.0  # type: ignore[misc]


def test_push_many_keeps_order_and_wakes_a_waiter() -> None:
    buffer = ConsoleBuffer(maxlen=8)
    got: list[ConsoleLine | None] = []
    waiting = threading.Thread(target=lambda: got.append(buffer.line_at(0, timeout=None)[0]), daemon=True)
    waiting.start()
    deadline = time.monotonic() + 30
    while not buffer._cond._waiters:  # the reader is blocked in its wait (nothing else wakes it but a push)
        assert time.monotonic() < deadline, "the reader never waited"
        time.sleep(0.001)
    buffer.push_many([_line(n) for n in range(20)])
    waiting.join(30)
    buffer.close()  # a reader that was never woken ends here, with nothing
    assert got and got[0] is not None and got[0].line.startswith("line ")
    assert [cl.line for cl in buffer.history()][-3:] == ["line 17", "line 18", "line 19"]
    assert buffer.end == 20 and 8 <= len(buffer.history()) <= 10
    buffer.push_many([])
    assert buffer.end == 20
