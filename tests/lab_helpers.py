"""Synthetic trials for the lab tests: a deterministic FAKE runner (no board, no broker).

What the lab tests check is the campaign/data/chart machinery, not a device; the
fake runner derives every timestamp from the configuration alone.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pandas as pd

from otalib.lab.campaign import CampaignSpec
from otalib.lab.schema import TrialConfig, TrialResult

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
_OVERHEAD = {"standard": 0.10, "signed": 0.15, "encrypted": 0.20, "signed+encrypted": 0.25}


def fake_trial(config: TrialConfig) -> TrialResult:
    """A deterministic synthetic trial: time grows with size / rate; faults fail some trials."""
    rate = 200_000.0 if math.isnan(config.rate_Bps) else config.rate_Bps
    transfer = config.size / rate
    phases: dict[str, float | None] = {"t_build": 0.2, "t_publish_start": 0.3}
    phases["t_pubcomp"] = 0.3 + transfer + config.latency_ms / 1000
    phases["t_first_byte"] = 0.31 + config.latency_ms / 1000
    phases["t_last_byte"] = phases["t_first_byte"] + transfer
    outcome = "updated"
    if config.fault == "corrupt" and config.mode != "standard":
        outcome = "rejected:VerificationFailed"
    elif config.fault == "corrupt":
        outcome = "bricked"
    elif config.fault == "drop" and config.repeat % 2 == 0:
        outcome = "timeout"
    if outcome == "updated":
        phases["t_verified"] = phases["t_last_byte"] + _OVERHEAD[config.mode]
        phases["t_switched"] = phases["t_verified"] + 0.01
        phases["t_restart"] = phases["t_switched"] + 1.0
        phases["t_new_version"] = phases["t_restart"] + 0.5 + 0.01 * config.repeat
        phases["t_end"] = phases["t_new_version"]
    else:
        phases["t_end"] = config.timeout_s if outcome == "timeout" else phases["t_last_byte"] + 0.1
    return TrialResult(
        config=config,
        phases=phases,
        outcome=outcome,
        bytes=config.size if outcome != "timeout" else config.size // 2,
        throughput_Bps=config.size / transfer,
        started_at=T0 + timedelta(seconds=100 * config.repeat + config.size / 1000),
    )


def small_spec(**overrides) -> CampaignSpec:
    """2 sizes × 2 modes × 2 faults × 3 repeats = 24 trials."""
    data = {
        "name": "synthetic",
        "repeats": 3,
        "fixed": {"link": "wifi", "timeout_s": 5},
        "grid": {"size": ["16KiB", "64KiB"], "mode": ["standard", "signed"], "fault": ["none", "corrupt"]},
        "links": {"wifi": {"rate_Bps": 100_000, "latency_ms": 20}},
    }
    data.update(overrides)
    return CampaignSpec.from_dict(data)


def synthetic_frame(spec: CampaignSpec | None = None) -> pd.DataFrame:
    """The rows the fake runner gives for every trial of ``spec`` (validated)."""
    from otalib.lab.schema import validate_frame

    spec = spec or small_spec()
    return validate_frame(pd.DataFrame([fake_trial(c).to_row() for c in spec.trials()]))
