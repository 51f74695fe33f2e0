"""The timing profile parameter and the device-time columns of the trial schema."""

from __future__ import annotations

import math

import pytest
from lab_helpers import synthetic_frame

from otalib.errors import LabError, UsageError
from otalib.lab.schema import DEVICE_PHASES, LATER_COLUMNS, TRIAL_COLUMNS, TrialConfig, TrialResult, validate_frame
from otalib.vocabulary import TimingProfile


def test_timing_is_a_validated_parameter_with_none_by_default():
    assert TrialConfig().timing is TimingProfile.NONE
    assert TrialConfig(timing="esp8266-160").timing is TimingProfile.ESP8266_160
    with pytest.raises(LabError) as info:
        TrialConfig(timing="esp8285")
    assert "timing" in str(info.value) and "esp32" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UsageError, match="esp8266-160"):
        TimingProfile.parse("fast")


def test_timing_none_keeps_old_trial_ids_and_a_profile_changes_them():
    plain = TrialConfig(size=1000)
    assert "timing" not in plain.params  # ids of runs made before timing existed stay valid
    assert plain.trial_id == TrialConfig(size=1000, timing="none").trial_id
    ids = {TrialConfig(size=1000, timing=timing).trial_id for timing in TimingProfile}
    assert len(ids) == len(TimingProfile)


def test_device_time_reaches_the_row_and_absent_phases_are_nan():
    row = TrialResult(TrialConfig(timing="esp32"), outcome="updated", device_time={"erase_s": 1.5}).to_row()
    assert row["timing"] == "esp32" and row["erase_s"] == 1.5
    assert all(math.isnan(row[name]) for name in DEVICE_PHASES if name != "erase_s")
    assert set(DEVICE_PHASES) <= set(TRIAL_COLUMNS)
    with pytest.raises(LabError, match="flash_s"):
        TrialResult(TrialConfig(), device_time={"flash_s": 1.0})


def test_an_old_frame_without_the_timing_columns_still_loads():
    old = synthetic_frame().drop(columns=["timing", *DEVICE_PHASES])
    df = validate_frame(old)
    assert (df["timing"] == "none").all() and df["receive_s"].isna().all()
    assert {"timing", *DEVICE_PHASES} <= set(LATER_COLUMNS)
