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
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from otalib.cli import cli
from otalib.errors import LabError
from otalib.lab import store
from otalib.lab.campaign import run_campaign
from otalib.lab.charts import (
    annotate_updates,
    device_phase_table,
    facet,
    outcome_counts,
    plot_completion_check,
    plot_device_phase,
    plot_device_phases,
    plot_failure_probability,
    plot_outcomes,
    plot_phase_breakdown,
    plot_time_cdf,
    plot_time_vs_fault_rate,
    plot_time_vs_size,
    plot_timeline,
)
from otalib.lab.palette import OUTCOME_COLORS, REJECTED_COLORS, link_marker, outcome_color
from otalib.lab.report import report_figures, summarize, write_report
from otalib.lab.schema import TIMELINE_PHASES, TrialConfig, validate_frame
from otalib.lab.stats import fault_rate, fit_throughput, mean_interval, phase_durations, wilson_interval


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


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombe_1998(k, n, low, high):
    """Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score, no continuity correction)."""
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=5e-5)


def test_mean_interval_is_students_t():
    mean, low, high = mean_interval([1, 2, 3, 4, 5, np.nan])  # sd 1.5811, t(4) = 2.776
    assert (mean, low, high) == pytest.approx((3.0, 3 - 2.776 * 1.5811 / 5**0.5, 3 + 2.776 * 1.5811 / 5**0.5), abs=1e-3)
    assert mean_interval([2.0])[0] == 2.0 and math.isnan(mean_interval([2.0])[1])
    assert all(math.isnan(v) for v in mean_interval([]))


def test_fault_rate_of_each_fault():
    assert fault_rate("none") == ("none", 0.0)
    assert fault_rate("drops:rate=0.2,seed=3") == ("drops", 0.2)
    assert fault_rate("outages:every=10,for=2") == ("outages", pytest.approx(0.1))  # outages per second
    assert fault_rate("power:p=0.1") == ("power", 0.1)
    assert fault_rate("bitflips:ber=1e-6") == ("bitflips", 1e-6)
    for fault in ("cut@0.5", "drops:rate=-1"):
        assert math.isnan(fault_rate(fault)[1])


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
    assert legend_labels(ax) == ["standard / wifi (fit 100 KB/s)", "signed / wifi (fit 100 KB/s)"]
    assert ax.get_xlabel() == "image size (KiB)" and ax.get_ylabel() == "publish → new version (s)"
    assert ax.get_title().startswith("time to new version vs image size")
    markers = [line for line in ax.lines if line.get_linestyle() == "None"]
    fits = [line for line in ax.lines if line.get_linestyle() != "None"]
    assert len(markers) == 2 and len(fits) == 2
    assert sum(len(line.get_xdata()) for line in markers) == (df["outcome"] == "updated").sum() == 12
    assert sorted(set(markers[0].get_xdata())) == [16.0, 64.0]  # KiB
    assert {line.get_marker() for line in markers} == {link_marker("wifi")}


def test_time_vs_size_fits_no_unlimited_link_and_no_faulted_trial():
    grid = {"size": ["16KiB", "64KiB"], "link": ["unlimited", "wifi"], "fault": ["none", "drop"]}
    spec = small_spec(grid=grid, fixed={"timeout_s": 5})
    df = synthetic_frame(spec)
    ax = plot_time_vs_size(df, ax=new_ax())
    assert legend_labels(ax) == ["standard / unlimited (no fit: unlimited link)", "standard / wifi (fit 100 KB/s)"]
    fits = [line for line in ax.lines if line.get_linestyle() != "None"]
    assert len(fits) == 1  # the wifi series only
    points = sum(len(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "None")
    assert points == ((df["fault"] == "none") & (df["outcome"] == "updated")).sum() == 12  # faulted trials left out


def test_time_vs_size_edge_cases():
    df = synthetic_frame()
    only_failures = df[df["outcome"] != "updated"]
    ax = plot_time_vs_size(only_failures, ax=new_ax())
    assert len(ax.lines) == 0 and texts(ax) == ["no updated trials"]
    ax = plot_time_vs_size(updated_row(), ax=new_ax())  # one trial: a point, no line
    assert legend_labels(ax) == ["standard / unlimited (no fit: unlimited link)"]
    assert len(ax.lines) == 1
    with_nan = df.copy()
    with_nan.loc[with_nan.index[:3], "t_new_version"] = np.nan  # updated but never seen: dropped
    ax = plot_time_vs_size(with_nan, ax=new_ax())
    assert sum(len(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "None") == 12 - 2


def bar_segments(ax) -> list:
    return [p for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]


def test_outcomes_stack_every_outcome_per_condition():
    df = synthetic_frame()
    ax = plot_outcomes(df, ax=new_ax(), by=("fault", "mode"))
    assert ax.get_title() == "outcome of every trial, per fault × mode" and ax.get_xlabel() == "trials"
    assert legend_labels(ax) == ["updated", "rejected:VerificationFailed", "bricked"]  # never one "failure"
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["none · standard", "none · signed", "corrupt · standard", "corrupt · signed"]
    counts = outcome_counts(df, ("fault", "mode"))
    for container, outcome in zip(ax.containers, counts.columns, strict=True):
        widths = [p.get_width() for p in container.patches]
        assert widths == counts[outcome].tolist(), outcome  # each segment is its outcome's count
        assert {matplotlib.colors.to_hex(p.get_facecolor()) for p in container.patches} == {outcome_color(outcome)}
        lefts = [p.get_x() for p in container.patches]
        below = counts.loc[:, : counts.columns[list(counts.columns).index(outcome) - 1]].sum(axis=1)
        assert lefts == (below.tolist() if outcome != counts.columns[0] else [0.0] * len(counts))  # stacked
    assert counts.loc[("corrupt", "standard"), "bricked"] == 6
    assert counts.loc[("corrupt", "signed"), "rejected:VerificationFailed"] == 6
    assert [t.strip() for t in texts(ax)] == ["n=6"] * 4
    ax = plot_outcomes(df.iloc[:0], ax=new_ax())
    assert len(ax.patches) == 0 and texts(ax) == ["no trials"]


def test_outcomes_per_size_when_the_run_has_several():
    """Sizes are never pooled by default: one bar per size × fault × mode, the size in KiB, small first."""
    df = synthetic_frame()  # 16 and 64 KiB
    ax = plot_outcomes(df, ax=new_ax())
    assert ax.get_title() == "outcome of every trial, per size × fault × mode"
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == [
        f"{s} · {f} · {m}" for s in ("16 KiB", "64 KiB") for f in ("none", "corrupt") for m in ("standard", "signed")
    ]
    assert outcome_counts(df).loc[(65536, "corrupt", "standard"), "bricked"] == 3
    assert [t.strip() for t in texts(ax)] == ["n=3"] * 8
    one_size = df[df["size"] == 65536]
    assert plot_outcomes(one_size, ax=new_ax()).get_yticklabels()[0].get_text() == "none · standard"


def test_outcome_colours_are_fixed_per_category():
    assert outcome_color("bricked") == OUTCOME_COLORS["bricked"] != outcome_color("rejected:VerificationFailed")
    assert outcome_color("rejected:VerificationFailed") == REJECTED_COLORS["VerificationFailed"]
    assert len(set(REJECTED_COLORS.values()) | set(OUTCOME_COLORS.values())) == len(REJECTED_COLORS) + len(
        OUTCOME_COLORS
    )
    # a run with only failures colours them as a run with every outcome does
    only_bricked = synthetic_frame()
    only_bricked = only_bricked[only_bricked["outcome"] == "bricked"]
    (container,) = plot_outcomes(only_bricked, ax=new_ax()).containers
    assert matplotlib.colors.to_hex(container.patches[0].get_facecolor()) == OUTCOME_COLORS["bricked"]
    assert link_marker("wifi") != link_marker("dsl") and link_marker("my-link") == link_marker("my-link")


def rate_frame() -> pd.DataFrame:
    """Two modes × drop rates 0, 0.1, 0.5 × 10 trials: standard bricks at rate 0.5, signed never does."""
    spec = small_spec(
        repeats=10,
        fixed={"link": "wifi", "size": 65536},
        grid={"mode": ["standard", "signed"], "fault": ["none", "drops:rate=0.1", "drops:rate=0.5"]},
    )
    df = synthetic_frame(spec)
    failures = {("standard", 0.1): 2, ("standard", 0.5): 5, ("signed", 0.1): 1, ("signed", 0.5): 4}
    for (mode, rate), k in failures.items():
        rows = df.index[(df["mode"] == mode) & (df["fault"] == f"drops:rate={rate}")][:k]
        df.loc[rows, "outcome"] = "bricked" if mode == "standard" and rate == 0.5 else "timeout"
        df.loc[rows, "t_new_version"] = np.nan
    slower = df["fault"] == "drops:rate=0.5"
    df.loc[slower, "t_new_version"] += 3.0  # updates that survive drops take longer
    return df


def test_outcome_rows_name_rate_faults_without_their_seed():
    df = rate_frame().assign(fault=lambda d: d["fault"].str.replace("drops:rate=0.1", "drops:rate=0.1,seed=7"))
    half = df[df["fault"] == "drops:rate=0.5"]
    df = pd.concat([df, half.assign(fault="drops:rate=10"), half.assign(fault="drops:rate=5")])
    rows = [t.get_text() for t in plot_outcomes(df, ax=new_ax()).get_yticklabels()]
    assert rows[:4] == ["none · standard", "none · signed", "drops:rate=0.1 · standard", "drops:rate=0.1 · signed"]
    rates = ("0.5", "5", "10")  # by rate, not as text ("10" < "5")
    assert rows[4:] == [f"drops:rate={r} · {m}" for r in rates for m in ("standard", "signed")]


def test_failure_probability_per_mode_with_wilson_bands():
    df = rate_frame()
    ax = plot_failure_probability(df, ax=new_ax())
    assert ax.get_xlabel() == "drop rate λ (disconnects per s)" and ax.get_ylabel() == "probability per update"
    assert "Wilson" in ax.get_title()
    assert legend_labels(ax) == ["standard: no update", "standard: bricked", "signed: no update"]
    no_update = {line.get_label(): line for line in ax.lines}
    assert list(no_update["standard: no update"].get_xdata()) == [0.0, 0.1, 0.5]
    assert list(no_update["standard: no update"].get_ydata()) == [0.0, 0.2, 0.5]
    assert list(no_update["signed: no update"].get_ydata()) == [0.0, 0.1, 0.4]
    assert list(no_update["standard: bricked"].get_ydata()) == [0.0, 0.0, 0.5]
    assert no_update["standard: bricked"].get_markerfacecolor() == "white"  # open markers: bricked
    assert no_update["standard: no update"].get_markerfacecolor() != "white"
    band = ax.collections[0].get_paths()[0].vertices  # standard's: lower edge out, upper edge back
    low, high = wilson_interval(5, 10)
    assert band[:, 1].min() == pytest.approx(0.0) and band[:, 1].max() == pytest.approx(high)
    assert any(v == pytest.approx([0.5, low]) for v in band.tolist())
    with pytest.raises(LabError, match="several rate faults"):
        plot_failure_probability(pd.concat([df, df.assign(fault="power:p=0.1")]), ax=new_ax())
    ax = plot_failure_probability(synthetic_frame(), ax=new_ax())  # deterministic faults only
    assert texts(ax)[0].startswith("no trials with a rate fault")


def test_time_vs_fault_rate_means_with_intervals():
    df = rate_frame()
    ax = plot_time_vs_fault_rate(df, ax=new_ax())
    assert ax.get_ylabel() == "publish → new version (s)" and "drop rate" in ax.get_xlabel()
    assert legend_labels(ax) == ["standard: mean, 95% CI", "signed: mean, 95% CI"]
    times = df["t_new_version"] - df["t_publish_start"]
    means = [c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]
    for line, mode in zip(means, ["standard", "signed"], strict=True):
        expected = [
            times[(df["mode"] == mode) & (df["fault"] == f)].mean()
            for f in ("none", "drops:rate=0.1", "drops:rate=0.5")
        ]
        assert list(line.get_ydata()) == pytest.approx(expected)


def sized_rate_frame() -> pd.DataFrame:
    """32 and 128 KiB × two modes × drop rates 0, 0.5, 1 × 10 trials: only 128 KiB fails (as in the example
    run: a drop-free stretch as long as the transfer is rarer for the bigger image), and takes longer."""
    spec = small_spec(
        repeats=10,
        fixed={"link": "wifi"},
        grid={
            "size": ["32KiB", "128KiB"],
            "mode": ["standard", "signed"],
            "fault": ["none", "drops:rate=0.5", "drops:rate=1"],
        },
    )
    df = synthetic_frame(spec)
    for rate, k in ((0.5, 2), (1, 6)):
        for mode in ("standard", "signed"):
            rows = df.index[(df["size"] == 131072) & (df["mode"] == mode) & (df["fault"] == f"drops:rate={rate}")][:k]
            df.loc[rows, ["outcome", "t_new_version"]] = ["timeout", np.nan]
    df.loc[(df["size"] == 131072) & (df["fault"] != "none"), "t_new_version"] += 5.0
    return df


def test_rate_charts_draw_one_line_per_size():
    """Pooled, the sizes would show 1 or 3 failures in 20 at each rate for both; apart, 32 KiB never fails."""
    df = sized_rate_frame()
    ax = plot_failure_probability(df, ax=new_ax())
    lines = {line.get_label(): line for line in ax.lines}
    names = [f"{m}, {s}" for s in ("32 KiB", "128 KiB") for m in ("standard", "signed")]
    assert legend_labels(ax) == [f"{name}: no update" for name in names]
    for mode in ("standard", "signed"):
        assert list(lines[f"{mode}, 32 KiB: no update"].get_ydata()) == [0.0, 0.0, 0.0]
        assert list(lines[f"{mode}, 128 KiB: no update"].get_ydata()) == [0.0, 0.2, 0.6]
    small, big = lines["signed, 32 KiB: no update"], lines["signed, 128 KiB: no update"]
    assert small.get_color() == big.get_color()  # colour: the mode
    assert small.get_linestyle() != big.get_linestyle()  # style: the size
    ax = plot_time_vs_fault_rate(df, ax=new_ax())
    assert legend_labels(ax) == [f"{name}: mean, 95% CI" for name in names]
    means = [c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]
    times = df["t_new_version"] - df["t_publish_start"]
    for line, (size, mode) in zip(
        means, [(s, m) for s in (32768, 131072) for m in ("standard", "signed")], strict=True
    ):
        pick = (df["size"] == size) & (df["mode"] == mode)
        assert list(line.get_ydata()) == pytest.approx(
            [times[pick & (df["fault"] == f)].mean() for f in ("none", "drops:rate=0.5", "drops:rate=1")]
        )


def test_size_line_styles_tell_apart_the_sizes_runs_use():
    from otalib.lab.palette import size_linestyle

    for sizes in ((32, 128), (64, 256, 960), (16, 32, 64, 128, 256, 512)):
        styles = [str(size_linestyle(k * 1024)) for k in sizes]
        assert len(set(styles)) == len(sizes), (sizes, styles)
    assert size_linestyle(64 * 1024) == size_linestyle(65536)  # fixed by the size alone


def no_resume(rate: float, tau: float, reconnect: float) -> float:
    return tau if rate == 0 else (1 / rate + reconnect) * math.expm1(rate * tau)


def test_completion_check_draws_the_curve_through_tau_and_the_measured_means():
    check = pd.DataFrame(
        {
            "size": [65536, 65536],
            "mode": ["signed", "signed"],
            "drop_rate": [0.5, 1.0],
            "tau_s": [2.0, 2.0],
            "reconnect_s": [1.0, 1.4],
            "measured_s": [5.0, 12.0],
            "measured_low": [4.0, 10.0],
            "measured_high": [6.5, 13.0],
        }
    )
    ax = plot_completion_check(check, ax=new_ax(), predict=no_resume)
    assert ax.get_xlabel() == "drop rate λ (disconnects per s)" and ax.get_ylabel() == "publish → last byte (s)"
    curve = next(line for line in ax.lines if line.get_label().endswith("D = 1.20 s)"))
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    assert x[0] == 0 and y[0] == pytest.approx(2.0)  # λ → 0: the transfer alone
    assert y == pytest.approx([no_resume(r, 2.0, 1.2) for r in x])
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert list(bars.lines[0].get_ydata()) == [5.0, 12.0]
    segments = sorted(tuple(np.round(s[:, 1], 3)) for s in bars.lines[2][0].get_segments())
    assert segments == [(4.0, 6.5), (10.0, 13.0)]  # the 95% intervals as given
    assert legend_labels(ax) == [
        "signed, 64 KiB: predicted (τ = 2.00 s, D = 1.20 s)",
        "signed, 64 KiB: measured mean, 95% CI",
    ]
    assert not texts(ax)  # no trial timed out: nothing marked


def test_completion_check_adds_the_device_window():
    """With a ``window_s`` (the device working through its TCP window after the last byte) the curve is
    ``w + (1/λ + D)(e^(λτ) − 1)``: it starts at τ + w."""
    from otalib.lab.analytic import expected_completion_s

    check = pd.DataFrame(
        {
            "size": [65536], "mode": ["signed"], "drop_rate": [1.0], "tau_s": [2.0], "reconnect_s": [1.0],
            "window_s": [0.25], "measured_s": [8.0], "measured_low": [7.0], "measured_high": [9.0],
        }
    )  # fmt: skip
    ax = plot_completion_check(check, ax=new_ax())
    curve = next(line for line in ax.lines if "predicted" in line.get_label())
    assert curve.get_label().endswith("w = 0.25 s)")
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    assert y[0] == pytest.approx(2.25) and y == pytest.approx([expected_completion_s(r, 2.0, 1.0, 0.25) for r in x])


def test_completion_check_marks_the_cells_where_trials_timed_out():
    """A censored cell lost its slowest trials: open marker, "k of n timed out", a legend that says the mean is low."""
    check = pd.DataFrame(
        {
            "size": [65536, 65536], "mode": ["signed", "signed"], "drop_rate": [0.5, 1.0], "n": [10, 7],
            "censored": [0, 3], "tau_s": [2.0, 2.0], "reconnect_s": [1.0, 1.0], "measured_s": [5.0, 9.0],
            "measured_low": [4.0, 8.0], "measured_high": [6.0, 10.0],
        }
    )  # fmt: skip
    ax = plot_completion_check(check, ax=new_ax(), predict=no_resume)
    assert texts(ax) == ["3 of 10 timed out"]
    (open_marker,) = [line for line in ax.lines if line.get_markerfacecolor() == "white"]
    assert list(open_marker.get_xdata()) == [1.0] and list(open_marker.get_ydata()) == [9.0]
    assert "open: trials timed out, mean biased low" in legend_labels(ax)


def with_device_time(df: pd.DataFrame) -> pd.DataFrame:
    phases = {"receive_s": 1.0, "erase_s": 2.0, "write_s": 3.0, "verify_s": 0.5, "switch_s": 0.01, "reboot_s": 1.5}
    out = df.assign(**{c: v * df["size"] / 65536 for c, v in phases.items()}, reconnect_s=np.nan)
    out.loc[out["outcome"] != "updated", list(phases)] = np.nan
    return out


def test_device_phases_stack_device_seconds_per_size_and_mode():
    df = with_device_time(synthetic_frame())
    ax = plot_device_phases(df, ax=new_ax())
    assert ax.get_title() == "where the time goes on the device"
    assert ax.get_xlabel() == "mean device seconds per update (updated trials without a fault)"
    assert legend_labels(ax) == ["receive", "erase", "write", "verify", "switch", "reboot"]  # reconnect: all NaN
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["16 KiB / standard", "16 KiB / signed", "64 KiB / standard", "64 KiB / signed"]
    erase = ax.containers[1].patches
    assert [p.get_width() for p in erase] == pytest.approx([0.5, 0.5, 2.0, 2.0])
    assert [p.get_x() for p in erase] == pytest.approx([0.25, 0.25, 1.0, 1.0])  # on top of receive
    faulted = with_device_time(rate_frame())
    faulted.loc[faulted["fault"] != "none", "reboot_s"] = 100.0  # retries: not a clean update's phases
    ax = plot_device_phases(faulted, ax=new_ax())
    assert ax.get_xlabel() == "mean device seconds per update (updated trials without a fault)"
    reboot = ax.containers[5].patches
    assert [p.get_width() for p in reboot] == pytest.approx([1.5, 1.5])
    old = synthetic_frame()  # a run made before the timing model: no columns
    assert texts(plot_device_phases(old, ax=new_ax()))[0].startswith("no device-time phases")
    nan = old.assign(receive_s=np.nan)
    assert texts(plot_device_phases(nan, ax=new_ax()))[0].startswith("no device-time phases")


def test_device_phase_bars_per_size_and_mode():
    df = with_device_time(synthetic_frame())
    ax = plot_device_phase(df, ax=new_ax())
    assert ax.get_ylabel() == "verify (device seconds per update)" and ax.get_xlabel() == "image size"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16 KiB", "64 KiB"]
    assert legend_labels(ax) == ["standard", "signed"]
    heights = [[p.get_height() for p in c.patches] for c in ax.containers]
    assert heights == [[0.125, 0.5], [0.125, 0.5]]  # 0.5 s per 64 KiB in with_device_time
    assert device_phase_table(df, "erase_s").loc["64 KiB", "signed"] == pytest.approx(2.0)
    faulted = with_device_time(rate_frame())
    faulted.loc[faulted["fault"] != "none", "verify_s"] = 100.0  # retried, re-hashed: not what verifying costs
    assert device_phase_table(faulted, "verify_s").loc["64 KiB", "signed"] == pytest.approx(0.5)
    ax = plot_device_phase(faulted, ax=new_ax())
    assert [p.get_height() for c in ax.containers for p in c.patches] == pytest.approx([0.5, 0.5])
    assert ax.get_title().endswith("(updated trials without a fault)")
    old = synthetic_frame()  # no device time: a message, no error
    assert device_phase_table(old).empty
    assert texts(plot_device_phase(old, ax=new_ax()))[0].startswith("no device-time verify phase")
    with pytest.raises(LabError, match="unknown device phase"):
        device_phase_table(df, "t_end")


def test_facet_one_panel_per_link_with_one_legend():
    grid = {"size": ["16KiB", "64KiB"], "link": ["unlimited", "wifi"], "fault": ["none", "corrupt"]}
    spec = small_spec(grid=grid, fixed={"timeout_s": 5})
    fig = facet(plot_outcomes, synthetic_frame(spec))
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["link: unlimited", "link: wifi"]
    assert fig.get_suptitle() == "outcome of every trial, per size × fault × mode"
    assert all(ax.get_legend() is None for ax in axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["updated", "bricked"]
    assert not axes[0].get_shared_y_axes().joined(*axes)  # each panel labels its own conditions


def test_facet_shares_a_y_range_that_holds_every_panel():
    spec = small_spec(
        grid={"size": ["16KiB", "64KiB"], "link": ["fast", "slow"]},
        fixed={"timeout_s": 5},
        links={"fast": {"rate_Bps": 100_000}, "slow": {"rate_Bps": 2_000}},
    )
    df = synthetic_frame(spec)
    fig = facet(plot_time_vs_size, df)
    fast, slow = fig.get_axes()
    assert fast.get_shared_y_axes().joined(fast, slow)
    slowest = (df["t_new_version"] - df["t_publish_start"]).max()  # 64 KiB at 2 KB/s, drawn second
    assert slow.get_ylim()[1] >= slowest and fast.get_ylim() == slow.get_ylim()


def test_time_cdf_one_step_line_per_size_and_mode():
    df = synthetic_frame()
    ax = plot_time_cdf(df, ax=new_ax())
    assert ax.get_xlabel() == "publish → new version (s)" and ax.get_title()
    labels = ["standard, 16 KiB (n=3)", "signed, 16 KiB (n=3)", "standard, 64 KiB (n=3)", "signed, 64 KiB (n=3)"]
    assert legend_labels(ax) == labels
    updated = df[df["outcome"] == "updated"]
    for line, (size, mode) in zip(
        ax.lines, [(16384, "standard"), (16384, "signed"), (65536, "standard"), (65536, "signed")], strict=True
    ):
        pick = (updated["mode"] == mode) & (updated["size"] == size)
        times = np.sort((updated["t_new_version"] - updated["t_publish_start"])[pick].to_numpy())
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert x == pytest.approx(np.concatenate([[times[0]], times]))  # publish -> new version, sorted
        assert y == pytest.approx(np.concatenate([[0.0], np.arange(1, 4) / 3]))
    assert ax.lines[0].get_linestyle() != ax.lines[2].get_linestyle()  # sizes told apart
    assert ax.lines[0].get_color() == ax.lines[2].get_color()  # the same mode, the same colour
    ax = plot_time_cdf(df[df["outcome"] != "updated"], ax=new_ax())
    assert len(ax.lines) == 0 and texts(ax) == ["no updated trials"]
    ax = plot_time_cdf(updated_row(), ax=new_ax())
    assert legend_labels(ax) == ["standard, 64 KiB (n=1)"]


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
    for chart in (plot_time_vs_size, plot_outcomes, plot_time_cdf, plot_failure_probability, plot_device_phases):
        before = len(plt.get_fignums())
        ax = chart(df)
        assert len(plt.get_fignums()) == before + 1 and ax.figure is plt.gcf()


def test_annotate_updates_marks_each_install():
    frame = pd.DataFrame(
        {"t": [0.0, 0.5, 1.0, 2.2, 3.4], "event": ["boot", "switch_ok", "restart", "switch_ok", "switch_ok"]}
    )
    ax = new_ax()
    ax.set_title("console events")
    assert annotate_updates(ax, frame) == 3
    assert [line.get_xdata()[0] for line in ax.lines] == [0.5, 2.2, 3.4]
    assert texts(ax) == ["install 1", "install 2", "install 3"]
    assert ax.get_title() == "console events: one retained message, 3 installs in 2.9 s"
    assert annotate_updates(new_ax(), frame.iloc[:1]) == 0
    many = pd.DataFrame({"t": np.arange(8.0), "event": ["switch_ok"] * 8})
    ax = new_ax()
    annotate_updates(ax, many)
    assert texts(ax) == ["install 1", *map(str, range(2, 9))]  # legible when the loop is fast


UNITS = ("(s", "(KiB)", "KB/s", "(per s", "(disconnects per s)", "per update", "seconds")


@pytest.mark.parametrize(
    "draw",
    [
        lambda ax: plot_timeline(updated_row(), ax=ax),
        lambda ax: plot_time_vs_size(synthetic_frame(), ax=ax),
        lambda ax: plot_time_cdf(synthetic_frame(), ax=ax),
        lambda ax: plot_outcomes(synthetic_frame(), ax=ax),
        lambda ax: plot_failure_probability(rate_frame(), ax=ax),
        lambda ax: plot_time_vs_fault_rate(rate_frame(), ax=ax),
        lambda ax: plot_device_phases(with_device_time(synthetic_frame()), ax=ax),
        lambda ax: plot_device_phase(with_device_time(synthetic_frame()), ax=ax),
        lambda ax: plot_phase_breakdown(synthetic_frame(), ax=ax),
    ],
    ids=["timeline", "time_vs_size", "cdf", "outcomes", "failure_p", "time_vs_rate", "device", "phase", "lab_clock"],
)
def test_every_chart_has_a_title_and_units(draw):
    ax = draw(new_ax())
    assert ax.get_title().strip()
    labels = [label for label in (ax.get_xlabel(), ax.get_ylabel()) if label]
    assert labels
    unitless = ("trials", "image size", "fraction of updated trials")  # a count, categories, a fraction
    measured = [label for label in labels if label not in unitless]
    assert all(any(unit in label for unit in UNITS) for label in measured), labels


# --- report -----------------------------------------------------------------------------------


def test_summarize_per_size_mode_link_fault():
    summary = summarize(synthetic_frame())
    assert len(summary) == 8 and list(summary.columns[:5]) == ["size", "mode", "link", "fault", "n"]
    corrupt = summary[(summary["fault"] == "corrupt") & (summary["size"] == 65536)].set_index("mode")
    assert corrupt.loc["signed", "n_rejected"] == 3 and corrupt.loc["standard", "n_bricked"] == 3
    assert (corrupt["failure_rate"] == 1.0).all() and corrupt["ci_low"].round(4).tolist() == [0.4385, 0.4385]
    assert corrupt["median_s"].isna().all()
    assert corrupt["rejected_as"].tolist() == ["VerificationFailed×3", ""]
    assert corrupt["bricked_rate"].tolist() == [0.0, 1.0]  # the safe rejection and the brick told apart
    ok = summary[summary["fault"] == "none"].set_index(["size", "mode"])
    assert (ok["n_updated"] == 3).all() and (ok["failure_rate"] == 0).all()
    assert (ok["p95_s"] >= ok["median_s"]).all() and np.allclose(ok["throughput_KBps"], 100)
    assert summarize(synthetic_frame().iloc[:0]).empty
    drops = summarize(sized_rate_frame()).set_index(["size", "mode", "fault"])["n_timeout"]
    assert drops.loc[(32768, "signed", "drops:rate=1")] == 0 and drops.loc[(131072, "signed", "drops:rate=1")] == 6


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    run_campaign(small_spec(), run, fake_trial, progress=False)
    return run


def test_write_report(run_dir, tmp_path):
    paths = write_report(run_dir)
    names = [p.name for p in paths]
    assert names == ["timeline.png", "time_vs_size.png", "outcomes.png", "time_cdf.png", "summary.csv", "summary.md"]
    assert all(p.parent == run_dir / "report" for p in paths)
    for png in paths[:4]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    summary = pd.read_csv(run_dir / "report" / "summary.csv")
    assert len(summary) == 8 and summary["n"].sum() == 24
    md = (run_dir / "report" / "summary.md").read_text()
    assert md.startswith("# Campaign synthetic") and "trials: 24 of 24 (complete)" in md
    assert md.count("\n| ") == 9  # header + 8 rows
    assert md.count("\n| 16 KiB | ") == 4  # sizes in KiB
    assert not [p for p in (run_dir / "report").iterdir() if p.name.startswith(".")]  # no temp files left


def test_report_figures_follow_the_data():
    """Device-time phases only when measured, one probability and one time chart per rate fault present."""
    names = list(report_figures(synthetic_frame()))
    assert names == ["timeline.png", "time_vs_size.png", "outcomes.png", "time_cdf.png"]
    figures = report_figures(with_device_time(rate_frame()))
    assert list(figures)[4:] == [
        "device_phases.png",
        "failure_vs_drops.png",
        "time_vs_drops.png",
        "completion_check.png",
    ]
    (check,) = figures["completion_check.png"].get_axes()  # no fault events: no D to measure, and it says so
    assert texts(check)[0].startswith("no analytic check: no drop with a reconnect")
    for fig in figures.values():
        titled = [ax.get_title() for ax in fig.get_axes() if ax.get_title()] or [fig.get_suptitle()]
        assert titled and all(titled), fig
        assert fig.get_suptitle() or len(fig.get_axes()) == 1
        for ax in fig.get_axes():
            assert "(" in ax.get_xlabel() or ax.get_xlabel() == "trials", ax.get_xlabel()  # a unit


def test_report_completion_check_draws_the_cells_it_can_compare():
    """A small run where drops fired at 128 KiB only: the check draws 128 KiB, leaves 32 KiB out (no D)."""
    df = sized_rate_frame()
    big = df[(df["size"] == 131072) & df["fault"].str.startswith("drops:")]
    events = pd.DataFrame({"trial_id": big["trial_id"], "kind": "drop", "duration_s": 0.4})
    (ax,) = report_figures(df, events)["completion_check.png"].get_axes()
    labels = [t.get_text() for t in ax.figure.legends[0].get_texts()]
    assert labels and all("128 KiB" in label for label in labels if "KiB" in label), labels
    assert "standard, 128 KiB: predicted (τ = 1.34 s, D = 0.40 s)" in labels


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
    names = ("timeline.png", "time_vs_size.png", "outcomes.png", "time_cdf.png", "summary.csv", "summary.md")
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
