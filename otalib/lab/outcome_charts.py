"""What happened to the updates: outcome composition, failure probability and time against fault rate.

A failure is not one thing: a ``rejected`` update is safe (the device refused it and runs its old
firmware), a ``bricked`` board is not. So the composition chart stacks every outcome with a fixed
colour (:mod:`otalib.lab.palette`), and the probability chart draws "no update" and "bricked"
as separate curves, each with its 95% Wilson band.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from otalib.errors import LabError
from otalib.lab.palette import (
    format_size,
    link_marker,
    mode_color,
    new_axes,
    no_data,
    outcome_color,
    size_linestyle,
    sorted_modes,
    sorted_outcomes,
)
from otalib.lab.stats import (
    RATE_LABELS,
    failed,
    fault_rate,
    fault_rates,
    mean_interval,
    time_to_new_version,
    wilson_interval,
)
from otalib.vocabulary import OutcomeKind

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _fault_order(fault: str) -> tuple[bool, str, float, str]:
    """The no-fault baseline first, then by kind and, within a rate fault, by rate (0.5 before 10)."""
    kind, rate = fault_rate(fault)
    return (fault != "none", kind, rate if math.isfinite(rate) else 0.0, fault)


def condition_keys(df: pd.DataFrame) -> tuple[str, ...]:
    """The default conditions of the outcome charts: fault × mode, with the image size first when
    ``df`` holds several (a size that fails under drops must not hide behind one that does not)."""
    several_sizes = "size" in df and df["size"].nunique() > 1
    return ("size", "fault", "mode") if several_sizes else ("fault", "mode")


def outcome_counts(df: pd.DataFrame, by: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Trials per outcome string (columns, in stack order) for each group of ``by`` (rows; default
    :func:`condition_keys`).

    Sizes are ordered small first, faults with ``none`` first, modes in chart order.
    """
    if df.empty:
        return pd.DataFrame()
    by = condition_keys(df) if by is None else by
    counts = df.groupby([*by, "outcome"], sort=False).size().unstack("outcome", fill_value=0)
    counts = counts[sorted_outcomes(counts.columns)]

    def key(index: pd.Index) -> pd.Index:
        if index.name == "fault":
            return pd.Index([_fault_order(str(v)) for v in index])
        if index.name == "mode":
            order = sorted_modes(index)
            return pd.Index([order.index(str(v)) for v in index])
        return index

    counts.columns.name = "outcome"
    return counts.sort_index(key=key)


def _group_label(key: object, names: tuple[str, ...]) -> str:
    """``128 KiB · drops:rate=0.5 · signed``: a condition's values (sizes in KiB, a rate fault without its
    seed: every trial has one)."""
    parts = key if isinstance(key, tuple) else (key,)
    pairs = zip(names, parts, strict=True)
    shown = [format_size(p) if name == "size" else re.sub(r",seed=\d+", "", str(p)) for name, p in pairs]
    return " · ".join(shown)


def plot_outcomes(df: pd.DataFrame, ax: Axes | None = None, *, by: tuple[str, ...] | None = None) -> Axes:
    """The outcome of every trial per condition (``by``, default :func:`condition_keys`): stacked
    horizontal bars of counts.

    Each bar is one condition (fault · mode, per size when there are several; the no-fault
    baseline on top), its segments the trials that ended updated, skipped, rejected with each
    device error, timed out or bricked, each outcome in its fixed colour; ``n`` at the bar's end.
    """
    by = condition_keys(df) if by is None else by
    counts = outcome_counts(df, by)
    ax = new_axes(ax, figsize=(8, 1.2 + 0.35 * max(len(counts), 1)))
    ax.set_xlabel("trials")
    ax.set_title("outcome of every trial, per " + " × ".join(by))
    if counts.empty:
        return no_data(ax, "trials")
    y = np.arange(len(counts))
    left = np.zeros(len(counts))
    for outcome in counts.columns:
        widths = counts[outcome].to_numpy(float)
        ax.barh(y, widths, 0.7, left=left, color=outcome_color(outcome), label=outcome, edgecolor="white")
        left += widths
    totals = counts.sum(axis=1).to_numpy()
    for yi, total in zip(y, totals, strict=True):
        ax.text(total, yi, f" n={total}", ha="left", va="center", fontsize="x-small")
    ax.set_yticks(y, [_group_label(k, by) for k in counts.index], fontsize="small")
    ax.set_ylim(len(counts) - 0.5, -0.5)  # first condition on top
    ax.set_xlim(0, max(totals) * 1.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are counted
    ax.legend(fontsize="small", title="outcome", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def failure_table(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: n, failures (not updated), bricked, their rates and 95% Wilson intervals.

    ``failures`` counts every outcome but ``updated`` (a safe rejection included); ``bricked``
    counts the boards left without a bootable firmware.
    """
    flags = df.assign(_failed=failed(df), _bricked=df["outcome"].astype(str) == OutcomeKind.BRICKED)
    rows = []
    for key, group in flags.groupby(by, sort=True, dropna=False):
        keys = key if isinstance(key, tuple) else (key,)
        n, k, b = len(group), int(group["_failed"].sum()), int(group["_bricked"].sum())
        low, high = wilson_interval(k, n)
        b_low, b_high = wilson_interval(b, n)
        stats = {"n": n, "failures": k, "failure_rate": k / n, "ci_low": low, "ci_high": high}
        stats |= {"bricked": b, "bricked_rate": b / n, "bricked_ci_low": b_low, "bricked_ci_high": b_high}
        rows.append({**dict(zip(by, keys, strict=True)), **stats})
    columns = [*by, "n", "failures", "failure_rate", "ci_low", "ci_high"]
    columns += ["bricked", "bricked_rate", "bricked_ci_low", "bricked_ci_high"]
    return pd.DataFrame(rows, columns=columns)


def _rate_data(df: pd.DataFrame, kind: str | None) -> tuple[pd.DataFrame, str]:
    """The trials of one rate-fault kind plus the no-fault baseline (rate 0), and the kind."""
    rates = fault_rates(df)
    data = df.join(rates)
    kinds = sorted({k for k, r in zip(rates["fault_kind"], rates["fault_rate"], strict=True) if k in RATE_LABELS})
    if kind is None:
        if len(kinds) > 1:
            raise LabError(f"several rate faults in the frame ({', '.join(kinds)}): pass kind=")
        kind = kinds[0] if kinds else ""
    elif kind not in RATE_LABELS:
        raise LabError(f"unknown rate fault kind {kind!r}: one of {', '.join(RATE_LABELS)}")
    keep = (data["fault_kind"] == kind) | (data["fault_kind"] == "none")
    return (data[keep & np.isfinite(data["fault_rate"])] if kind else data.iloc[:0]), kind


def _rate_axes(
    ax: Axes | None, df: pd.DataFrame, kind: str | None, ylabel: str, title: str
) -> tuple[Axes, pd.DataFrame, str]:
    """Axes against a rate fault's intensity (its label on x; ``{what}`` in ``title``: the fault's name), the
    trials of that fault and its kind (as :func:`_rate_data`)."""
    ax = new_axes(ax)
    data, kind = _rate_data(df, kind)
    label = RATE_LABELS.get(kind, "fault rate")
    ax.set_xlabel(label)
    ax.set_ylabel(ylabel)
    ax.set_title(title.format(what=label.split(" (")[0]))
    return ax, data, kind


def _series(data: pd.DataFrame) -> list[tuple[str, pd.DataFrame, dict[str, Any]]]:
    """One series per size × mode × link of ``data``: its legend name, its trials and its look (colour
    per mode, line style per size, marker per link; the name says only what varies)."""
    links = sorted(str(v) for v in data["link"].unique())
    sizes = sorted(data["size"].unique()) if "size" in data else [None]
    out = []
    for size in sizes:
        for mode in sorted_modes(data["mode"]):
            for link in links:
                pick = (data["mode"] == mode) & (data["link"] == link)
                group = data[pick & (data["size"] == size)] if size is not None else data[pick]
                if group.empty:
                    continue
                parts = [mode, format_size(size) if len(sizes) > 1 else "", link if len(links) > 1 else ""]
                look = {"color": mode_color(mode), "marker": link_marker(link), "linestyle": size_linestyle(size)}
                out.append((", ".join(p for p in parts if p), group, look))
    return out


def plot_failure_probability(df: pd.DataFrame, ax: Axes | None = None, *, kind: str | None = None) -> Axes:
    """P(no update) and P(bricked) against a rate fault's intensity, per mode, with 95% Wilson bands.

    Filled markers: the update did not complete (any outcome but ``updated``); open markers: the
    board was bricked (drawn for a series that bricked at least once). One line per image size
    (its line style) × mode (its colour) × link (its marker). Trials without a fault are the rate-0
    point. ``kind`` picks the rate fault (``drops``, ``outages``, ``power``, ``bitflips``) when a
    frame holds several.
    """
    ax, data, _kind = _rate_axes(
        ax, df, kind, "probability per update", "P(no update) and P(bricked) vs {what}, 95% Wilson bands"
    )
    ax.set_ylim(-0.02, 1.02)
    if data.empty:
        return no_data(ax, "trials with a rate fault (drops:rate=R, power:p=P, …)")
    for name, group, look in _series(data):
        table = failure_table(group, ["fault_rate"])
        x = table["fault_rate"].to_numpy(float)
        ax.plot(x, table["failure_rate"], **look, label=f"{name}: no update")
        ax.fill_between(x, table["ci_low"], table["ci_high"], color=look["color"], alpha=0.15, linewidth=0)
        if table["bricked"].sum():
            ax.plot(
                x, table["bricked_rate"], **look, markerfacecolor="white", markersize=9, linewidth=1,
                label=f"{name}: bricked",
            )  # fmt: skip
            ax.fill_between(
                x, table["bricked_ci_low"], table["bricked_ci_high"], color=look["color"], alpha=0.1, hatch="//",
                linewidth=0,
            )  # fmt: skip
    ax.set_xlim(left=0)
    ax.legend(fontsize="small")
    return ax


def time_by_rate(df: pd.DataFrame, kind: str | None = None) -> pd.DataFrame:
    """Per size, mode, link and fault rate: updated trials' mean publish → new version time and its 95% t interval."""
    data, _ = _rate_data(df, kind)
    data = data.assign(_time=time_to_new_version(data))
    data = data[(data["outcome"] == OutcomeKind.UPDATED) & np.isfinite(data["_time"])]
    keys = ["size", "mode", "link", "fault_rate"]
    rows = []
    for key, group in data.groupby(keys, sort=True):
        mean, low, high = mean_interval(group["_time"])
        rows.append({**dict(zip(keys, key, strict=True)), "n": len(group), "mean_s": mean})
        rows[-1] |= {"ci_low": low, "ci_high": high, "median_s": float(group["_time"].median())}
    return pd.DataFrame(rows, columns=[*keys, "n", "mean_s", "ci_low", "ci_high", "median_s"])


def plot_time_vs_fault_rate(df: pd.DataFrame, ax: Axes | None = None, *, kind: str | None = None) -> Axes:
    """Time to new version of the updates that completed, against a rate fault's intensity.

    Each trial is a faint point; per size × mode (× link) the mean with its 95% t interval (error
    bars), joined by a line in the size's style. Faults that stop an update do not appear here (see
    :func:`plot_failure_probability`).
    """
    ax, data, kind = _rate_axes(
        ax, df, kind, "publish → new version (s)", "time to new version vs {what} (updated trials)"
    )
    data = data.assign(_time=time_to_new_version(data))
    data = data[(data["outcome"] == OutcomeKind.UPDATED) & np.isfinite(data["_time"])]
    if data.empty:
        return no_data(ax, "updated trials with a rate fault")
    for name, group, look in _series(data):
        ax.plot(group["fault_rate"], group["_time"], linestyle="none", marker=look["marker"], color=look["color"],
                alpha=0.25)  # fmt: skip
        rows = time_by_rate(df.loc[group.index], kind)
        mean = rows["mean_s"].to_numpy(float)
        low = np.nan_to_num(mean - rows["ci_low"].to_numpy(float), nan=0.0)
        high = np.nan_to_num(rows["ci_high"].to_numpy(float) - mean, nan=0.0)
        ax.errorbar(rows["fault_rate"], mean, yerr=np.vstack([low, high]), **look, capsize=3,
                    label=f"{name}: mean, 95% CI")  # fmt: skip
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return ax


def plot_completion_check(
    check: pd.DataFrame,
    ax: Axes | None = None,
    *,
    predict: Callable[..., float] | None = None,
) -> Axes:
    """Measured mean completion times under drops against the no-resume curve ``(1/λ + D)(e^{λτ} − 1)``.

    ``check`` is a comparison table as :func:`otalib.lab.analytic.compare_with_prediction` makes it
    (per size, mode and drop rate: ``tau_s``, ``reconnect_s``, ``measured_s`` with ``measured_low`` /
    ``measured_high``, ``predicted_s``, ``n`` and ``censored``). Per size × mode: the measured means with
    their 95% t intervals (points) and the curve for that ``tau`` and the mean ``D`` (line, in the size's
    style), from λ = 0 (``τ``). A cell where trials timed out (``censored``) has an open marker and
    ``k of n timed out`` beside it: its slowest realisations are missing, so its mean is biased low.
    A ``window_s`` column (the device's TCP window, :mod:`otalib.lab.analytic`) adds ``w`` to the curve:
    ``predict(λ, τ, D, w)``, or ``predict(λ, τ, D)`` without one; it defaults to the lab's formula.
    """
    ax = new_axes(ax)
    ax.set_xlabel(RATE_LABELS["drops"])
    ax.set_ylabel("publish → last byte (s)")
    ax.set_title("mean transfer time under drops: measured vs (1/λ + D)(e^(λτ) − 1)")
    if check.empty:
        return no_data(ax, "comparison rows")
    if predict is None:
        from otalib.lab.analytic import expected_completion_s as predict
    order = sorted_modes(check["mode"])
    groups = sorted(check.groupby(["size", "mode"]), key=lambda item: (item[0][0], order.index(str(item[0][1]))))
    censored_shown = False
    for (size, mode), group in groups:
        color, style = mode_color(str(mode)), size_linestyle(size)
        tau, reconnect = float(group["tau_s"].iloc[0]), float(group["reconnect_s"].mean())
        rates = np.linspace(0.0, float(group["drop_rate"].max()) * 1.1, 60)
        window = float(group["window_s"].iloc[0]) if "window_s" in group else 0.0  # the device's TCP window
        extra = (window,) if window > 0 else ()
        curve = [predict(float(r), tau, reconnect, *extra) for r in rates]
        name = f"{mode}, {format_size(size)}"
        fitted = f"τ = {tau:.2f} s, D = {reconnect:.2f} s" + (f", w = {window:.2f} s" if extra else "")
        ax.plot(rates, curve, color=color, linestyle=style, label=f"{name}: predicted ({fitted})")
        mean = group["measured_s"].to_numpy(float)
        low = np.nan_to_num(mean - group["measured_low"].to_numpy(float), nan=0.0)
        high = np.nan_to_num(group["measured_high"].to_numpy(float) - mean, nan=0.0)
        ax.errorbar(
            group["drop_rate"], mean, yerr=np.vstack([low, high]), fmt="o", color=color, capsize=3,
            label=f"{name}: measured mean, 95% CI",
        )  # fmt: skip
        ax.plot([0.0], [tau + window], marker="s", color=color, linestyle="none", label="_nolegend_")
        censored = group["censored"].to_numpy(int) if "censored" in group else np.zeros(len(group), int)
        for rate, value, k, n in zip(group["drop_rate"], mean, censored, censored + _counts(group), strict=True):
            if k <= 0:
                continue
            ax.plot([rate], [value], marker="o", markersize=9, markerfacecolor="white", color=color, linestyle="none",
                    label="_nolegend_" if censored_shown else "open: trials timed out, mean biased low")  # fmt: skip
            ax.annotate(f"{k} of {n} timed out", (rate, value), xytext=(6, -10), textcoords="offset points",
                        fontsize="x-small", color=color)  # fmt: skip
            censored_shown = True
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    last = sorted(range(len(labels)), key=lambda i: labels[i].startswith("open:"))  # the censoring note last
    ax.legend([handles[i] for i in last], [labels[i] for i in last], fontsize="small")
    return ax


def _counts(group: pd.DataFrame) -> np.ndarray:
    """The updated trials of each row of a comparison table (0 where it does not say)."""
    return group["n"].to_numpy(int) if "n" in group else np.zeros(len(group), int)


def rate_kinds(df: pd.DataFrame) -> list[str]:
    """The rate-fault kinds present in ``df`` (``drops``, ``power``…), sorted."""
    kinds = fault_rates(df)["fault_kind"] if len(df) else pd.Series(dtype=str)
    return sorted(k for k in set(kinds) if k in RATE_LABELS)


__all__ = [
    "condition_keys",
    "failure_table",
    "outcome_counts",
    "plot_completion_check",
    "plot_failure_probability",
    "plot_outcomes",
    "plot_time_vs_fault_rate",
    "rate_kinds",
    "time_by_rate",
]
