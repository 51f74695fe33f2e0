"""Untimed fleet boards take a read's TCP segments in one step, and print, write and decide as they do one by one."""

from __future__ import annotations

import pytest
from board_helpers import MICROSECONDS, spy_on_bulk_steps

from otalib.fleet import FleetSession, FleetSpec, board

GROUPS = {  # update mode -> groups: builds that take it, and builds that reject it (at the header or the end)
    "standard": [{"name": "ok", "count": 2}],
    "md5": [{"name": "ok", "count": 2}, {"name": "wantsig", "count": 1, "mode": "signed"}],
    "signed": [{"name": "ok", "count": 2}, {"name": "otherkey", "count": 1, "key": "other"}],
    "encrypted": [{"name": "ok", "count": 2}, {"name": "otherkey", "count": 1, "key": "other"}],
}


def run(session: FleetSession) -> tuple[dict[str, str], dict[str, tuple]]:
    result = session.run()
    rows = result.boards.set_index("board")
    consoles = {name: MICROSECONDS.sub("", text) for name, text in result.consoles.items()}
    return consoles, {n: (rows.at[n, "outcome"], rows.at[n, "error"], rows.at[n, "bytes_received"]) for n in rows.index}


@pytest.mark.parametrize("mode", list(GROUPS))
def test_bulk_segments_give_the_consoles_and_outcomes_of_one_segment_at_a_time(broker, monkeypatch, mode):
    steps = spy_on_bulk_steps(monkeypatch)
    spec = FleetSpec.from_dict(
        {"name": f"bulk-{mode}", "timeout_s": 60, "update": {"size": "200KiB", "mode": mode}, "groups": GROUPS[mode]}
    )
    names = tuple(f"{g['name']}-{i:04d}" for g in GROUPS[mode] for i in range(g["count"]))
    bulk = FleetSession(spec, broker=broker.url, keep_consoles=names, processes=1)
    bulk_consoles, bulk_rows = run(bulk)
    assert max(steps) > 4  # reads of many segments were taken in one call
    monkeypatch.setattr(board, "BULK_SEGMENTS", False)
    steps.clear()
    exact = FleetSession(spec, broker=broker.url, keep_consoles=names, processes=1)
    exact.key, exact.packages = bulk.key, bulk.packages  # the same package, byte for byte
    exact_consoles, exact_rows = run(exact)
    assert not steps
    assert bulk_rows == exact_rows
    assert any(outcome == "updated" for outcome, _e, _b in bulk_rows.values())
    for name, text in exact_consoles.items():
        assert text.count("received: 1460 bytes") > 100  # one line per segment
        assert bulk_consoles[name] == text, name
