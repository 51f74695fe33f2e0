"""Charts of trial data: each a function ``(DataFrame, ax=None) -> Axes``, no I/O.

Without ``ax`` a new figure is made with pyplot (for notebooks); pass an ``ax``
to draw into your own figure. Nothing is shown or saved here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.ticker import EngFormatter

from otalib.errors import LabError
from otalib.lab.schema import TIMELINE_PHASES
from otalib.lab.stats import failed, fit_throughput, phase_durations, time_to_new_version, wilson_interval
from otalib.vocabulary import OutcomeKind, UpdateMode

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def format_rate(rate_Bps: float) -> str:
    """A throughput for people: ``118 kB/s``; ``n/a`` when unknown."""
    if rate_Bps is None or not math.isfinite(rate_Bps):
        return "n/a"
    for unit in ("B/s", "kB/s", "MB/s"):
        if abs(float(f"{rate_Bps:.3g}")) < 1000 or unit == "MB/s":
            return f"{rate_Bps:.3g} {unit}"
        rate_Bps /= 1000
    return ""  # pragma: no cover


#: Modes in chart order (their colours follow it).
MODES = tuple(mode.value for mode in UpdateMode)


def mode_color(mode: str) -> str:
    """One colour per mode, the same in every chart."""
    index = MODES.index(mode) if mode in MODES else len(MODES) + sum(mode.encode()) % 6
    return f"C{index % 10}"


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new_ax = plt.subplots(figsize=(7, 4), layout="constrained")
    return new_ax


def _no_data(ax: Axes, what: str) -> Axes:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    return ax


def _sorted_modes(modes: Any) -> list[str]:
    present = [str(m) for m in pd.unique(pd.Series(list(modes), dtype=object))]
    return sorted(present, key=lambda m: (MODES.index(m) if m in MODES else len(MODES), m))


def _one_trial(data: pd.DataFrame | pd.Series | Mapping[str, Any], trial_id: str | None) -> Mapping[str, Any]:
    if isinstance(data, pd.DataFrame):
        if trial_id is not None:
            data = data[data["trial_id"] == trial_id]
            if data.empty:
                raise LabError(f"no trial {trial_id!r} in the frame")
        if len(data) != 1:
            raise LabError(f"plot_timeline needs one trial, got {len(data)} rows (pass trial_id=...)")
        return data.iloc[0].to_dict()
    if isinstance(data, pd.Series):
        return data.to_dict()
    if isinstance(data, Mapping):
        return data
    raise LabError(f"plot_timeline needs a DataFrame row, Series or dict, got {type(data).__name__}")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plot_timeline(
    data: pd.DataFrame | pd.Series | Mapping[str, Any], ax: Axes | None = None, *, trial_id: str | None = None
) -> Axes:
    """The phases of one update as horizontal bars on the trial's clock.

    One bar per phase of :data:`TIMELINE_PHASES` whose start and end are known
    (a phase the trial never reached has no bar); a dashed line marks ``t_end``.
    """
    row = _one_trial(data, trial_id)
    ax = _axes(ax)
    labels = [label for label, _, _ in TIMELINE_PHASES]
    starts, widths, ys, colors = [], [], [], []
    for y, (_, start_col, end_col) in enumerate(TIMELINE_PHASES):
        start = 0.0 if start_col is None else _finite(row.get(start_col))
        end = _finite(row.get(end_col))
        if start is None or end is None:
            continue
        starts.append(start)
        widths.append(max(end - start, 0.0))
        ys.append(y)
        colors.append(f"C{y}")
    if ys:
        ax.barh(ys, widths, left=starts, color=colors, height=0.6)
    t_end = _finite(row.get("t_end"))
    if t_end is not None:
        ax.axvline(t_end, color="0.3", linestyle="--", linewidth=1, label="end")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first phase on top
    ax.set_xlim(left=0)
    ax.set_xlabel("time since trial start (s)")
    outcome = row.get("outcome", "")
    title = f"{row.get('mode', '')} {format_size(row.get('size'))}: {outcome}".strip()
    ax.set_title(title)
    if not ys:
        _no_data(ax, "phase timestamps")
    return ax


def format_size(size: Any) -> str:
    """A size in bytes for people (binary units): ``64 KiB``."""
    value = _finite(size)
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:g} {unit}" if unit == "B" else f"{value:.4g} {unit}"
        value /= 1024
    return ""  # pragma: no cover


def plot_time_vs_size(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Time to new version vs image size, one series per (mode, link), with a line fit.

    Only updated trials count. The legend gives each series' fitted throughput
    (``1 / slope``); a series with fewer than two sizes has no line.
    """
    ax = _axes(ax)
    data = df.assign(_time=time_to_new_version(df))
    data = data[(data["outcome"] == OutcomeKind.UPDATED) & np.isfinite(data["_time"])]
    ax.set_xlabel("image size")
    ax.set_ylabel("publish → new version (s)")
    ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
    if data.empty:
        return _no_data(ax, "updated trials")
    links = sorted(str(v) for v in data["link"].unique())
    markers = "osD^v<>ph*"
    for mode in _sorted_modes(data["mode"]):
        for i, link in enumerate(links):
            group = data[(data["mode"] == mode) & (data["link"] == link)]
            if group.empty:
                continue
            _, intercept, throughput = fit_throughput(group["size"], group["_time"])
            slope = 1.0 / throughput if math.isfinite(throughput) else math.nan
            fit = f"fit {format_rate(throughput)}" if math.isfinite(throughput) else "no fit"
            color = mode_color(mode)
            ax.plot(
                group["size"],
                group["_time"],
                linestyle="none",
                marker=markers[i % len(markers)],
                color=color,
                alpha=0.7,
                label=f"{mode} / {link} ({fit})",
            )
            if math.isfinite(slope):
                xs = np.array([group["size"].min(), group["size"].max()], dtype=float)
                ax.plot(xs, slope * xs + intercept, color=color, linewidth=1, label="_nolegend_")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return ax


def failure_table(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: n, failures, failure rate and its 95% Wilson interval."""
    flags = df.assign(_failed=failed(df))
    rows = []
    for key, group in flags.groupby(by, sort=True, dropna=False):
        keys = key if isinstance(key, tuple) else (key,)
        n, k = len(group), int(group["_failed"].sum())
        low, high = wilson_interval(k, n)
        stats = {"n": n, "failures": k, "failure_rate": k / n, "ci_low": low, "ci_high": high}
        rows.append({**dict(zip(by, keys, strict=True)), **stats})
    columns = [*by, "n", "failures", "failure_rate", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def plot_failure_rates(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Failure rate (outcome other than ``updated``) per fault × mode, with 95% Wilson error bars.

    Faults along x, one bar colour per mode; each bar is labelled ``failures/n``.
    """
    ax = _axes(ax)
    ax.set_ylabel("failure rate")
    ax.set_ylim(0, 1.12)
    if df.empty:
        return _no_data(ax, "trials")
    table = failure_table(df, ["fault", "mode"])
    faults = sorted(str(f) for f in table["fault"].unique())
    faults.sort(key=lambda f: (f != "none", f))  # the no-fault baseline first
    modes = _sorted_modes(table["mode"])
    width = 0.8 / len(modes)
    for j, mode in enumerate(modes):
        rows = table[table["mode"] == mode]
        x = np.array([faults.index(str(f)) for f in rows["fault"]], dtype=float) - 0.4 + width * (j + 0.5)
        rate = rows["failure_rate"].to_numpy(float)
        yerr = np.vstack([rate - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - rate])
        yerr = np.clip(yerr, 0.0, None)
        bars = ax.bar(x, rate, width, yerr=yerr, capsize=3, color=mode_color(mode), label=mode, ecolor="0.2")
        ax.bar_label(
            bars, labels=[f"{k}/{n}" for k, n in zip(rows["failures"], rows["n"], strict=True)], fontsize="x-small"
        )
    ax.set_xticks(range(len(faults)), faults)
    ax.set_xlabel("fault")
    ax.legend(fontsize="small", title="mode")
    return ax


def plot_time_cdf(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Empirical CDF of publish → new version time, one step line per mode (updated trials)."""
    ax = _axes(ax)
    ax.set_xlabel("publish → new version (s)")
    ax.set_ylabel("fraction of updated trials")
    data = df.assign(_time=time_to_new_version(df))
    data = data[(data["outcome"] == OutcomeKind.UPDATED) & np.isfinite(data["_time"])]
    if data.empty:
        return _no_data(ax, "updated trials")
    for mode in _sorted_modes(data["mode"]):
        times = np.sort(data.loc[data["mode"] == mode, "_time"].to_numpy(float))
        fraction = np.arange(1, times.size + 1) / times.size
        ax.step(
            np.concatenate([[times[0]], times]),
            np.concatenate([[0.0], fraction]),
            where="post",
            color=mode_color(mode),
            label=f"{mode} (n={times.size})",
        )
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small")
    return ax


__all__ = [
    "failure_table",
    "format_rate",
    "format_size",
    "plot_failure_rates",
    "plot_time_cdf",
    "plot_time_vs_size",
    "plot_timeline",
]


def plot_phase_breakdown(df: pd.DataFrame, ax: Axes | None = None, *, by: tuple[str, ...] = ("mode", "link")) -> Axes:
    """Where the time goes: mean seconds per phase, stacked, per group of updated trials."""
    ax = _axes(ax)
    done = df[df["outcome"] == OutcomeKind.UPDATED]
    if done.empty:
        ax.text(0.5, 0.5, "no updated trials", ha="center", va="center", transform=ax.transAxes)
        return ax
    durations = phase_durations(done)
    labels = [label for label, _, _ in TIMELINE_PHASES]
    means = durations.groupby([durations[c] for c in by if c in durations])[labels].mean()
    left = np.zeros(len(means))
    names = [" / ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in means.index]
    for label in labels:
        ax.barh(names, means[label].to_numpy(), left=left, label=label)
        left += means[label].to_numpy()
    ax.set_xlabel("mean seconds (updated trials)")
    ax.set_title("where the time goes")
    ax.legend(fontsize="small", ncol=3)
    return ax
