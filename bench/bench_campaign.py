"""Benchmark: a 100-trial campaign of 1 MB (10^6 B) signed updates, unthrottled (target < 2 minutes on 2 cores).

Prints trials per minute and where the time per trial goes (mean seconds per phase, plus
the bench's own overhead: board start, watching, clean-up). ``--trials N`` for a shorter run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from otalib.lab.campaign import CampaignSpec
from otalib.lab.stats import phase_durations
from otalib.lab.trial import run_campaign_on_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    spec = CampaignSpec.from_dict(
        {
            "name": "bench",
            "repeats": args.trials,
            "fixed": {"size": 1_000_000, "mode": "signed", "broker_backend": "auto"},  # 1 MB fits the 992 KiB slot
            "grid": {"fault": ["none"]},
        }
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        df = run_campaign_on_bench(spec, out, progress=False, resume=False)
        wall = time.monotonic() - start
    n = len(df)
    updated = int((df["outcome"] == "updated").sum())
    print(f"{n} trials of 1 MB signed updates in {wall:.1f} s: {n / wall * 60:.1f} trials/min, {updated} updated")
    print(
        f"target < 120 s for 100 trials: {'met' if wall * 100 / max(n, 1) < 120 else 'missed'} "
        f"({wall * 100 / max(n, 1):.1f} s per 100)"
    )
    phases = phase_durations(df).select_dtypes("number").drop(columns=["size"], errors="ignore").mean()
    per_trial = wall / max(n, 1)
    print(f"per trial: {per_trial:.3f} s wall; mean seconds per phase:")
    for name, value in phases.items():
        print(f"  {name:<10} {value:7.3f}")
    accounted = float(df["t_end"].mean())
    print(f"  {'in trial':<10} {accounted:7.3f}  (trial start -> outcome decided)")
    print(f"  {'overhead':<10} {per_trial - accounted:7.3f}  (board start/stop, retained clear, data write)")


if __name__ == "__main__":
    main()
