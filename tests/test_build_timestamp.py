"""The firmware build timestamp of a new virtual board: CLI, lab configuration, LabSession, campaign spec."""

from __future__ import annotations

import contextlib

import pytest

from otalib.config import load_config
from otalib.errors import ConfigError, LabError
from otalib.lab.campaign import CampaignSpec

STAMP = 4_004_872_437_378


def test_lab_configuration_key(tmp_path) -> None:
    assert load_config(env={}).FIRMWARE_BUILD_TIMESTAMP is None
    assert load_config(env={"FIRMWARE_BUILD_TIMESTAMP": str(STAMP)}).FIRMWARE_BUILD_TIMESTAMP == STAMP
    (tmp_path / "otalab.toml").write_text(f"FIRMWARE_BUILD_TIMESTAMP = {STAMP}\n")
    assert load_config(tmp_path / "otalab.toml", env={}).FIRMWARE_BUILD_TIMESTAMP == STAMP
    with pytest.raises(ConfigError, match="FIRMWARE_BUILD_TIMESTAMP"):
        load_config(env={"FIRMWARE_BUILD_TIMESTAMP": "yesterday"})


def test_campaign_spec_field() -> None:
    base = {"name": "t", "grid": {"size": [1024]}}
    assert CampaignSpec.from_dict(base).build_timestamp is None
    assert "build_timestamp" not in CampaignSpec.from_dict(base).to_dict()  # old specs stay as they were
    spec = CampaignSpec.from_dict({**base, "build_timestamp": STAMP})
    assert spec.build_timestamp == STAMP and spec.to_dict()["build_timestamp"] == STAMP
    for bad in (-1, "now", 1 << 64, True):
        with pytest.raises(LabError, match="build_timestamp"):
            CampaignSpec.from_dict({**base, "build_timestamp": bad})


def test_trial_board_takes_the_benchs_build_timestamp(tmp_path) -> None:
    from otalib.lab.schema import TrialConfig
    from otalib.lab.trial import Bench, Trial

    with Bench(tmp_path, build_timestamp=STAMP) as bench:
        trial = Trial(bench, TrialConfig(version="4.3.0"))
        with contextlib.ExitStack() as stack:
            board = trial._start_board(stack, "mqtt://127.0.0.1:1", None, None)
            board.expect("running", 10)
            assert board.device.build_timestamp == STAMP


@pytest.mark.parametrize("given", [STAMP, None])
def test_lab_session_board_build_timestamp(tmp_path, monkeypatch, given) -> None:
    from otalib.board.sim.build import DeviceBuild
    from otalib.lab.session import LabSession

    monkeypatch.setenv("FIRMWARE_BUILD_TIMESTAMP", str(STAMP + 1))
    monkeypatch.chdir(tmp_path)
    build = DeviceBuild(firmware_timestamp=given)
    with LabSession(workdir=tmp_path, build=build, backend="embedded") as session:
        session.monitor.expect("running", 20)
        assert session.board.device.build_timestamp == (given if given is not None else STAMP + 1)


def test_enable_ota_downgrade_configures_the_device_build(tmp_path) -> None:
    """Sming's ``ENABLE_OTA_DOWNGRADE`` (default 0): an older file is rejected as a downgrade unless it is 1,
    in the configuration's device build and in ``otalab inspect``'s judgement."""
    from process_helpers import run_otalab

    from otalib.firmware.demo import make_demo_image
    from otalib.keys import generate_key_file
    from otalib.update import make_update

    assert load_config(env={}).device_build(load_keys=False).allow_downgrade is False
    assert load_config(env={"ENABLE_OTA_DOWNGRADE": "1"}).device_build(load_keys=False).allow_downgrade is True
    with pytest.raises(ConfigError, match="ENABLE_OTA_DOWNGRADE"):
        load_config(env={"ENABLE_OTA_DOWNGRADE": "maybe"})
    key, _ = generate_key_file(tmp_path / "ota.key")
    image = make_demo_image("esp8266", "test", "4.3.2", size=4096)
    (tmp_path / "old.sdp").write_bytes(make_update(image, "signed", patch=2, key=key, timestamp=STAMP - 1).package)
    env = {"FIRMWARE_BUILD_TIMESTAMP": str(STAMP), "OTA_KEY": "ota.key", "ENABLE_OTA_ADVANCED": "1"}
    refused = run_otalab("inspect", "old.sdp", "--json", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "DowngradeNotAllowed" in refused.stdout, refused.stdout + refused.stderr
    allowed = run_otalab("inspect", "old.sdp", "--json", cwd=tmp_path, env={**env, "ENABLE_OTA_DOWNGRADE": "1"})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
