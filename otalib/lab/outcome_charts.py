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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

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


def outcome_counts(df: pd.DataFrame, by: tuple[str, ...] = ("fault", "mode")) -> pd.DataFrame:
    """Trials per outcome string (columns, in stack order) for each group of ``by`` (rows).

    Faults are ordered with ``none`` first, modes in chart order.
    """
    if df.empty:
        return pd.DataFrame()
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


def _group_label(key: object) -> str:
    """``drops:rate=0.5 · signed``: a condition's values (a rate fault without its seed: every trial has one)."""
    parts = key if isinstance(key, tuple) else (key,)
    return " · ".join(re.sub(r",seed=\d+", "", str(p)) for p in parts)


def plot_outcomes(df: pd.DataFrame, ax: Axes | None = None, *, by: tuple[str, ...] = ("fault", "mode")) -> Axes:
    """The outcome of every trial per condition (``by``): stacked horizontal bars of counts.

    Each bar is one condition (fault · mode by default, the no-fault baseline on top), its
    segments the trials that ended updated, skipped, rejected with each device error, timed
    out or bricked, each outcome in its fixed colour; ``n`` at the bar's end.
    """
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
    ax.set_yticks(y, [_group_label(k) for k in counts.index], fontsize="small")
    ax.set_ylim(len(counts) - 0.5, -0.5)  # first condition on top
    ax.set_xlim(0, max(totals) * 1.15)
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


def _series(data: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    links = sorted(str(v) for v in data["link"].unique())
    out = []
    for mode in sorted_modes(data["mode"]):
        for link in links:
            group = data[(data["mode"] == mode) & (data["link"] == link)]
            if len(group):
                out.append((mode, link, group))
    return out


def _name(mode: str, link: str, several_links: bool) -> str:
    return f"{mode} / {link}" if several_links else mode


def plot_failure_probability(df: pd.DataFrame, ax: Axes | None = None, *, kind: str | None = None) -> Axes:
    """P(no update) and P(bricked) against a rate fault's intensity, per mode, with 95% Wilson bands.

    Solid: the update did not complete (any outcome but ``updated``); dashed: the board was
    bricked (drawn for a mode that bricked at least once). Trials without a fault are the rate-0
    point. ``kind`` picks the rate fault (``drops``, ``outages``, ``power``, ``bitflips``) when a
    frame holds several.
    """
    ax = new_axes(ax)
    data, kind = _rate_data(df, kind)
    label = RATE_LABELS.get(kind, "fault rate")
    ax.set_xlabel(label)
    ax.set_ylabel("probability per update")
    ax.set_title(f"P(no update) and P(bricked) vs {label.split(' (')[0]}, 95% Wilson bands")
    ax.set_ylim(-0.02, 1.02)
    if data.empty:
        return no_data(ax, "trials with a rate fault (drops:rate=R, power:p=P, …)")
    several = data["link"].nunique() > 1
    for mode, link, group in _series(data):
        table = failure_table(group, ["fault_rate"])
        x = table["fault_rate"].to_numpy(float)
        color, marker = mode_color(mode), link_marker(link)
        name = _name(mode, link, several)
        ax.plot(x, table["failure_rate"], color=color, marker=marker, label=f"{name}: no update")
        ax.fill_between(x, table["ci_low"], table["ci_high"], color=color, alpha=0.2, linewidth=0)
        if table["bricked"].sum():
            ax.plot(
                x, table["bricked_rate"], color=color, marker=marker, markerfacecolor="white", markersize=9,
                linestyle="--", label=f"{name}: bricked",
            )  # fmt: skip
            ax.fill_between(
                x, table["bricked_ci_low"], table["bricked_ci_high"], color=color, alpha=0.1, hatch="//", linewidth=0
            )
    ax.set_xlim(left=0)
    ax.legend(fontsize="small")
    return ax


def time_by_rate(df: pd.DataFrame, kind: str | None = None) -> pd.DataFrame:
    """Per mode, link and fault rate: updated trials' mean publish → new version time and its 95% t interval."""
    data, _ = _rate_data(df, kind)
    data = data.assign(_time=time_to_new_version(data))
    data = data[(data["outcome"] == OutcomeKind.UPDATED) & np.isfinite(data["_time"])]
    rows = []
    for (mode, link, rate), group in data.groupby(["mode", "link", "fault_rate"], sort=True):
        mean, low, high = mean_interval(group["_time"])
        rows.append({"mode": mode, "link": link, "fault_rate": rate, "n": len(group), "mean_s": mean})
        rows[-1] |= {"ci_low": low, "ci_high": high, "median_s": float(group["_time"].median())}
    return pd.DataFrame(rows, columns=["mode", "link", "fault_rate", "n", "mean_s", "ci_low", "ci_high", "median_s"])


def plot_time_vs_fault_rate(df: pd.DataFrame, ax: Axes | None = None, *, kind: str | None = None) -> Axes:
    """Time to new version of the updates that completed, against a rate fault's intensity.

    Each trial is a faint point; per mode the mean with its 95% t interval (error bars), joined by
    a line. Faults that stop an update do not appear here (see :func:`plot_failure_probability`).
    """
    ax = new_axes(ax)
    data, kind = _rate_data(df, kind)
    label = RATE_LABELS.get(kind, "fault rate")
    ax.set_xlabel(label)
    ax.set_ylabel("publish → new version (s)")
    ax.set_title(f"time to new version vs {label.split(' (')[0]} (updated trials)")
    data = data.assign(_time=time_to_new_version(data))
    data = data[(data["outcome"] == OutcomeKind.UPDATED) & np.isfinite(data["_time"])]
    if data.empty:
        return no_data(ax, "updated trials with a rate fault")
    table = time_by_rate(df, kind)
    several = data["link"].nunique() > 1
    for mode, link, group in _series(data):
        color, marker = mode_color(mode), link_marker(link)
        ax.plot(group["fault_rate"], group["_time"], linestyle="none", marker=marker, color=color, alpha=0.25)
        rows = table[(table["mode"] == mode) & (table["link"] == link)]
        mean = rows["mean_s"].to_numpy(float)
        low = np.nan_to_num(mean - rows["ci_low"].to_numpy(float), nan=0.0)
        high = np.nan_to_num(rows["ci_high"].to_numpy(float) - mean, nan=0.0)
        ax.errorbar(
            rows["fault_rate"],
            mean,
            yerr=np.vstack([low, high]),
            color=color,
            marker=marker,
            capsize=3,
            label=f"{_name(mode, link, several)}: mean, 95% CI",
        )
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return ax


def plot_completion_check(
    check: pd.DataFrame,
    ax: Axes | None = None,
    *,
    predict: Callable[[float, float, float], float] | None = None,
) -> Axes:
    """Measured mean completion times under drops against the no-resume curve ``(1/λ + D)(e^{λτ} − 1)``.

    ``check`` is a comparison table as :func:`otalib.lab.analytic.compare_with_prediction` makes it
    (per size, mode and drop rate: ``tau_s``, ``reconnect_s``, ``measured_s`` with ``measured_low`` /
    ``measured_high``, ``predicted_s``). Per size × mode: the measured means with their 95% t
    intervals (points) and the curve for that ``tau`` and the mean ``D`` (line), from λ = 0 (``τ``).
    ``predict(λ, τ, D)`` defaults to the lab's formula.
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
    for (size, mode), group in groups:
        color = mode_color(str(mode))
        tau, reconnect = float(group["tau_s"].iloc[0]), float(group["reconnect_s"].mean())
        rates = np.linspace(0.0, float(group["drop_rate"].max()) * 1.1, 60)
        curve = [predict(float(r), tau, reconnect) for r in rates]
        name = f"{mode}, {format_size(size)}"
        ax.plot(
            rates, curve, color=color, linestyle=size_linestyle(size),
            label=f"{name}: predicted (τ = {tau:.2f} s, D = {reconnect:.2f} s)",
        )  # fmt: skip
        mean = group["measured_s"].to_numpy(float)
        low = np.nan_to_num(mean - group["measured_low"].to_numpy(float), nan=0.0)
        high = np.nan_to_num(group["measured_high"].to_numpy(float) - mean, nan=0.0)
        ax.errorbar(
            group["drop_rate"], mean, yerr=np.vstack([low, high]), fmt="o", color=color, capsize=3,
            label=f"{name}: measured mean, 95% CI",
        )  # fmt: skip
        ax.plot([0.0], [tau], marker="s", color=color, linestyle="none", label="_nolegend_")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return ax


def rate_kinds(df: pd.DataFrame) -> list[str]:
    """The rate-fault kinds present in ``df`` (``drops``, ``power``…), sorted."""
    kinds = fault_rates(df)["fault_kind"] if len(df) else pd.Series(dtype=str)
    return sorted(k for k in set(kinds) if k in RATE_LABELS)


__all__ = [
    "failure_table",
    "outcome_counts",
    "plot_completion_check",
    "plot_failure_probability",
    "plot_outcomes",
    "plot_time_vs_fault_rate",
    "rate_kinds",
    "time_by_rate",
]
