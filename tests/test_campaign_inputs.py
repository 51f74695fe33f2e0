"""A campaign's key and firmware (issue 14 items 1 and 6): spec and CLI inputs, checked before anything
starts; a real ROM and key on the virtual board; no demo image onto a real board; what metadata records."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from broker_helpers import Probe, mosquitto_broker  # noqa: F401
from click.testing import CliRunner

from otalib.cli import cli
from otalib.errors import LabError
from otalib.formats.ota import timestamp_from_datetime
from otalib.formats.package import pack
from otalib.formats.version import topic_for
from otalib.inspect import inspect_bytes
from otalib.keys import LabKey, generate_key_file, load_key
from otalib.lab import store
from otalib.lab.campaign import CampaignSpec
from otalib.lab.inputs import prepare_inputs
from otalib.lab.trial import run_campaign_on_bench

VECTORS = Path(__file__).parent / "vectors" / "esp8266"
ROM0 = VECTORS / "rom0.bin"
STAMP = 4_004_872_437_378  # a build timestamp (ms since 1900) after the virtual board's


def _campaign(tmp_path: Path, spec: dict, *args: str):
    """``otalab campaign SPEC -o tmp/run ARGS`` in-process; (exit code, stderr lines)."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    result = runner.invoke(cli, ["campaign", str(path), "-o", str(tmp_path / "run"), "--no-progress", *args])
    return result.exit_code, result.stderr.splitlines(), result


BAD_SPECS = [
    ({"roms": ["rom0.bin"], "firmware": {"patch": 7}}, "bad ROM 'rom0.bin': expected FILE@ADDRESS"),
    ({"roms": ["rom0.bin@0x2000"]}, "give the firmware's APP_VERSION_PATCH as firmware.patch"),
    ({"roms": ["rom0.bin@0x2000"], "firmware": {"patch": 7, "roms": ["x@1"]}}, "give the ROMs once"),
    ({"firmware": {"patch": 7}}, "firmware: give either 'roms'"),
    ({"firmware": {"project": "app", "roms": ["rom0.bin@0x2000"], "patch": 7}}, "firmware: give either 'roms'"),
    ({"firmware": {"roms": ["rom0.bin@0x2000"], "patch": 7, "version": 3}}, "firmware: unknown key(s) version"),
    ({"firmware": {"roms": ["rom0.bin@0x2000"], "patch": -1}}, "firmware.patch must be"),
    ({"roms": ["rom0.bin@0x2000"], "firmware": {"patch": 7}, "fixed": {"patch": 8}}, "fixed.patch 8 is not"),
    ({"roms": ["rom0.bin@0x2000"], "firmware": {"patch": 7}, "grid": {"patch": [7, 8]}}, "not in the grid"),
    ({"roms": ["a@0x2000", "b@0x102000"], "firmware": {"patch": 7}}, "standard mode publishes one raw image"),
    ({"allow_demo_image": "yes"}, "'allow_demo_image' must be true or false"),
    ({"key": ""}, "'key' must be the path of a key file"),
    ({"key": "missing.key"}, "campaign key: "),
    ({"key": "ab" * 64}, "'key' looks like key material, not a key file's path (not shown)"),
    ({"roms": ["missing.bin@0x2000"], "firmware": {"patch": 7}}, "missing.bin"),
    ({"fixed": {"board": "/dev/otalab-no-such-port", "patch": 7}}, "refusing to publish otalab's demo image"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_SPECS, ids=[m for _e, m in BAD_SPECS])
def test_bad_inputs_are_one_line_and_leave_nothing(tmp_path, extra, message) -> None:
    spec = {"name": "inputs", "grid": {"mode": ["standard"]}, "fixed": {"broker_backend": "embedded"}}
    extra = dict(extra)
    spec["fixed"].update(extra.pop("fixed", {}))
    spec["grid"].update(extra.pop("grid", {}))
    code, lines, result = _campaign(tmp_path, {**spec, **extra})
    assert code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("otalab: error: ") and message in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_real_board_is_refused_the_demo_image_before_its_port_is_opened(tmp_path, monkeypatch) -> None:
    """A pty stands for the board: nothing is written to it, the port is not even opened."""
    monkeypatch.chdir(tmp_path)  # no otalab.toml, no ota.key here
    for name in ("OTALAB_CONFIG", "OTA_KEY"):
        monkeypatch.delenv(name, raising=False)
    master, follower = os.openpty()
    try:
        port = os.ttyname(follower)
        spec = {"name": "real", "fixed": {"board": port, "patch": 7, "broker_backend": "embedded"}}
        code, lines, _ = _campaign(tmp_path, spec)
        assert code == 1 and lines == [
            f"otalab: error: campaign spec {tmp_path / 'spec.yaml'}: refusing to publish otalab's demo image "
            f"(no application code) to the real board {port}: give its firmware (roms: / firmware: in the spec, "
            "--rom) or allow_demo_image: true"
        ]
        assert not (tmp_path / "run").exists()
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):
            os.read(master, 1)  # nothing reached the board
        # a signed trial on a real board with its firmware but no key: OTA_KEY (missing here) is refused
        spec["fixed"]["mode"] = "signed"
        code, lines, _ = _campaign(tmp_path, {**spec, "roms": [f"{ROM0}@0x2000"]}, "--allow-demo-image")
        assert code == 1 and len(lines) == 1 and f"the real board {port} needs its key" in lines[0], lines
        assert not (tmp_path / "run").exists()
        pasted = LabKey.generate().to_hex().decode()  # OTA_KEY holding the key itself: refused, never shown
        monkeypatch.setenv("OTA_KEY", pasted)
        code, lines, _ = _campaign(tmp_path, {**spec, "roms": [f"{ROM0}@0x2000"]})
        assert code == 1 and len(lines) == 1 and "OTA_KEY (defaults+env) looks like key material" in lines[0], lines
        assert pasted[:32] not in lines[0] and not (tmp_path / "run").exists()
    finally:
        os.close(master)
        os.close(follower)


def test_cli_inputs_override_the_spec(tmp_path) -> None:
    spec = CampaignSpec.load(_spec(tmp_path, {"name": "x", "grid": {"mode": ["standard"]}}), overrides={})
    assert spec.firmware_spec() is None and not spec.allow_demo_image
    overrides = {"key": str(tmp_path / "k"), "roms": [f"{ROM0}@0x2000"], "allow_demo_image": True}
    spec = CampaignSpec.load(_spec(tmp_path, {"name": "x", "fixed": {"patch": 7}}), overrides=overrides)
    assert spec.key == str(tmp_path / "k") and spec.firmware_spec() == {"roms": [f"{ROM0}@0x2000"]}
    assert spec.to_dict()["allow_demo_image"] is True
    spec = CampaignSpec.load(_spec(tmp_path, {"name": "x"}), overrides={"roms": [f"{ROM0}@0x2000"], "patch": 0})
    assert spec.firmware_spec() == {"patch": 0, "roms": [f"{ROM0}@0x2000"]}
    # the spec's relative paths are its folder's
    spec = CampaignSpec.load(_spec(tmp_path, {"name": "x", "key": "ota.key"}))
    assert spec.resolve_path(spec.key) == tmp_path / "ota.key"
    plain = CampaignSpec.from_dict({"name": "x"}).to_dict()
    assert not set(plain) & {"key", "roms", "firmware", "allow_demo_image"}  # older specs keep their hash


def _spec(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _setup_firmware(tmp_path: Path) -> tuple[Path, LabKey]:
    shutil.copy(ROM0, tmp_path / "rom0.bin")
    key, _backup = generate_key_file(tmp_path / "ota.key")
    return tmp_path / "ota.key", key


def test_the_rom_timestamp_is_its_build_time_not_now(tmp_path) -> None:
    _setup_firmware(tmp_path)
    os.utime(tmp_path / "rom0.bin", (1_700_000_000, 1_700_000_000))
    spec = CampaignSpec.load(_spec(tmp_path, {"name": "x", "roms": ["rom0.bin@0x2000"], "fixed": {"patch": 7}}))
    firmware = prepare_inputs(spec).firmware
    assert firmware.build_timestamp == timestamp_from_datetime(datetime.fromtimestamp(1_700_000_000, timezone.utc))
    assert firmware.patch == 7 and firmware.roms[0].address == 0x2000


def test_a_campaign_publishes_the_given_rom_signed_with_the_given_key(tmp_path, mosquitto_broker) -> None:  # noqa: F811
    key_path, key = _setup_firmware(tmp_path)
    broker = mosquitto_broker()
    probe = Probe(broker).connect_ok()
    probe.subscribe(topic_for("test", "4.3.0"))
    spec_path = _spec(
        tmp_path,
        {
            "name": "given",
            "key": "ota.key",
            "roms": ["rom0.bin@0x2000"],
            "firmware": {"patch": 7, "build_timestamp": STAMP},
            "grid": {"mode": ["signed", "standard"]},
            "fixed": {"broker_url": broker.url, "timeout_s": 30},
        },
    )
    spec = CampaignSpec.load(spec_path)
    df = run_campaign_on_bench(spec, tmp_path / "run", progress=False)
    rows = df.set_index("mode")
    assert list(rows.loc[["signed", "standard"], "outcome"]) == ["updated", "updated"], df[["outcome", "notes"]]
    for updates in rows.loc[["signed", "standard"], "board_updates"]:  # the board applied the ROM at patch 7
        first, *again = updates.split(";")  # (a retained message taken again after the reboot is skipped)
        assert first == "applied@7" and all(u == "skipped@7" for u in again), updates

    packages = [m.payload for m in probe.settle() if m.payload]  # each trial's package, then its clear
    assert len(packages) == 2
    signed, standard = packages  # the grid's order
    report = inspect_bytes(signed, key=key)
    assert report.ok, report.to_dict()
    assert not inspect_bytes(signed, key=LabKey.generate()).ok  # signed with that key, not any
    assert ROM0.read_bytes() in signed and STAMP.to_bytes(8, "little") in signed
    assert standard == pack(ROM0.read_bytes(), 7)  # the raw ROM at its patch

    meta = store.read_metadata(tmp_path / "run")
    firmware = meta["firmware"]
    assert firmware["patch"] == 7 and firmware["build_timestamp"] == STAMP
    assert firmware["roms"] == [
        {
            "file": str(tmp_path / "rom0.bin"),
            "address": "0x2000",
            "size": ROM0.stat().st_size,
            "sha256": hashlib.sha256(ROM0.read_bytes()).hexdigest(),
        }
    ]
    assert meta["key"] == {"source": f"key {key_path}", "verify_key_sha256": hashlib.sha256(key.verify_key).hexdigest()}
    text = json.dumps(meta)
    secrets = (key.to_hex().decode(), key.seed.hex(), key.stream_key.hex(), key.signing_key.hex())
    assert not any(secret in text for secret in secrets)
    assert load_key(key_path) == key  # the key file is untouched


def test_metadata_of_demo_images(tmp_path) -> None:
    from otalib.lab.metadata import inputs_metadata

    spec = CampaignSpec.from_dict({"name": "demo", "grid": {"mode": ["signed"]}})
    meta = inputs_metadata(prepare_inputs(spec))
    assert meta["firmware"] == "otalib demo images (esp8266), one per trial"
    assert meta["key"]["source"].startswith("generated") and meta["allow_demo_image"] is False
    with pytest.raises(LabError, match="refusing to publish otalab's demo image"):
        CampaignSpec.from_dict({"name": "r", "fixed": {"board": "rfc2217://127.0.0.1:1", "patch": 3}})


UPGRADE_MAKEFILE = """\
FW = out/Esp8266/debug/firmware
all:
\tmkdir -p $(FW)
\techo "compiled with APP_VERSION=$(APP_VERSION) APP_VERSION_PATCH=$(APP_VERSION_PATCH)" > out/app.o
\tcp rom0.src $(FW)/rom0.bin
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_firmware_project_is_built_at_the_patch_it_publishes(tmp_path) -> None:
    """``firmware: {project: DIR}``: otalab build runs with APP_VERSION_PATCH; the patch and the build's
    time (its ROM file's) are the firmware's, recorded in the metadata."""
    from otalib.config import load_config
    from otalib.lab.metadata import inputs_metadata

    project = tmp_path / "Upgrade"
    project.mkdir()
    (project / "Makefile").write_text(UPGRADE_MAKEFILE)
    shutil.copy(ROM0, project / "rom0.src")
    os.utime(project / "rom0.src", (1_600_000_000, 1_600_000_000))  # cp gives the built ROM the build's time
    spec = CampaignSpec.load(_spec(tmp_path, {"name": "b", "firmware": {"project": "Upgrade", "patch": 9}}))
    before = timestamp_from_datetime(datetime.now(timezone.utc)) - 1000
    firmware = prepare_inputs(spec, load_config(env={})).firmware
    assert (project / "out/app.o").read_text().strip() == "compiled with APP_VERSION=4.3 APP_VERSION_PATCH=9"
    built = project / "out/Esp8266/debug/firmware/rom0.bin"
    assert [(rom.path, rom.address) for rom in firmware.roms] == [(built, 0x2000)]
    assert firmware.patch == 9 and firmware.build_timestamp >= before
    meta = inputs_metadata(prepare_inputs(spec, load_config(env={})))["firmware"]
    assert meta["patch"] == 9 and meta["roms"][0]["sha256"] == hashlib.sha256(ROM0.read_bytes()).hexdigest()
    assert meta["source"] == f"otalab build of {project} (APP_VERSION_PATCH=9)"
    # without firmware.patch the lab configuration's APP_VERSION_PATCH is built, else it is refused
    spec = CampaignSpec.load(_spec(tmp_path, {"name": "b", "firmware": {"project": "Upgrade"}}))
    assert prepare_inputs(spec, load_config(env={"APP_VERSION_PATCH": "11"})).firmware.patch == 11
    assert "APP_VERSION_PATCH=11" in (project / "out/app.o").read_text()
    with pytest.raises(LabError, match=r"^firmware.project: give firmware.patch \(or APP_VERSION_PATCH"):
        prepare_inputs(spec, load_config(env={}))


def test_the_cli_runs_a_campaign_with_the_key_and_rom_it_is_given(tmp_path, monkeypatch) -> None:
    key_path, key = _setup_firmware(tmp_path)
    monkeypatch.chdir(tmp_path)  # --key and --rom paths are the working directory's
    spec = {"name": "cli", "grid": {"mode": ["signed"]}, "fixed": {"broker_backend": "embedded", "timeout_s": 30}}
    code, _lines, result = _campaign(tmp_path, spec, "--key", "ota.key", "--rom", "rom0.bin@0x2000", "--patch", "6")
    assert code == 0 and "1 trials in" in result.stdout and "updated 1" in result.stdout, result.output
    meta = store.read_metadata(tmp_path / "run")
    assert meta["campaign"]["key"] == str(key_path) and meta["campaign"]["roms"] == [f"{tmp_path / 'rom0.bin'}@0x2000"]
    assert (
        meta["firmware"]["patch"] == 6
        and meta["key"]["verify_key_sha256"] == hashlib.sha256(key.verify_key).hexdigest()
    )
    # resuming: the same inputs resume (nothing left to run); another ROM or key is refused, nothing changes
    args = ("--key", "ota.key", "--rom", "rom0.bin@0x2000", "--patch", "6")
    code, _lines, result = _campaign(tmp_path, spec, *args)
    assert code == 0 and "1 trials in" in result.stdout, result.output
    before = (tmp_path / "run" / store.METADATA).read_bytes()
    (tmp_path / "rom0.bin").write_bytes(ROM0.read_bytes() + b"\0")
    code, lines, _ = _campaign(tmp_path, spec, *args)
    assert code == 1 and len(lines) == 1 and "was run with another firmware (now " in lines[0], lines
    shutil.copy(ROM0, tmp_path / "rom0.bin")
    generate_key_file(tmp_path / "ota.key", force=True)  # another key in the same file (the old one backed up)
    code, lines, _ = _campaign(tmp_path, spec, *args)
    assert code == 1 and len(lines) == 1 and "was run with another key" in lines[0], lines
    assert (tmp_path / "run" / store.METADATA).read_bytes() == before
