"""Tidy trial schema, run directory store and run metadata."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pandas as pd
import pytest
from lab_helpers import fake_trial, small_spec, synthetic_frame

from otalib.errors import LabError
from otalib.lab import store
from otalib.lab.metadata import DEPENDENCIES, collect_metadata
from otalib.lab.schema import (
    TRIAL_COLUMNS,
    TrialConfig,
    TrialResult,
    empty_frame,
    redact_url,
    validate_frame,
)


def test_row_has_every_column_and_round_trips_through_parquet(tmp_path):
    config = TrialConfig(campaign="c", size=4096, mode="signed", tls=True, rate_Bps=50_000, patch=7)
    result = fake_trial(config)
    row = result.to_row()
    assert list(row) == list(TRIAL_COLUMNS)
    assert row["trial_id"] == config.trial_id and row["outcome"] == "updated"
    path = store.write_trial(tmp_path, row)
    assert path == tmp_path / "trials" / f"{config.trial_id}.parquet"
    back = pd.read_parquet(path)
    assert list(back.columns) == list(TRIAL_COLUMNS)
    assert {c: str(t) for c, t in back.dtypes.items()} == {c: str(t) for c, t in validate_frame(back).dtypes.items()}
    got = back.iloc[0]
    assert got["size"] == 4096 and bool(got["tls"]) is True and got["patch"] == 7
    assert got["rate_Bps"] == 50_000.0 and got["mode"] == "signed"
    assert got["t_new_version"] == pytest.approx(result.phases["t_new_version"])
    assert got["started_at"] == pd.Timestamp(result.started_at)


def test_missing_phases_are_nan_and_duration_defaults_to_t_end():
    config = TrialConfig()
    result = TrialResult(config, phases={"t_build": 0.1, "t_end": 60.0}, outcome="timeout")
    row = result.to_row()
    assert math.isnan(row["t_pubcomp"]) and math.isnan(row["t_new_version"])
    assert row["duration_s"] == 60.0 and row["error"] == ""
    assert math.isnan(row["rate_Bps"]) and row["patch"] is None


def test_trial_id_is_stable_and_depends_on_parameters_and_repeat():
    a = TrialConfig(campaign="x", size=1000, rate_Bps=1000)
    assert a.trial_id == TrialConfig(campaign="renamed", size=1000, rate_Bps=1000.0).trial_id
    assert a.trial_id != TrialConfig(campaign="x", size=1000, rate_Bps=1000, repeat=1).trial_id
    assert a.trial_id != TrialConfig(campaign="x", size=1001, rate_Bps=1000).trial_id
    assert len(a.trial_id) == 16 and int(a.trial_id, 16) >= 0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mode": "zip"}, "mode"),
        ({"size": 0}, "size"),
        ({"size": True}, "size"),
        ({"device_profile": "esp-idf"}, "device_profile"),
        ({"rate_Bps": -5}, "rate_Bps"),
        ({"latency_ms": "slow"}, "latency_ms"),
        ({"tls": "yes"}, "tls"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"patch": -1}, "patch"),
    ],
)
def test_bad_config_is_one_line_lab_error(kwargs, needle):
    with pytest.raises(LabError) as info:
        TrialConfig(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("outcome", ["updated", "skipped", "rejected:VerificationFailed", "timeout", "bricked"])
def test_valid_outcomes(outcome):
    assert TrialResult(TrialConfig(), outcome=outcome).to_row()["outcome"] == outcome


@pytest.mark.parametrize("outcome", ["ok", "rejected", "rejected:", "timeout:x", ""])
def test_invalid_outcomes(outcome):
    with pytest.raises(LabError, match="outcome"):
        TrialResult(TrialConfig(), outcome=outcome)


def test_unknown_phase_is_refused():
    with pytest.raises(LabError, match="t_flashed"):
        TrialResult(TrialConfig(), phases={"t_flashed": 1.0})


def test_validate_frame_coerces_and_reports_problems():
    df = synthetic_frame()
    loose = df.astype({"size": "float64", "repeat": "object", "mode": "object"})
    loose["started_at"] = loose["started_at"].astype(str)
    loose["extra"] = 1
    fixed = validate_frame(loose)
    assert fixed.dtypes.to_dict() == {**df.dtypes.to_dict(), "extra": fixed["extra"].dtype}
    assert list(fixed.columns)[-1] == "extra"
    pd.testing.assert_frame_equal(fixed.drop(columns="extra"), df)

    with pytest.raises(LabError, match=r"lacks column.*t_pubcomp.*outcome"):
        validate_frame(df.drop(columns=["t_pubcomp", "outcome"]))
    bad = df.copy()
    bad["size"] = "big"
    with pytest.raises(LabError, match="'size' is not int64"):
        validate_frame(bad)
    bad = df.copy()
    bad.loc[0, "outcome"] = "exploded"
    with pytest.raises(LabError, match="exploded"):
        validate_frame(bad)
    with pytest.raises(LabError, match="DataFrame"):
        validate_frame([1, 2])
    assert list(validate_frame(empty_frame()).columns) == list(TRIAL_COLUMNS)


def test_broker_credentials_never_reach_the_row():
    config = TrialConfig(broker_backend="external", broker_url="mqtts://user:s3cret@broker.example:8883/a/test/u/4.3")
    row = config.to_row()
    assert row["broker_url"] == "mqtts://broker.example:8883/a/test/u/4.3"
    assert "s3cret" not in json.dumps(row)
    assert redact_url("mqtt://h/a") == "mqtt://h/a" and redact_url("") == ""


def test_read_trials_merges_parts_and_consolidated_once_each(tmp_path):
    df = synthetic_frame()
    for row in df.head(10).to_dict("records"):
        store.write_trial(tmp_path, row)
    assert store.done_trial_ids(tmp_path) == set(df["trial_id"].head(10))
    store.consolidate(tmp_path)
    for row in df.iloc[8:15].to_dict("records"):  # overlaps the consolidated file
        store.write_trial(tmp_path, row)
    back = store.read_trials(tmp_path)
    assert len(back) == 15 and back["trial_id"].is_unique
    assert set(back["trial_id"]) == set(df["trial_id"].head(15))
    assert back["started_at"].is_monotonic_increasing


def test_load_run_on_partial_run_and_errors(tmp_path):
    (tmp_path / "trials").mkdir()
    df, meta = store.load_run(tmp_path)  # started, nothing finished yet
    assert df.empty and meta == {} and list(df.columns) == list(TRIAL_COLUMNS)
    (tmp_path / "trials" / ".x.parquet.123.tmp").write_bytes(b"half")  # an unfinished atomic write
    row = fake_trial(small_spec().trials()[0]).to_row()
    store.write_trial(tmp_path, row)
    store.write_metadata(tmp_path, {"status": "interrupted"})
    df, meta = store.load_run(tmp_path)
    assert list(df["trial_id"]) == [row["trial_id"]] and meta["status"] == "interrupted"

    with pytest.raises(LabError, match="no such run directory"):
        store.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabError, match="not a run directory"):
        store.load_run(tmp_path / "empty")
    (tmp_path / "trials" / "deadbeef.parquet").write_bytes(b"not parquet")
    with pytest.raises(LabError, match=r"deadbeef\.parquet"):
        store.load_run(tmp_path)
    (tmp_path / "metadata.json").write_text("{oops")
    with pytest.raises(LabError, match="not valid JSON"):
        store.read_metadata(tmp_path)


def test_collect_metadata_fields():
    meta = collect_metadata({"broker_backend": "mosquitto", "broker_version": "2.0.11"})
    assert meta["otalib"] and meta["python"].count(".") == 2
    assert set(DEPENDENCIES) <= set(meta["dependencies"])
    assert meta["dependencies"]["pandas"] == pd.__version__
    assert meta["dependencies"]["paho-mqtt"].startswith("2.")
    assert meta["machine"]["cpu_count"] >= 1 and meta["machine"]["memory_bytes"] > 0
    assert meta["git"] is None or (len(meta["git"]["revision"]) == 40 and isinstance(meta["git"]["dirty"], bool))
    assert meta["broker_backend"] == "mosquitto" and meta["broker_version"] == "2.0.11"
    assert datetime.fromisoformat(meta["collected_at"]).tzinfo == timezone.utc
    json.dumps(meta, allow_nan=False)  # JSON-ready
