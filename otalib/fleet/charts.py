"""Charts of a fleet's results: each ``(FleetResult, ax=None) -> Axes``, no I/O.

:func:`rollout_curve` (fraction updated against time per group, the times to 50/90/99 %
marked), :func:`outcome_composition` (boards per outcome, stacked per group, one fixed
colour per outcome) and :func:`broker_load` (the broker's delivery rate to the fleet and
the boards connected, against time).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from otalib.fleet.results import FleetResult, time_to_fraction
from otalib.lab.palette import new_axes, no_data, outcome_color, sorted_outcomes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: The fractions marked on the rollout curve.
MARKED = (0.5, 0.9, 0.99)


def rollout_curve(result: FleetResult, ax: Axes | None = None) -> Axes:
    """Fraction of each group's boards updated against seconds from the publish (a step per board)."""
    ax = new_axes(ax)
    boards = result.boards
    ax.set_title("Rollout: fraction of boards updated")
    ax.set_xlabel("time from the publish (s)")
    ax.set_ylabel("fraction updated")
    if boards.empty:
        return no_data(ax, "boards")
    for i, (group, rows) in enumerate(boards.groupby("group", sort=True)):
        color = f"C{i % 10}"
        times = np.sort(rows["t_updated"].dropna().to_numpy())
        n = len(rows)
        xs = np.concatenate([[0.0], times])
        ys = np.arange(len(times) + 1) / n
        ax.step(xs, ys, where="post", color=color, label=f"{group} ({n} boards)")
        for fraction in MARKED:
            t = time_to_fraction(rows["t_updated"], fraction)
            if not math.isnan(t):
                ax.plot([t], [fraction], "o", color=color, markersize=4)
                label = f"{fraction:.0%}: {t:.1f} s"
                offset = (5, -10 - 9 * i)  # groups' labels one below the other
                ax.annotate(label, (t, fraction), textcoords="offset points", xytext=offset, fontsize=7, color=color)
    for fraction in MARKED:
        ax.axhline(fraction, color="0.85", linewidth=0.8, zorder=0)
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def outcome_composition(result: FleetResult, ax: Axes | None = None) -> Axes:
    """Boards per outcome in each group, stacked (fixed colours per outcome)."""
    ax = new_axes(ax)
    ax.set_title("Outcomes per group")
    ax.set_ylabel("boards")
    boards = result.boards
    if boards.empty:
        return no_data(ax, "boards")
    outcome = boards["outcome"].fillna("unknown")
    counts = pd.crosstab(boards["group"], outcome)
    bottom = np.zeros(len(counts))
    for name in sorted_outcomes(counts.columns):  # the campaign charts' order and colours, one palette
        values = counts[name].to_numpy()
        ax.bar(counts.index, values, bottom=bottom, label=name, color=outcome_color(name))
        bottom += values
    ax.set_xlabel("group")
    ax.legend(title="outcome", fontsize=8)
    return ax


def broker_load(result: FleetResult, ax: Axes | None = None, bin_s: float = 0.5) -> Axes:
    """What the broker delivered to the fleet (MB/s) and the boards connected, against time."""
    ax = new_axes(ax)
    ax.set_title("Broker: delivery to the fleet and connections")
    ax.set_xlabel("time from the publish (s)")
    ax.set_ylabel("delivered (MB/s)")
    load = result.load
    if load.empty:
        return no_data(ax, "load samples")
    rate_parts, conn_parts = [], []
    for _shard, rows in load.sort_values("t_s").groupby("shard"):
        t = rows["t_s"].to_numpy()
        rate = np.diff(rows["bytes_received"].to_numpy()) / np.maximum(np.diff(t), 1e-9)
        rate_parts.append(pd.Series(rate, index=np.floor(t[1:] / bin_s) * bin_s))
        conn_parts.append(pd.Series(rows["connected"].to_numpy(), index=np.floor(t / bin_s) * bin_s))
    rate = pd.concat(rate_parts).groupby(level=0).mean() if len(rate_parts) == 1 else _sum_bins(rate_parts)
    connected = _sum_bins(conn_parts, last=True)
    ax.plot(rate.index, rate.to_numpy() / 1e6, color="C0", label="delivered (MB/s)")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot(connected.index, connected.to_numpy(), color="C1", label="boards connected")
    twin.set_ylabel("boards connected")
    twin.set_ylim(bottom=0)
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    return ax


def _sum_bins(parts: list[pd.Series], last: bool = False) -> pd.Series:
    """Per-shard series on shared time bins: each shard's mean (or last) per bin, summed over shards."""
    per_shard = [p.groupby(level=0).last() if last else p.groupby(level=0).mean() for p in parts]
    frame = pd.concat(per_shard, axis=1).sort_index().ffill().fillna(0)
    return frame.sum(axis=1)
