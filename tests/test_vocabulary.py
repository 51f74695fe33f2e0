"""The typed vocabulary: what each update mode needs of a device, outcomes and their text form, device states."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from board_helpers import APP, KEY, CapturedConsole, firmware, make_flash

from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.device import Device
from otalib.board.sim.flash import LayoutName
from otalib.errors import DeviceErrorCode, LabError, UsageError
from otalib.keys import DeviceKeys
from otalib.lab.schema import TrialConfig, TrialResult, parse_outcome, validate_frame
from otalib.lab.store import load_run
from otalib.update import make_update
from otalib.vocabulary import Decision, DeviceState, FirmwareParser, Outcome, OutcomeKind, UpdateMode

EXAMPLE_RUN = Path(__file__).resolve().parents[1] / "data" / "runs" / "example"


@pytest.mark.parametrize(
    ("mode", "advanced", "signed", "encrypted"),
    [
        ("standard", 0, 0, 0),
        ("md5", 1, 0, 0),
        ("signed", 1, 1, 0),
        ("encrypted", 1, 0, 1),
        ("signed+encrypted", 1, 1, 1),
    ],
)
def test_each_mode_names_the_device_build_it_needs(mode, advanced, signed, encrypted):
    words = UpdateMode(mode)
    assert words.value == mode == f"{words}" and json.dumps(words) == json.dumps(mode)
    assert words.build_flags == {
        "ENABLE_OTA_ADVANCED": bool(advanced),
        "ENABLE_OTA_SIGNING": bool(signed),
        "ENABLE_OTA_ENCRYPTION": bool(encrypted),
    }
    assert words.parser is (FirmwareParser.ADVANCED if advanced else FirmwareParser.STANDARD)
    keys = words.device_keys(KEY)
    assert keys.verify == (KEY.verify_key if signed else None)
    assert keys.decrypt == (KEY.decrypt_key if encrypted else None)


def test_a_mode_that_needs_a_key_refuses_none_and_an_unknown_mode_names_the_choices():
    with pytest.raises(UsageError, match=r"^mode 'signed' needs a key$"):
        UpdateMode.SIGNED.device_keys(None)
    assert UpdateMode.MD5.device_keys(None).verify is None
    with pytest.raises(UsageError, match=r"^unknown update mode 'zip': one of standard, signed, .*md5$"):
        UpdateMode.parse("zip")


@pytest.mark.parametrize("mode", list(UpdateMode))
def test_a_device_built_as_the_mode_says_applies_that_modes_package(tmp_path, mode):
    """The mode's parser and keys are all a virtual device needs to take the package (and move to restart)."""
    build = DeviceBuild(app_id=APP, layout=LayoutName.HOST).accepting(mode, DeviceKeys.of(KEY))
    assert build.parser is mode.parser and build.accepts(mode) and build.update_mode is mode
    assert build.device_keys == mode.device_keys(KEY)
    with make_flash(tmp_path / "flash.bin", "4.3.5") as flash:  # the Host emulator's layout
        device = Device(flash, build, console=CapturedConsole().console)
        assert device.state is DeviceState.OFF
        device.boot()
        assert device.state is DeviceState.RUNNING
        update = make_update(firmware("4.3.6", patch=6), mode, patch=6, key=KEY, timestamp=10**13, build=build)
        device.on_message_start(len(update.package))
        assert device.state is DeviceState.RECEIVING
        device.on_message_data(update.package)
        result = device.on_message_end()
        assert (result.outcome, result.error) == (Decision.APPLIED, None), result.detail
        assert device.state is DeviceState.RESTART_PENDING
        assert device.status["state"] == "restart_pending" and type(device.status["state"]) is str
        assert result.to_dict()["outcome"] == "applied" and type(result.to_dict()["outcome"]) is str


def test_outcome_text_round_trips_and_only_a_rejection_names_an_error():
    for kind in OutcomeKind:
        assert Outcome.parse(kind.value) == Outcome(kind) and Outcome(kind).text == kind.value
    rejected = Outcome(OutcomeKind.REJECTED, DeviceErrorCode.VerificationFailed)
    assert rejected.text == str(rejected) == "rejected:VerificationFailed"
    assert eval(repr(rejected), {"Outcome": Outcome}) == rejected
    assert Outcome.parse("rejected:VerificationFailed") == rejected
    for bad in ("", "ok", "rejected:", "rejected:NoSuchError", "timeout:VerificationFailed", "updated:"):
        with pytest.raises(ValueError, match="not an outcome"):
            Outcome.parse(bad)
    with pytest.raises(ValueError, match="only a rejected outcome"):
        Outcome(OutcomeKind.UPDATED, DeviceErrorCode.Internal)


def test_the_frame_boundary_writes_and_reads_the_outcome_text():
    rejected = Outcome(OutcomeKind.REJECTED, DeviceErrorCode.DecryptionFailed)
    row = TrialResult(TrialConfig(mode="encrypted"), outcome=rejected).to_row()
    assert (row["outcome"], row["error"], row["mode"]) == ("rejected:DecryptionFailed", "DecryptionFailed", "encrypted")
    assert type(row["mode"]) is str and type(row["outcome"]) is str
    assert TrialResult(TrialConfig(), outcome="rejected:DecryptionFailed").outcome == rejected
    assert parse_outcome("bricked") == Outcome(OutcomeKind.BRICKED)
    for unrecorded in ("restarted", "rejected"):  # a trial records neither (a rejection has its error)
        with pytest.raises(LabError, match="invalid trial outcome"):
            parse_outcome(unrecorded)


def test_the_example_run_still_loads_and_every_outcome_parses():
    df, _meta = load_run(EXAMPLE_RUN)
    df = validate_frame(df)
    outcomes = {parse_outcome(text) for text in df["outcome"]}
    assert Outcome(OutcomeKind.REJECTED, DeviceErrorCode.VerificationFailed) in outcomes
    assert {o.kind for o in outcomes} <= set(OutcomeKind)
    assert set(df["mode"]) <= {m.value for m in UpdateMode}


def test_typed_parameters_keep_the_trial_ids_of_recorded_runs():
    """A trial's id hashes its parameters: the typed mode/profile must hash as their names (resume relies on it)."""
    df, _meta = load_run(EXAMPLE_RUN)
    names = {f.name for f in dataclasses.fields(TrialConfig)}
    for row in df.to_dict("records"):
        params = {name: value for name, value in row.items() if name in names}
        params.update(size=int(row["size"]), repeat=int(row["repeat"]), tls=bool(row["tls"]))
        params["patch"] = None if pd.isna(row["patch"]) else int(row["patch"])
        config = TrialConfig(**params)
        assert isinstance(config.mode, UpdateMode) and config.trial_id == row["trial_id"], row
