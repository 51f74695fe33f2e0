"""The demo's watched update (``make demo``, step 1): a LabSession takes a signed update, shown as it comes."""

from __future__ import annotations

from pathlib import Path

import pytest

from otalib.broker import find_mosquitto
from otalib.demo import watched_update


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_watched_update_applies_and_shows_the_console(tmp_path: Path) -> None:
    said: list[str] = []
    summary = watched_update(tmp_path, said.append, backend="mosquitto")
    assert summary["outcome"] == "updated" and summary["deploy"]["bytes"] > 256 * 1024
    console = [text for text in said if text.startswith("  console")]
    events = [text.rsplit("[", 1)[1].rstrip("]") for text in console]
    assert events.index("switch_ok") < events.index("restart") and events[-1] == "running"
    assert said[-1] == "outcome: updated (board now runs slot 1, version 4.3)"
    assert {p.name for p in tmp_path.iterdir()} >= {"ota.key", "update.sdp", "flash.bin", "broker"}
