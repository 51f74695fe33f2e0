"""An analytic check: the mean completion time of a transfer without resume under Poisson drops.

Sming's OTA-over-MQTT protocol has no resume: a disconnect loses the message, and the board takes
it again, from its first byte, when it has reconnected and resubscribed (the retained message).

**The process.** A transfer needs ``tau`` seconds of connection. Drops come as a Poisson process
of rate ``lam`` per second of connection (``drops:rate=R``: its clock runs only while the board is
connected, :func:`otalib.net.faults.connected_seconds`). A drop ends the attempt; reconnecting
costs ``reconnect`` seconds (``D``) in which no drop falls; then the next attempt starts over.

**The mean.** Let ``X ~ Exp(lam)`` be the connection time to the next drop. An attempt succeeds
when ``X >= tau``, with probability ``p = exp(-lam*tau)``, so the number of failed attempts ``N``
is geometric with ``E[N] = (1 - p)/p = exp(lam*tau) - 1``. A failed attempt costs
``E[X | X < tau] + D``, where ``E[X | X < tau] = 1/lam - tau*p/(1 - p)`` (integrate
``x lam e^{-lam x}`` over ``[0, tau)`` and divide by ``1 - p``); the successful one costs ``tau``.
By Wald's identity (the failures' costs are i.i.d. and independent of ``N`` once conditioned on failing)::

    E[T] = tau + E[N] * (E[X | X < tau] + D)
         = tau + (e^{lam tau} - 1)/lam - tau + D (e^{lam tau} - 1)
         = (1/lam + D) (e^{lam tau} - 1)

which tends to ``tau`` as ``lam -> 0`` and grows as ``e^{lam tau}``: doubling the update size or the
drop rate squares the number of attempts.

**The device's window.** A drop loses what the network held for the board, not what its TCP stack
already holds (its receive window, a few KB): the connection must last until the stack has the last
byte (``tau``), and the device then spends ``w`` more seconds working through its window. A drop in
those ``w`` s costs nothing, so the successful attempt costs ``tau + w`` and::

    E[T] = w + (1/lam + D) (e^{lam tau} - 1)

On a link slower than the device ``w`` is ~0 (the board waits for each byte); on an unlimited link
with a slow device (the esp8266 timing model) it is the window's flash time, ~0.1 s, which the
exponential amplifies if ``tau`` wrongly includes it (measured/predicted ~0.7 at 2 drops per 1 s
transfer).

**What a campaign measures** (:func:`compare_with_prediction`):

- ``T``: per updated trial, ``t_last_byte - t_publish_start``: from the publish to the board's last
  OTA byte of the attempt that got through (the console's clock);
- ``tau``: over the trials of the same size and mode without faults (``fault: none``), the mean time
  from the publish to ``t_delivered``, when the board's TCP stack acknowledged the package's last byte
  (the link proxy watches its send queue); ``w``: the mean from there to ``t_last_byte``. Runs without
  ``t_delivered`` (older runs, no link proxy) take ``tau`` to ``t_last_byte`` and ``w = 0``;
- ``D``: the mean time from a drop to the package's first byte on the board's next connection (the
  fault side table's ``duration_s`` of the drops): the reconnect, the MQTT CONNECT/SUBSCRIBE exchange
  and the broker's resend. That exchange is connection time, so a drop can fall in it, which the
  formula does not count: it under-predicts by about a factor ``e^{lam H}`` of the failures' cost, for
  an exchange of ``H`` s (a few ms on a LAN link, ~0.1 s on the esp8266 timing model).

Trials that did not update (timed out after too many drops) have no ``T``: they are counted
(``censored``), and a campaign should set ``timeout_s`` well above the predicted mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from otalib.errors import LabError
from otalib.net.faults import RateFault, RateKind, is_rate_fault, trial_rng

#: Bootstrap resamples of :func:`compare_with_prediction`.
BOOTSTRAP = 2000


def expected_completion_s(rate: float, tau: Any, reconnect: Any, window: Any = 0.0) -> Any:
    """``E[T] = window + (1/rate + reconnect) (e^{rate tau} - 1)``: the mean time to complete a transfer
    needing ``tau`` s of connection under drops at ``rate`` per second of connection, each costing
    ``reconnect`` s, the device then working ``window`` s through its TCP window (see the module
    docstring); ``tau + window`` for ``rate`` 0. The arguments after ``rate`` may be arrays."""
    if rate < 0 or any(np.any(np.asarray(v) < 0) for v in (tau, reconnect, window)):
        raise LabError(f"rate, tau, reconnect and window must be >= 0, got {rate}, {tau}, {reconnect}, {window}")
    if rate == 0:
        total = np.asarray(tau, dtype=float) + np.asarray(window, dtype=float)
        return float(total) if np.ndim(total) == 0 else total
    value = np.asarray(window, dtype=float) + (1.0 / rate + np.asarray(reconnect, dtype=float)) * np.expm1(
        rate * np.asarray(tau, dtype=float)
    )
    return float(value) if np.ndim(value) == 0 else value


def replay_completion_s(
    drops_s: Sequence[float], tau: float, reconnect: float | Sequence[float], window: float = 0.0
) -> float:
    """The completion time the no-resume process gives for ONE realisation: drops at ``drops_s`` (seconds
    of connection, increasing), each costing ``reconnect`` s (one value, or one per drop), the device's
    window taking ``window`` s after the last byte. A trial's own schedule (:func:`trial_drops`) replayed
    so shows the model's error apart from the sampling noise."""
    costs = [reconnect] * len(drops_s) if isinstance(reconnect, (int, float)) else list(reconnect)
    elapsed = exposure = 0.0
    for index, drop in enumerate(drops_s):
        if drop - exposure >= tau:
            break
        cost = costs[index] if index < len(costs) and math.isfinite(costs[index]) else float(np.nanmean(costs))
        elapsed += drop - exposure + cost
        exposure = drop
    return elapsed + tau + window


def trial_drops(fault: str, trial_id: str, horizon_s: float) -> tuple[float, ...]:
    """The drop times (s of connection) a trial of ``drops:rate=R,seed=N`` drew (its seed and trial id)."""
    rate = RateFault.parse(fault)
    return rate.draw(trial_rng(rate.seed, trial_id), 1, horizon_s).drops_s


def drop_rate(fault: str) -> float | None:
    """The ``R`` of a ``drops:rate=R`` fault, 0 for ``none``, None for any other fault."""
    if not fault or fault == "none":
        return 0.0
    if not is_rate_fault(fault):
        return None
    parsed = RateFault.parse(fault)
    return parsed.params["rate"] if parsed.kind is RateKind.DROPS else None


def compare_with_prediction(
    trials: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    tau: float | None = None,
    reconnect: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (size, mode, drop rate) of a campaign's ``trials`` (its ``fault_events`` in ``events``): the
    measured mean completion time with its 95% t interval, the prediction of :func:`expected_completion_s`
    from the measured ``tau`` and ``D`` (or the ones given), and the ratio measured/predicted with a 95%
    bootstrap interval that also resamples the trials ``tau`` and ``D`` come from (``ratio_low``,
    ``ratio_high``; ``holds``: 1 lies inside it). See the module docstring for what is measured."""
    from otalib.lab.stats import mean_interval

    if trials.empty:
        raise LabError("no trials to compare")
    df = trials.assign(drop_rate=trials["fault"].map(drop_rate))
    df = df[df["drop_rate"].notna()].copy()
    df["T"] = df["t_last_byte"] - df["t_publish_start"]
    df["tau"], df["w"] = transfer_split(df)
    df = df[(df["outcome"] != "updated") | df["T"].notna()]
    rng = np.random.default_rng(seed)
    rows = []
    for (size, mode), group in df.groupby(["size", "mode"], sort=True):
        updated = group["outcome"] == "updated"
        free = group[(group["drop_rate"] == 0) & updated]
        base = free["tau"].to_numpy(dtype=float)
        window = float(free["w"].mean()) if len(free) else 0.0
        if tau is None and len(base) == 0:
            raise LabError(f"no fault-free updated trials of {size} B {mode} to measure tau: add fault none")
        for rate, at_rate in group[group["drop_rate"] > 0].groupby("drop_rate", sort=True):
            times = at_rate.loc[at_rate["outcome"] == "updated", "T"].to_numpy(dtype=float)
            gaps = np.array([reconnect]) if reconnect is not None else _reconnect_times(events, at_rate["trial_id"])
            if len(gaps) == 0:
                raise LabError(f"no drop with a reconnect at rate {rate:g}/s ({size} B {mode}) to measure D")
            tau_s = float(tau) if tau is not None else float(base.mean())
            if tau is not None:
                window = 0.0
            predicted = expected_completion_s(rate, tau_s, float(gaps.mean()), window)
            mean, low, high = mean_interval(times)
            ratio_low, ratio_high = _bootstrap_ratio(times, base, gaps, rate, tau, rng, window)
            rows.append(
                {
                    "size": size,
                    "mode": mode,
                    "drop_rate": rate,
                    "n": len(times),
                    "censored": len(at_rate) - len(times),
                    "tau_s": tau_s,
                    "window_s": window,
                    "reconnect_s": float(gaps.mean()),
                    "measured_s": mean,
                    "measured_low": low,
                    "measured_high": high,
                    "predicted_s": predicted,
                    "ratio": mean / predicted,
                    "ratio_low": ratio_low,
                    "ratio_high": ratio_high,
                }
            )
    result = pd.DataFrame(rows)
    if not result.empty:
        result["holds"] = (result["ratio_low"] <= 1.0) & (result["ratio_high"] >= 1.0)
    return result


def transfer_split(trials: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per trial: (seconds from the publish until the board's stack had the last byte, seconds the device
    then took to its last OTA byte); without ``t_delivered``: (to the last OTA byte, 0)."""
    total = trials["t_last_byte"] - trials["t_publish_start"]
    if "t_delivered" not in trials.columns:
        return total, total * 0.0
    tau = (trials["t_delivered"] - trials["t_publish_start"]).clip(upper=total)
    known = tau.notna() & total.notna()
    tau = tau.where(known, total)
    return tau, (total - tau).where(known, 0.0)


def _reconnect_times(events: pd.DataFrame | None, trial_ids: pd.Series) -> np.ndarray:
    """Every drop's cost (``duration_s``: until the package flows again) in the trials ``trial_ids``."""
    if events is None or events.empty:
        return np.array([])
    drops = events[(events["kind"] == "drop") & events["trial_id"].isin(set(trial_ids))]
    values = drops["duration_s"].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _bootstrap_ratio(
    times: np.ndarray,
    base: np.ndarray,
    gaps: np.ndarray,
    rate: float,
    tau: float | None,
    rng: np.random.Generator,
    window: float = 0.0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of measured mean / predicted mean, resampling the trials, the fault-free
    trials (tau, unless given) and the reconnect times (D)."""
    if len(times) < 2:
        return math.nan, math.nan
    means = rng.choice(times, (BOOTSTRAP, len(times))).mean(axis=1)
    taus = np.full(BOOTSTRAP, tau) if tau is not None else rng.choice(base, (BOOTSTRAP, len(base))).mean(axis=1)
    gap = rng.choice(gaps, (BOOTSTRAP, len(gaps))).mean(axis=1)
    ratios = means / expected_completion_s(rate, taus, gap, window)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return float(low), float(high)
