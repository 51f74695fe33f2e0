"""Benchmark: measured mean completion times under Poisson drops against the no-resume formula.

A small campaign: signed updates over a rate-limited link (``--rate`` B/s; or the device timing
model with ``--timing esp8266``), without faults (to measure ``tau``) and with ``drops:rate=R`` at
each ``--drops`` rate, ``--repeats`` times each, ``--parallel`` at once. For each rate it prints the
measured mean time to the last byte of the attempt that got through (95% t interval), the
prediction ``w + (1/R + D)(e^{R tau} - 1)`` (``otalib.lab.analytic``) from the measured ``tau``
(until the board's stack had the last byte), device window time ``w`` and reconnect time ``D``,
and the ratio measured/predicted with its 95% bootstrap interval: the check
holds when 1 is inside. ``replayed``: the mean of what the formula's process gives each trial's OWN drawn
drop schedule (with ``tau`` and that trial's measured drop costs): measured/replayed near 1 says the
trials follow the process, whatever the sampling noise of the realisations. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from otalib.lab.analytic import compare_with_prediction, drop_rate, replay_completion_s, trial_drops
from otalib.lab.campaign import CampaignSpec
from otalib.lab.store import read_fault_events
from otalib.lab.trial import run_campaign_on_bench
from otalib.vocabulary import TimingProfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="16KiB")
    parser.add_argument("--rate", type=float, default=10_000.0, help="link rate, B/s (0: unlimited)")
    parser.add_argument("--timing", choices=[t.value for t in TimingProfile], default="none")
    parser.add_argument("--drops", type=float, nargs="+", default=[0.3, 0.6], help="drop rates, per second")
    parser.add_argument("--repeats", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    fixed = {
        "size": args.size,
        "mode": "signed",
        "broker_backend": "mosquitto",
        "timeout_s": 120,
        "timing": args.timing,
    }
    if args.rate > 0:
        fixed |= {"rate_Bps": args.rate, "latency_ms": 0.0}
    spec = CampaignSpec.from_dict(
        {
            "name": "bench-analytic",
            "repeats": args.repeats,
            "parallel": args.parallel,
            "seed": args.seed,
            "fixed": fixed,
            "grid": {"fault": ["none", *(f"drops:rate={r:g}" for r in args.drops)]},
        }
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        df = run_campaign_on_bench(spec, out, progress=False, resume=False)
        wall = time.monotonic() - start
        events = read_fault_events(Path(out))
    link = f"{args.rate:g} B/s" if args.rate > 0 else "unlimited"
    print(f"{len(df)} trials of {args.size} signed, link {link}, timing {args.timing}, in {wall:.0f} s")
    print(f"outcomes: {df['outcome'].value_counts().to_dict()}")
    table = compare_with_prediction(df, events)
    triples = zip(table["drop_rate"], table["tau_s"], table["window_s"], strict=True)
    table["replayed_s"] = [_replayed(df, events, rate, tau, window) for rate, tau, window in triples]
    table["vs_replayed"] = table["measured_s"] / table["replayed_s"]
    columns = {
        "drop_rate": "R /s",
        "n": "n",
        "censored": "cens",
        "tau_s": "tau s",
        "window_s": "w s",
        "reconnect_s": "D s",
        "measured_s": "measured s",
        "measured_low": "lo",
        "measured_high": "hi",
        "predicted_s": "predicted s",
        "ratio": "ratio",
        "ratio_low": "ratio lo",
        "ratio_high": "ratio hi",
        "holds": "holds",
        "replayed_s": "replayed s",
        "vs_replayed": "meas/repl",
    }
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(table[list(columns)].rename(columns=columns).to_string(index=False))


def _replayed(df: pd.DataFrame, events: pd.DataFrame, rate: float, tau: float, window: float) -> float:
    """Mean of the no-resume process replayed on each updated trial's own drops at ``rate``."""
    trials = df[(df["fault"].map(drop_rate) == rate) & (df["outcome"] == "updated")]
    times = []
    for _, trial in trials.iterrows():
        drops = trial_drops(trial["fault"], trial["trial_id"], float(trial["timeout_s"]))
        mine = events[(events["trial_id"] == trial["trial_id"]) & (events["kind"] == "drop")] if len(events) else events
        costs = list(mine["duration_s"]) if len(mine) else [0.0]
        times.append(replay_completion_s(drops, tau, costs, window))
    return float(np.mean(times)) if times else float("nan")


if __name__ == "__main__":
    main()
