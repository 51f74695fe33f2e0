"""Charts of trial data: each a function ``(DataFrame, ax=None) -> Axes``, no I/O.

Without ``ax`` a new figure is made with pyplot (for notebooks); pass an ``ax``
to draw into your own figure. Nothing is shown or saved here. Every chart has a
title and units (sizes in KiB, times in s, throughputs in KB/s); colours and
markers are fixed per category (:mod:`otalib.lab.palette`). :func:`facet` draws
one panel per link (or any column). The outcome charts live in
:mod:`otalib.lab.outcome_charts` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from otalib.errors import LabError
from otalib.lab.outcome_charts import (  # re-exported
    failure_table,
    outcome_counts,
    plot_completion_check,
    plot_failure_probability,
    plot_outcomes,
    plot_time_vs_fault_rate,
)
from otalib.lab.palette import (
    _finite,
    format_rate,
    format_size,
    link_marker,
    mode_color,
    new_axes,
    no_data,
    size_linestyle,
    sorted_modes,
    sorted_outcomes,
)
from otalib.lab.schema import TIMELINE_PHASES
from otalib.lab.stats import (
    DEVICE_PHASES,
    device_phase_columns,
    fit_throughput,
    phase_durations,
    time_to_new_version,
)
from otalib.vocabulary import Outcome, OutcomeKind

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Label of each device-time phase column, in the order an update passes them.
DEVICE_PHASE_LABELS: dict[str, str] = {
    "receive_s": "receive",
    "erase_s": "erase",
    "write_s": "write",
    "verify_s": "verify",
    "switch_s": "switch",
    "reboot_s": "reboot",
    "reconnect_s": "reconnect",
}
#: Fixed colour of each phase (lab-clock and device-time charts alike).
PHASE_COLORS: dict[str, str] = {
    "build": "#c7c7c7",
    "publish": "#aec7e8",
    "transfer": "#1f77b4",
    "receive": "#1f77b4",
    "erase": "#ff7f0e",
    "write": "#d62728",
    "verify": "#9467bd",
    "switch": "#8c564b",
    "restart": "#7f7f7f",
    "reboot": "#7f7f7f",
    "reconnect": "#17becf",
}


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


def plot_timeline(
    data: pd.DataFrame | pd.Series | Mapping[str, Any], ax: Axes | None = None, *, trial_id: str | None = None
) -> Axes:
    """The phases of one update as horizontal bars on the trial's (lab) clock.

    One bar per phase of :data:`TIMELINE_PHASES` whose start and end are known
    (a phase the trial never reached has no bar); a dashed line marks ``t_end``.
    """
    row = _one_trial(data, trial_id)
    ax = new_axes(ax)
    labels = [label for label, _, _ in TIMELINE_PHASES]
    starts, widths, ys, colors = [], [], [], []
    for y, (label, start_col, end_col) in enumerate(TIMELINE_PHASES):
        start = 0.0 if start_col is None else _finite(row.get(start_col))
        end = _finite(row.get(end_col))
        if start is None or end is None:
            continue
        starts.append(start)
        widths.append(max(end - start, 0.0))
        ys.append(y)
        colors.append(PHASE_COLORS.get(label, f"C{y}"))
    if ys:
        ax.barh(ys, widths, left=starts, color=colors, height=0.6)
    t_end = _finite(row.get("t_end"))
    if t_end is not None:
        ax.axvline(t_end, color="0.3", linestyle="--", linewidth=1, label="end")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first phase on top
    ax.set_xlim(left=0)
    ax.set_xlabel("time since the trial started (s, lab clock)")
    what = " ".join(str(v) for v in (row.get("mode", ""), format_size(row.get("size")), row.get("link", "")) if v)
    ax.set_title(f"one update, phase by phase: {what} → {row.get('outcome', '')}")
    if not ys:
        no_data(ax, "phase timestamps")
    return ax


def _updated_times(df: pd.DataFrame) -> pd.DataFrame:
    """Updated trials with a finite publish → new version time (column ``_time``)."""
    data = df.assign(_time=time_to_new_version(df))
    return data[(data["outcome"] == OutcomeKind.UPDATED) & np.isfinite(data["_time"])]


def _is_limited(group: pd.DataFrame) -> bool:
    """Every trial of ``group`` ran over a rate-limited link (a throughput fit means something)."""
    rates = group["rate_Bps"].to_numpy(float) if "rate_Bps" in group else np.array([math.nan])
    return bool(np.isfinite(rates).all() and group.get("link", pd.Series(["unlimited"])).ne("unlimited").all())


def _no_fault(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["fault"].astype(str) == "none"] if "fault" in df else df


def plot_time_vs_size(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Time to new version vs image size, one series per (mode, link), with a line fit.

    Only updated trials without a fault count (a faulted trial's time is the fault's, not the
    link's). The line and its throughput (``1 / slope``, in the legend) are fitted over a
    rate-limited link only: over an unlimited link the slope measures the lab PC, not a link.
    A series with fewer than two sizes has no line.
    """
    ax = new_axes(ax)
    data = _no_fault(_updated_times(df))
    ax.set_xlabel("image size (KiB)")
    ax.set_ylabel("publish → new version (s)")
    ax.set_title("time to new version vs image size (updated trials, no fault)")
    if data.empty:
        return no_data(ax, "updated trials")
    links = sorted(str(v) for v in data["link"].unique())
    for mode in sorted_modes(data["mode"]):
        for link in links:
            group = data[(data["mode"] == mode) & (data["link"] == link)]
            if group.empty:
                continue
            color = mode_color(mode)
            fit = "no fit: unlimited link"
            slope = intercept = math.nan
            if _is_limited(group):
                slope, intercept, throughput = fit_throughput(group["size"], group["_time"])
                fit = f"fit {format_rate(throughput)}" if math.isfinite(throughput) else "no fit"
            ax.plot(
                group["size"] / 1024,
                group["_time"],
                linestyle="none",
                marker=link_marker(link),
                color=color,
                alpha=0.7,
                label=f"{mode} / {link} ({fit})",
            )
            if math.isfinite(slope):
                xs = np.array([group["size"].min(), group["size"].max()], dtype=float)
                ax.plot(xs / 1024, slope * xs + intercept, color=color, linewidth=1, label="_nolegend_")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return ax


def plot_time_cdf(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Empirical CDF of publish → new version time, one step line per size × mode (× link).

    Colour = mode, line style = size; updated trials only. Several links in ``df`` are
    told apart in the legend: :func:`facet` draws one panel per link instead.
    """
    ax = new_axes(ax)
    ax.set_xlabel("publish → new version (s)")
    ax.set_ylabel("fraction of updated trials")
    ax.set_title("time to new version, cumulative distribution")
    data = _updated_times(df)
    if data.empty:
        return no_data(ax, "updated trials")
    links = sorted(str(v) for v in data["link"].unique())
    for link in links:
        for size in sorted(data["size"].unique()):
            for mode in sorted_modes(data["mode"]):
                pick = (data["link"] == link) & (data["size"] == size) & (data["mode"] == mode)
                times = np.sort(data.loc[pick, "_time"].to_numpy(float))
                if times.size == 0:
                    continue
                fraction = np.arange(1, times.size + 1) / times.size
                where = f"{mode}, {format_size(size)}" + (f", {link}" if len(links) > 1 else "")
                ax.step(
                    np.concatenate([[times[0]], times]),
                    np.concatenate([[0.0], fraction]),
                    where="post",
                    color=mode_color(mode),
                    linestyle=size_linestyle(size),
                    marker=link_marker(link) if len(links) > 1 else None,
                    markevery=[-1],
                    label=f"{where} (n={times.size})",
                )
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small")
    return ax


def _group_names(index: pd.Index) -> list[str]:
    def name(key: Any) -> str:
        parts = key if isinstance(key, tuple) else (key,)
        return " / ".join(format_size(p) if isinstance(p, (int, np.integer)) else str(p) for p in parts)

    return [name(k) for k in index]


def _stack_h(ax: Axes, means: pd.DataFrame, labels: list[str], columns: list[str]) -> None:
    left = np.zeros(len(means))
    names = _group_names(means.index)
    for label, column in zip(labels, columns, strict=True):
        widths = means[column].to_numpy(float)
        ax.barh(names, widths, left=left, label=label, color=PHASE_COLORS.get(label))
        left += widths
    ax.invert_yaxis()  # first group on top
    ax.set_xlim(left=0)


def plot_phase_breakdown(df: pd.DataFrame, ax: Axes | None = None, *, by: tuple[str, ...] = ("mode", "link")) -> Axes:
    """Where the time goes on the LAB clock: mean seconds per phase, stacked, per group of updated trials.

    The lab clock sees the broker and the console, not the device: for the device's own
    phases (erase, write, verify…) see :func:`plot_device_phases`.
    """
    ax = new_axes(ax)
    ax.set_xlabel("mean seconds on the lab clock (updated trials)")
    ax.set_title("where the time goes (lab clock)")
    done = df[df["outcome"] == OutcomeKind.UPDATED]
    if done.empty:
        return no_data(ax, "updated trials")
    durations = phase_durations(done)
    labels = [label for label, _, _ in TIMELINE_PHASES]
    means = durations.groupby([durations[c] for c in by if c in durations])[labels].mean()
    _stack_h(ax, means, labels, labels)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def clean_updates(df: pd.DataFrame) -> pd.DataFrame:
    """The updated trials whose device phases tell what an update costs: those without a fault, when the
    run has any (a fault adds retries, reboots and re-sent bytes to the phases), else every updated one."""
    done = df[df["outcome"] == OutcomeKind.UPDATED]
    if "fault" in done and (done["fault"].astype(str) == "none").any():
        done = done[done["fault"].astype(str) == "none"]
    return done


def _clean_note(df: pd.DataFrame) -> str:
    """`` without a fault`` when :func:`clean_updates` kept the fault-free trials only."""
    clean = clean_updates(df)
    fault_free = "fault" in clean and len(clean) > 0 and (clean["fault"].astype(str) == "none").all()
    return " without a fault" if fault_free else ""


def device_phase_means(df: pd.DataFrame, by: tuple[str, ...] = ("size", "mode")) -> pd.DataFrame:
    """Mean device seconds per phase (columns :data:`DEVICE_PHASES`) of updated trials, per group.

    Only trials whose device-time columns were measured count; columns a run lacks are absent.
    Trials without a fault only, when the run has any (:func:`clean_updates`). ``link`` and
    ``timing`` join the grouping when they vary.
    """
    columns = device_phase_columns(df)
    done = clean_updates(df) if columns else df.iloc[:0]
    if columns:
        done = done[np.isfinite(done[columns].to_numpy(float)).any(axis=1)]
    keys = [*by, *(c for c in ("link", "timing") if c in done and c not in by and done[c].nunique() > 1)]
    if done.empty:
        return pd.DataFrame(columns=[*keys, *columns]).set_index(keys)
    means = done.groupby(keys, sort=True)[columns].mean().fillna(0.0)
    return means.sort_index(key=lambda level: _chart_order(level))


def _chart_order(level: pd.Index) -> pd.Index:
    """Modes in chart order (other levels as they sort)."""
    if level.name != "mode":
        return level
    order = sorted_modes(level)
    return pd.Index([order.index(str(m)) for m in level])


def plot_device_phases(df: pd.DataFrame, ax: Axes | None = None, *, by: tuple[str, ...] = ("size", "mode")) -> Axes:
    """Where the time goes ON THE DEVICE: mean device seconds per phase, stacked, per size × mode.

    The phases are the timing model's (receive, erase, write, verify, switch, reboot, reconnect);
    a run without them (timing ``none``, a real board, an old run) gets a "no data" panel.
    """
    ax = new_axes(ax)
    ax.set_xlabel(f"mean device seconds per update (updated trials{_clean_note(df)})")
    ax.set_title("where the time goes on the device")
    means = device_phase_means(df, by)
    if means.empty:
        return no_data(ax, "device-time phases (run with a timing model, e.g. timing: esp8266)")
    columns = list(means.columns)
    _stack_h(ax, means, [DEVICE_PHASE_LABELS[c] for c in columns], columns)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def annotate_updates(ax: Axes, frame: pd.DataFrame, *, event: str = "switch_ok", what: str = "install") -> int:
    """Mark each ``event`` of a console frame (``t``, ``event`` columns) on a console chart: a dotted line
    and ``install 1``, ``install 2``… — the retained-update loop made visible. Returns how many."""
    times = frame.loc[frame["event"] == event, "t"].to_numpy(float) if len(frame) else np.array([])
    for number, t in enumerate(times, start=1):
        ax.axvline(t, color="#d62728", linestyle=":", linewidth=1)
        ax.annotate(
            f"{what} {number}" if len(times) <= 6 or number == 1 else str(number),  # many: numbers only
            (t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            va="top",
            fontsize="x-small",
            color="#d62728",
        )
    if len(times):
        span = f" in {times[-1] - times[0]:.1f} s" if len(times) > 1 else ""
        ax.set_title(f"{ax.get_title()}: one retained message, {len(times)} {what}s{span}".lstrip(": "))
    return len(times)


def device_phase_table(df: pd.DataFrame, phase: str = "verify_s") -> pd.DataFrame:
    """Mean device seconds of one phase (a :data:`DEVICE_PHASES` column) per size (rows, ``64 KiB``) and
    mode (columns, in chart order), over updated trials that measured it, without a fault when the run
    has any (:func:`clean_updates`); empty when none did."""
    if phase not in DEVICE_PHASES:
        raise LabError(f"unknown device phase {phase!r}: one of {', '.join(DEVICE_PHASES)}")
    if phase not in device_phase_columns(df):
        return pd.DataFrame()
    done = clean_updates(df)
    done = done[np.isfinite(done[phase].to_numpy(float))]
    table = done.pivot_table(index="size", columns="mode", values=phase, aggfunc="mean")
    table = table[sorted_modes(table.columns)]
    table.index = [format_size(size) for size in table.index]
    return table


def plot_device_phase(df: pd.DataFrame, ax: Axes | None = None, *, phase: str = "verify_s") -> Axes:
    """One device-time phase (default ``verify_s``: what checking a package costs) per size, a bar per mode."""
    ax = new_axes(ax)
    label = DEVICE_PHASE_LABELS.get(phase, phase)
    ax.set_xlabel("image size")
    ax.set_ylabel(f"{label} (device seconds per update)")
    ax.set_title(f"device time to {label}, per image size and mode (updated trials{_clean_note(df)})")
    table = device_phase_table(df, phase)
    if table.empty:
        return no_data(ax, f"device-time {label} phase (run with a timing model, e.g. timing: esp8266)")
    width = 0.8 / len(table.columns)
    x = np.arange(len(table))
    for j, mode in enumerate(table.columns):
        ax.bar(x - 0.4 + width * (j + 0.5), table[mode].to_numpy(float), width, color=mode_color(mode), label=mode)
    ax.set_xticks(x, list(table.index))
    ax.legend(fontsize="small", title="mode")
    return ax


def facet(
    chart: Callable[..., Axes],
    df: pd.DataFrame,
    *,
    by: str = "link",
    fig: Figure | None = None,
    panel_size: tuple[float, float] = (6.0, 4.5),
    sharey: bool | None = None,
    **kwargs: Any,
) -> Figure:
    """One panel per value of ``by`` (default: per link), each drawn by ``chart``.

    The panels share the y axis (its range covers every panel's data), except for
    :func:`plot_outcomes`, whose rows are each panel's own conditions (``sharey`` overrides).
    The chart's title becomes the figure's; each panel is titled ``by: value``. Returns the figure
    (a new :class:`~matplotlib.figure.Figure`, not pyplot's, unless ``fig`` is given).
    """
    values = sorted(str(v) for v in df[by].unique()) if by in df and len(df) else [""]
    share = chart is not plot_outcomes if sharey is None else sharey
    if fig is None:
        fig = Figure(figsize=(panel_size[0] * len(values) + 2.5, panel_size[1]), layout="constrained")
    axes = fig.subplots(1, len(values), sharey=share, squeeze=False)[0]
    title = ""
    for ax, value in zip(axes, values, strict=True):
        chart(df[df[by].astype(str) == value] if value else df, ax=ax, **kwargs)
        title = title or ax.get_title()
        ax.set_title(f"{by}: {value}" if value else "")
    if share:
        _cover_every_panel(axes)
    _one_legend(fig, axes)
    fig.suptitle(title)
    return fig


def _cover_every_panel(axes: Any) -> None:
    """A shared y range that holds every panel's data (a chart's ``set_ylim`` froze the first panel's)."""
    tops = [ax.dataLim.y1 for ax in axes if ax.has_data() and np.isfinite(ax.dataLim.y1)]
    low, high = axes[0].get_ylim()
    if tops and max(tops) > high:
        axes[0].set_ylim(low, max(tops) + 0.05 * (max(tops) - low))


def _one_legend(fig: Figure, axes: Any) -> None:
    """The panels' legends as one figure legend on the right (each label once; outcomes in stack order)."""
    entries: dict[str, Any] = {}
    title = ""
    for ax in axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        title = title or legend.get_title().get_text()
        handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
        for label in (t.get_text() for t in legend.get_texts()):  # in the order the chart gave its legend
            entries.setdefault(label, handles.get(label))
        legend.remove()
    if not entries:
        return
    labels = list(entries)
    if all(_is_outcome(label) for label in labels):
        labels = sorted_outcomes(labels)
    fig.legend(
        [entries[x] for x in labels], labels, loc="outside right center", fontsize="small", title=title or None,
        handlelength=3.5,  # long enough to tell the line styles (sizes) apart
    )  # fmt: skip


def _is_outcome(text: str) -> bool:
    try:
        Outcome.parse(text)
    except ValueError:
        return False
    return True


__all__ = [
    "DEVICE_PHASES",
    "annotate_updates",
    "clean_updates",
    "device_phase_table",
    "facet",
    "failure_table",
    "format_rate",
    "format_size",
    "mode_color",
    "outcome_counts",
    "plot_completion_check",
    "plot_device_phase",
    "plot_device_phases",
    "plot_failure_probability",
    "plot_outcomes",
    "plot_phase_breakdown",
    "plot_time_cdf",
    "plot_time_vs_fault_rate",
    "plot_time_vs_size",
    "plot_timeline",
]
