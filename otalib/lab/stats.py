"""Small statistics for trial data: Wilson intervals, a mean's t interval, a throughput fit, fault rates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from otalib.errors import LabError, OtaLabError
from otalib.lab.schema import DEVICE_PHASES, TIMELINE_PHASES
from otalib.net.faults import RateFault, RateKind, is_rate_fault
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


#: Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its 95% Student-t interval: ``(mean, low, high)``.

    One value has a mean but no interval (NaN bounds); none gives all NaN.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size == 1:
        return (mean, math.nan, math.nan)
    df = x.size - 1
    t = _T95[df - 1] if df <= len(_T95) else Z95
    half = t * float(x.std(ddof=1)) / math.sqrt(x.size)
    return (mean, mean - half, mean + half)


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


#: The axis label of each rate fault's intensity (drops: λ; outages: 1 / every; power: p; bit flips: the BER).
RATE_LABELS: dict[str, str] = {
    RateKind.DROPS.value: "drop rate λ (disconnects per s)",
    RateKind.OUTAGES.value: "outage rate (outages per s)",
    RateKind.POWER.value: "power-loss probability per update",
    RateKind.BITFLIPS.value: "bit error rate (per bit)",
}


def fault_rate(fault: str) -> tuple[str, float]:
    """A trial's fault as ``(kind, intensity)``: ``drops:rate=0.2,seed=1`` -> ``("drops", 0.2)``.

    ``none`` is ``("none", 0.0)`` (the baseline of every rate); a deterministic fault (``cut@0.5``)
    or a malformed one has a NaN intensity.
    """
    text = str(fault or "none")
    if text == "none":
        return ("none", 0.0)
    if not is_rate_fault(text):
        return (text.partition("@")[0], math.nan)
    try:
        parsed = RateFault.parse(text)
    except OtaLabError:
        return (text.partition(":")[0], math.nan)
    params = parsed.params
    intensity = {
        RateKind.DROPS: lambda: params["rate"],
        RateKind.OUTAGES: lambda: 1.0 / params["every"],
        RateKind.POWER: lambda: params["p"],
        RateKind.BITFLIPS: lambda: params["ber"],
    }[parsed.kind]()
    return (parsed.kind.value, float(intensity))


def fault_rates(df: pd.DataFrame) -> pd.DataFrame:
    """``fault_kind`` and ``fault_rate`` columns for each trial of ``df`` (see :func:`fault_rate`)."""
    pairs = [fault_rate(f) for f in df["fault"]] if len(df) else []
    return pd.DataFrame(pairs, index=df.index, columns=["fault_kind", "fault_rate"]).astype(
        {"fault_kind": "str", "fault_rate": "float64"}
    )


def device_phase_columns(df: pd.DataFrame) -> list[str]:
    """The device-time phase columns of ``df`` that hold at least one finite value (old runs: none)."""
    return [c for c in DEVICE_PHASES if c in df.columns and np.isfinite(df[c].to_numpy(float)).any()]


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
