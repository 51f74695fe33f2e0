"""The demo's watched update (``make demo``, step 1): a LabSession takes a signed update over a Wi-Fi-like
link, its console shown live; into a pipe (no terminal) the output is plain text."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from process_helpers import run_otalab

from otalib.broker import find_mosquitto
from otalib.demo import watched_update

#: Control characters (and ANSI escapes) that plain output must not contain.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
@pytest.mark.timeout(120)
def test_watched_update_applies_and_shows_the_console_live(tmp_path: Path) -> None:
    said: list[str] = []
    stream = io.StringIO()
    summary = watched_update(tmp_path, said.append, backend="mosquitto", link="dsl", size=64 * 1024, stream=stream)
    assert summary["outcome"] == "updated" and summary["deploy"]["bytes"] > 64 * 1024
    rows = stream.getvalue().splitlines()
    events = [row.rsplit("[", 1)[1].rstrip("]") for row in rows if row.startswith("  console") and row.endswith("]")]
    assert events.index("update_slot") < events.index("switch_ok") < events.index("restart") and events[-1] == "running"
    assert rows[-1].startswith("  progress 100% received (") and rows[-1].endswith("; outcome: updated")
    assert said[-1] == "outcome: updated (board now runs slot 1, version 4.3)"
    assert any("the board takes it over the dsl link" in text for text in said)
    assert {p.name for p in tmp_path.iterdir()} >= {"ota.key", "update.sdp", "flash.bin", "broker"}


@pytest.mark.timeout(180)
def test_otalab_demo_into_a_pipe_is_plain_text_with_every_console_line_and_the_progress(tmp_path: Path) -> None:
    result = run_otalab("demo", "--no-campaign", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert not CONTROL.search(out), repr(CONTROL.search(out))
    rows = out.splitlines()
    assert any("the board takes it over the wifi link" in row for row in rows)  # the default link
    console = [row for row in rows if row.startswith("  console  ")]
    received = [row for row in console if row.endswith("[tcp_received]")]
    assert len(received) > 256 * 1024 // 1460  # every segment's line, as the device printed it
    progress = [row.split("%")[0].split()[-1] for row in rows if row.startswith("  progress ")]
    assert progress[:10] == [str(p) for p in range(10, 101, 10)] and progress[-1] == "100"
    slot = next(i for i, row in enumerate(rows) if row.endswith("[update_slot]"))
    half = rows.index(next(row for row in rows if row.startswith("  progress 50%")))
    switched = next(i for i, row in enumerate(rows) if row.endswith("[switch_ok]"))
    assert slot < half < switched  # the progress comes between the lines, as the update runs
    assert "outcome: updated (board now runs slot 1, version 4.3)" in rows


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
@pytest.mark.timeout(400)
def test_the_demo_campaign_runs_on_device_time_and_its_report_shows_the_outcomes(tmp_path: Path) -> None:
    """``make demo``'s campaign: ESP8266 models (not a PC-fast board), so its charts show device phases, the
    outcome composition (a corrupted image bricks a standard board, a signed one rejects it) and drops."""
    from otalib.demo import run_demo
    from otalib.lab.store import load_run

    said: list[str] = []
    written = run_demo(tmp_path, said.append, stream=io.StringIO())
    df, _meta = load_run(tmp_path / "run")
    assert set(df["timing"]) == {"esp8266"} and df["size"].nunique() > 1
    updated = df[df["outcome"] == "updated"]
    assert len(updated) and (updated["erase_s"] > 0).all() and (updated["write_s"] > 0).all()
    corrupt = df[df["fault"] == "corrupt"].groupby("mode")["outcome"].agg(set)
    assert corrupt["standard"] == {"bricked"} and corrupt["signed"] == {"rejected:VerificationFailed"}
    names = {p.name for p in written}
    assert {"outcomes.png", "device_phases.png", "failure_vs_drops.png", "completion_check.png"} <= names
    assert any(text.startswith("outcomes: ") and "bricked" in text for text in said)
