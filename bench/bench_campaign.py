"""Benchmark: a campaign of 1 MB (10^6 B) signed updates, unthrottled, on a named broker.

The baseline is what a trial cannot avoid: the phases of the update itself (build, publish,
transfer, verify, switch, the device's restart delay and boot into the new version), summed
per trial. The printed ratio, wall time per trial / that sum, is the bench's own cost (board
start, retained clear, watching, data write) on top of the update; 1.0 would be no overhead.
Prints ratios and where the time goes; asserts nothing. ``--trials N`` for a shorter run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from otalib.lab.campaign import CampaignSpec
from otalib.lab.stats import phase_durations
from otalib.lab.store import read_metadata
from otalib.lab.trial import run_campaign_on_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    args = parser.parse_args()
    spec = CampaignSpec.from_dict(
        {
            "name": "bench",
            "repeats": args.trials,
            "fixed": {"size": 1_000_000, "mode": "signed", "broker_backend": args.broker},  # fits the 992 KiB slot
            "grid": {"fault": ["none"]},
        }
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        df = run_campaign_on_bench(spec, out, progress=False, resume=False)
        wall = time.monotonic() - start
        brokers = read_metadata(Path(out)).get("brokers", {})
    n = max(len(df), 1)
    updated = int((df["outcome"] == "updated").sum())
    phases = phase_durations(df).select_dtypes("number").drop(columns=["size"], errors="ignore").mean()
    unavoidable = float(phases.sum())
    per_trial = wall / n
    print(f"broker: {', '.join(f'{k}: {v}' for k, v in brokers.items()) or args.broker}")
    print(f"{len(df)} trials of 1 MB signed updates in {wall:.1f} s ({updated} updated), {per_trial:.3f} s per trial")
    print("mean seconds per phase (what a trial cannot avoid):")
    for name, value in phases.items():
        print(f"  {name:<10} {value:7.3f}")
    print(f"  {'sum':<10} {unavoidable:7.3f}")
    print(f"ratio wall per trial / unavoidable phases: {per_trial / unavoidable:.2f}x")
    accounted = float(df["t_end"].mean())
    print(f"  in trial (start -> outcome decided): {accounted:.3f} s; outside it: {per_trial - accounted:.3f} s")


if __name__ == "__main__":
    main()
