"""Small statistics for trial data: Wilson intervals and a throughput fit."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from otalib.errors import LabError
from otalib.lab.schema import TIMELINE_PHASES
from otalib.vocabulary import OutcomeKind

#: z for a two-sided 95% interval.
Z95 = 1.959964


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95% by default).

    ``n == 0`` gives ``(nan, nan)``: no trials, no information.
    """
    if n < 0 or k < 0 or k > n:
        raise LabError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # the interval always holds p (rounding could put a bound a hair past it at k=0 or k=n)
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def fit_throughput(sizes: Sequence[float], times: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line ``time = slope * size + intercept``.

    Returns ``(slope_s_per_byte, intercept_s, throughput_Bps)`` with
    ``throughput = 1 / slope``; non-finite points are dropped. Fewer than two
    distinct sizes give NaNs (a line needs two points); a non-positive slope
    gives a NaN throughput.
    """
    x = np.asarray(sizes, dtype=float)
    y = np.asarray(times, dtype=float)
    if x.shape != y.shape:
        raise LabError(f"fit_throughput needs as many sizes as times ({x.size} != {y.size})")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if np.unique(x).size < 2:
        return (math.nan, math.nan, math.nan)
    slope, intercept = np.polyfit(x, y, 1)
    throughput = 1.0 / slope if slope > 0 else math.nan
    return (float(slope), float(intercept), float(throughput))


def time_to_new_version(df: pd.DataFrame) -> pd.Series:
    """Seconds from publish start to the new version seen on the console (NaN if never)."""
    return (df["t_new_version"] - df["t_publish_start"]).astype(float)


def failed(df: pd.DataFrame) -> pd.Series:
    """True for each trial whose outcome is not ``updated``."""
    return df["outcome"].astype(str) != OutcomeKind.UPDATED


def phase_durations(df):
    """Seconds spent in each phase of :data:`otalib.lab.schema.TIMELINE_PHASES`, one row per trial.

    Missing phases (e.g. ``verify`` in standard mode) count as 0; the trial
    columns ``mode``, ``link``, ``size`` and ``outcome`` are kept for grouping.
    """
    out = pd.DataFrame(index=df.index)
    for label, start, end in TIMELINE_PHASES:
        begin = 0.0 if start is None else df[start]
        out[label] = (df[end] - begin).clip(lower=0).fillna(0.0)
    for column in ("mode", "link", "size", "outcome"):
        if column in df:
            out[column] = df[column]
    return out
