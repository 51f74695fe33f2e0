"""The example run kept in git (data/runs/example) is the run of its spec and answers what it is for.

Notebooks 3 and 4 read it with ``RUN_CAMPAIGN = False``; its report is kept beside it. These tests
read the stored data only (nothing runs): a spec edited without re-making the run, a partial run or a
grid too thin for its intervals fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from otalib.lab.analytic import drop_rate
from otalib.lab.campaign import CampaignSpec
from otalib.lab.report import report_figures
from otalib.lab.schema import DEVICE_PHASES
from otalib.lab.stats import wilson_interval
from otalib.lab.store import load_run, read_fault_events

ROOT = Path(__file__).parent.parent
SPEC = ROOT / "data" / "campaigns" / "example.yaml"
RUN = ROOT / "data" / "runs" / "example"
#: The widest 95% Wilson half-width an outcome fraction of one condition may have (issue 11).
MAX_HALF_WIDTH = 0.15


@pytest.fixture(scope="module")
def run():
    spec = CampaignSpec.load(SPEC)
    df, meta = load_run(RUN)
    return spec, df, meta


def test_the_run_is_its_spec_complete(run):
    spec, df, meta = run
    assert meta["campaign_sha256"] == spec.sha256(), "data/campaigns/example.yaml changed: re-make the run"
    assert meta["status"] == "complete"
    assert sorted(df["trial_id"]) == sorted(c.trial_id for c in spec.trials())


def test_device_time_and_faults_at_rates(run):
    _spec, df, _meta = run
    assert set(df["timing"]) == {"esp8266"}
    updated = df[df["outcome"] == "updated"]
    assert np.isfinite(updated[list(DEVICE_PHASES)].to_numpy(dtype=float)).all()
    rates = {r for r in df["fault"].map(drop_rate) if r is not None}
    assert len(rates - {0.0}) >= 2, "failure against drop rate needs at least two rates besides none"
    events = read_fault_events(RUN)
    dropped = df.loc[df["fault"].str.startswith("drops:"), "trial_id"]
    assert (events[events["kind"] == "drop"]["trial_id"].isin(set(dropped))).all()
    assert events["trial_id"].isin(set(dropped)).sum() > 0


def test_every_outcome_fraction_is_within_its_interval_goal(run):
    _spec, df, _meta = run
    widest = 0.0
    for _key, group in df.groupby(["size", "mode", "fault"]):
        for count in group["outcome"].value_counts():
            low, high = wilson_interval(int(count), len(group))
            widest = max(widest, (high - low) / 2)
    assert widest <= MAX_HALF_WIDTH


def test_the_kept_report_has_every_chart_of_the_run(run):
    _spec, df, _meta = run
    report = RUN / "report"
    kept = {p.name for p in report.glob("*.png")}
    drawn = set(report_figures(df, read_fault_events(RUN)))
    assert kept == drawn, "re-make the report: otalab report data/runs/example"
    assert f"trials: {len(df)} of {len(df)} (complete)" in (report / "summary.md").read_text()


def test_the_kept_summary_tells_the_sizes_apart(run):
    """The run's lesson: under drops only the bigger image misses its deadline. Pooled over sizes, the
    summary would hide it (each row mixing 32 and 128 KiB)."""
    _spec, df, _meta = run
    summary = pd.read_csv(RUN / "report" / "summary.csv")
    assert summary.groupby(["size", "mode", "link", "fault"]).size().eq(1).all()
    drops = summary[summary["fault"].str.startswith("drops:")]
    assert drops.loc[drops["size"] == drops["size"].min(), "failure_rate"].eq(0).all()
    assert drops.loc[drops["size"] == drops["size"].max(), "failure_rate"].gt(0).any()
    assert len(summary) == df.groupby(["size", "mode", "link", "fault"]).ngroups
