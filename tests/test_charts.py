"""Statistics, charts (DataFrame -> Axes) and ``otalab report`` on synthetic trial data."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from lab_helpers import fake_trial, small_spec, synthetic_frame
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from otalib.cli import cli
from otalib.errors import LabError
from otalib.lab import store
from otalib.lab.campaign import run_campaign
from otalib.lab.charts import (
    plot_failure_rates,
    plot_phase_breakdown,
    plot_time_cdf,
    plot_time_vs_size,
    plot_timeline,
)
from otalib.lab.report import summarize, write_report
from otalib.lab.schema import TIMELINE_PHASES, TrialConfig, validate_frame
from otalib.lab.stats import fit_throughput, phase_durations, wilson_interval


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def new_ax():
    return Figure().subplots()


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


# --- statistics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
        (3, 100, 0.0103, 0.0845),
    ],
)
def test_wilson_interval_known_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_edges():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    lo90, hi90 = wilson_interval(5, 10, z=1.644854)
    lo95, hi95 = wilson_interval(5, 10)
    assert lo95 < lo90 < 0.5 < hi90 < hi95
    for k, n in ((11, 10), (-1, 10), (0, -1)):
        with pytest.raises(LabError):
            wilson_interval(k, n)


def test_fit_throughput():
    sizes = np.array([1000, 2000, 4000, 8000], dtype=float)
    slope, intercept, throughput = fit_throughput(sizes, 0.5 + sizes / 250.0)
    assert slope == pytest.approx(1 / 250) and intercept == pytest.approx(0.5) and throughput == pytest.approx(250)
    # non-finite points are dropped
    assert fit_throughput([1000, 2000, np.nan, 3000], [1, 2, 5, np.nan])[2] == pytest.approx(1000)
    assert all(math.isnan(v) for v in fit_throughput([1000, 1000], [1.0, 2.0]))  # one size: no line
    assert math.isnan(fit_throughput([1000, 2000], [2.0, 1.0])[2])  # faster when bigger: no throughput
    with pytest.raises(LabError):
        fit_throughput([1, 2], [1.0])


# --- charts -----------------------------------------------------------------------------------


def updated_row(**kw) -> pd.DataFrame:
    return validate_frame(pd.DataFrame([fake_trial(TrialConfig(rate_Bps=100_000, **kw)).to_row()]))


def test_timeline_of_an_update_has_one_bar_per_phase():
    df = updated_row(size=50_000)
    row = df.iloc[0]
    ax = plot_timeline(df, ax=new_ax())
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "build",
        "publish",
        "transfer",
        "verify",
        "switch",
        "restart",
    ]
    transfer = ax.patches[2]
    assert transfer.get_x() == pytest.approx(row["t_first_byte"])
    assert transfer.get_width() == pytest.approx(row["t_last_byte"] - row["t_first_byte"])
    restart = ax.patches[5]
    assert restart.get_x() + restart.get_width() == pytest.approx(row["t_new_version"])
    assert [line.get_xdata()[0] for line in ax.lines] == [pytest.approx(row["t_end"])]
    assert "updated" in ax.get_title()
    # a Series or a dict row draws the same
    assert len(plot_timeline(row, ax=new_ax()).patches) == 6
    assert len(plot_timeline(row.to_dict(), ax=new_ax()).patches) == 6


def test_timeline_of_a_failed_trial_has_no_bars_for_unreached_phases():
    df = synthetic_frame()
    bricked = df[df["outcome"] == "bricked"].head(1)
    ax = plot_timeline(bricked, ax=new_ax())
    assert len(ax.patches) == 3  # build, publish, transfer
    assert "bricked" in ax.get_title()
    nothing = bricked.assign(**{c: np.nan for c in ["t_build", "t_publish_start", "t_first_byte", "t_end"]})
    ax = plot_timeline(nothing, ax=new_ax())
    assert len(ax.patches) == 0 and texts(ax) == ["no phase timestamps"]


def test_timeline_needs_one_trial():
    df = synthetic_frame()
    with pytest.raises(LabError, match="one trial, got 24 rows"):
        plot_timeline(df, ax=new_ax())
    wanted = df.loc[df["outcome"] == "updated", "trial_id"].iloc[-1]
    ax = plot_timeline(df, ax=new_ax(), trial_id=wanted)
    assert len(ax.patches) == 6 and "updated" in ax.get_title()
    with pytest.raises(LabError, match="no trial 'nope'"):
        plot_timeline(df, trial_id="nope")


def test_time_vs_size_one_series_per_mode_and_link_with_fit():
    df = synthetic_frame()
    ax = plot_time_vs_size(df, ax=new_ax())
    assert legend_labels(ax) == ["standard / wifi (fit 100 kB/s)", "signed / wifi (fit 100 kB/s)"]
    markers = [line for line in ax.lines if line.get_linestyle() == "None"]
    fits = [line for line in ax.lines if line.get_linestyle() != "None"]
    assert len(markers) == 2 and len(fits) == 2
    assert sum(len(line.get_xdata()) for line in markers) == (df["outcome"] == "updated").sum() == 12


def test_time_vs_size_edge_cases():
    df = synthetic_frame()
    only_failures = df[df["outcome"] != "updated"]
    ax = plot_time_vs_size(only_failures, ax=new_ax())
    assert len(ax.lines) == 0 and texts(ax) == ["no updated trials"]
    ax = plot_time_vs_size(updated_row(), ax=new_ax())  # one trial: a point, no line
    assert legend_labels(ax) == ["standard / unlimited (no fit)"]
    assert len(ax.lines) == 1
    with_nan = df.copy()
    with_nan.loc[with_nan.index[:3], "t_new_version"] = np.nan  # updated but never seen: dropped
    ax = plot_time_vs_size(with_nan, ax=new_ax())
    assert sum(len(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "None") == 12 - 2


def test_failure_rates_bars_with_wilson_error_bars():
    df = synthetic_frame()
    ax = plot_failure_rates(df, ax=new_ax())
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and sum(len(c.patches) for c in bars) == 4  # 2 faults × 2 modes
    assert all(c.errorbar is not None for c in bars)
    assert legend_labels(ax) == ["standard", "signed"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "corrupt"]
    heights = sorted(p.get_height() for c in bars for p in c.patches)
    assert heights == [0.0, 0.0, 1.0, 1.0]
    # the error bar of a 0/6 bar spans the Wilson interval (0, 0.390)
    segments = bars[0].errorbar.lines[2][0].get_segments()
    spans = sorted((round(s[0][1], 3), round(s[1][1], 3)) for s in segments)
    assert spans == [(0.0, 0.39), (0.61, 1.0)]
    assert "0/6" in texts(ax) and "6/6" in texts(ax)


def test_failure_rates_missing_combinations_and_empty():
    df = synthetic_frame(small_spec(repeats=2))
    df = df[~((df["fault"] == "corrupt") & (df["mode"] == "signed"))]
    ax = plot_failure_rates(df, ax=new_ax())
    assert sum(len(c.patches) for c in ax.containers if isinstance(c, BarContainer)) == 3
    ax = plot_failure_rates(df.iloc[:0], ax=new_ax())
    assert len(ax.patches) == 0 and texts(ax) == ["no trials"]


def test_time_cdf_one_step_line_per_mode():
    df = synthetic_frame()
    ax = plot_time_cdf(df, ax=new_ax())
    assert legend_labels(ax) == ["standard (n=6)", "signed (n=6)"]
    updated = df[df["outcome"] == "updated"]
    for line, mode in zip(ax.lines, ["standard", "signed"], strict=True):
        times = np.sort((updated["t_new_version"] - updated["t_publish_start"])[updated["mode"] == mode].to_numpy())
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert x == pytest.approx(np.concatenate([[times[0]], times]))  # publish -> new version, sorted
        assert y == pytest.approx(np.concatenate([[0.0], np.arange(1, 7) / 6]))
    ax = plot_time_cdf(df[df["outcome"] != "updated"], ax=new_ax())
    assert len(ax.lines) == 0 and texts(ax) == ["no updated trials"]
    ax = plot_time_cdf(updated_row(), ax=new_ax())
    assert legend_labels(ax) == ["standard (n=1)"]


def test_phase_durations_per_trial():
    df = synthetic_frame()
    durations = phase_durations(df)
    assert list(durations.columns) == [label for label, _, _ in TIMELINE_PHASES] + ["mode", "link", "size", "outcome"]
    row, got = df.iloc[0], durations.iloc[0]
    assert row["outcome"] == "updated"
    for label, start, end in TIMELINE_PHASES:
        begin = 0.0 if start is None else row[start]
        assert got[label] == pytest.approx(row[end] - begin), label
    failed = durations[df["outcome"] == "bricked"].iloc[0]
    assert failed["verify"] == failed["switch"] == failed["restart"] == 0.0  # phases never reached count as 0
    assert failed["transfer"] > 0


def test_phase_breakdown_stacks_the_mean_of_each_phase():
    df = synthetic_frame()
    ax = plot_phase_breakdown(df, ax=new_ax())
    labels = [label for label, _, _ in TIMELINE_PHASES]
    assert legend_labels(ax) == labels
    assert [t.get_text() for t in ax.get_yticklabels()] == ["signed / wifi", "standard / wifi"]
    done = phase_durations(df[df["outcome"] == "updated"])
    means = done.groupby("mode")[labels].mean()
    bars = ax.patches  # one bar per group for each phase, phase after phase
    assert len(bars) == 2 * len(labels)
    for index, label in enumerate(labels):
        for bar, mode in zip(bars[2 * index : 2 * index + 2], ["signed", "standard"], strict=True):
            assert bar.get_width() == pytest.approx(means.loc[mode, label]), (label, mode)
            previous = means.loc[mode, labels[:index]].sum()
            assert bar.get_x() == pytest.approx(previous)  # stacked on the phases before it
    ax = plot_phase_breakdown(df[df["outcome"] != "updated"], ax=new_ax())
    assert len(ax.patches) == 0 and texts(ax) == ["no updated trials"]


def test_charts_without_ax_make_their_own_figure():
    df = synthetic_frame()
    for chart in (plot_time_vs_size, plot_failure_rates, plot_time_cdf):
        before = len(plt.get_fignums())
        ax = chart(df)
        assert len(plt.get_fignums()) == before + 1 and ax.figure is plt.gcf()


# --- report -----------------------------------------------------------------------------------


def test_summarize_per_mode_link_fault():
    summary = summarize(synthetic_frame())
    assert len(summary) == 4 and list(summary.columns[:4]) == ["mode", "link", "fault", "n"]
    corrupt = summary[summary["fault"] == "corrupt"].set_index("mode")
    assert corrupt.loc["signed", "n_rejected"] == 6 and corrupt.loc["standard", "n_bricked"] == 6
    assert (corrupt["failure_rate"] == 1.0).all() and corrupt["ci_low"].round(4).tolist() == [0.6097, 0.6097]
    assert corrupt["median_s"].isna().all()
    ok = summary[summary["fault"] == "none"].set_index("mode")
    assert (ok["n_updated"] == 6).all() and (ok["failure_rate"] == 0).all()
    assert (ok["p95_s"] >= ok["median_s"]).all() and np.allclose(ok["throughput_Bps"], 100_000)
    assert summarize(synthetic_frame().iloc[:0]).empty


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    run_campaign(small_spec(), run, fake_trial, progress=False)
    return run


def test_write_report(run_dir, tmp_path):
    paths = write_report(run_dir)
    names = [p.name for p in paths]
    assert names == [
        "timeline.png",
        "time_vs_size.png",
        "failure_rates.png",
        "time_cdf.png",
        "summary.csv",
        "summary.md",
    ]
    assert all(p.parent == run_dir / "report" for p in paths)
    for png in paths[:4]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    summary = pd.read_csv(run_dir / "report" / "summary.csv")
    assert len(summary) == 4 and summary["n"].sum() == 24
    md = (run_dir / "report" / "summary.md").read_text()
    assert md.startswith("# Campaign synthetic") and "trials: 24 of 24 (complete)" in md
    assert md.count("\n| ") == 5  # header + 4 rows
    assert not [p for p in (run_dir / "report").iterdir() if p.name.startswith(".")]  # no temp files left


def test_report_on_an_interrupted_run(tmp_path):
    run = tmp_path / "run"

    def stop_at_five(config, calls=[]):  # noqa: B006 - a counter local to this test
        calls.append(config)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return fake_trial(config)

    with pytest.raises(KeyboardInterrupt):
        run_campaign(small_spec(), run, stop_at_five, progress=False)
    write_report(run, tmp_path / "out")
    assert "trials: 4 of 24 (interrupted)" in (tmp_path / "out" / "summary.md").read_text()


def test_cli_report(run_dir, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", str(run_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    names = ("timeline.png", "time_vs_size.png", "failure_rates.png", "time_cdf.png", "summary.csv", "summary.md")
    assert result.stdout.splitlines() == [str(out / n) for n in names]
    assert all((out / n).is_file() for n in ("timeline.png", "summary.md"))


def test_cli_report_errors(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "missing")])
    assert result.exit_code != 0
    assert result.stderr == f"otalab: error: no such run directory: {tmp_path / 'missing'}\n"
    (tmp_path / "started" / "trials").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "started")])
    assert result.exit_code != 0 and result.stderr.startswith("otalab: error: no finished trials in")
    assert not (tmp_path / "started" / "report").exists()
    assert store.read_trials(tmp_path / "started").empty
