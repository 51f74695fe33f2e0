"""``otalab inspect`` judges a file as a device built in a given way would: text for every kind,
total fields, bounded reads, the device's verdict and error names, and exit codes gating stays safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otalib.errors import DeviceErrorCode
from otalib.firmware.demo import make_demo_image
from otalib.formats.ota import Rom, build_ota
from otalib.formats.package import pack
from otalib.inspect import DeviceBuild, inspect_bytes
from otalib.keys import DeviceKeys, load_key
from otalib.vocabulary import Decision

VECTORS = Path(__file__).parent / "vectors"
KEY = load_key(VECTORS / "demo.key")
OTHER = load_key(VECTORS / "other.key")
TS = 4004806641253  # timestamp of the signed vectors
IMAGE = make_demo_image("esp8266", "test", "4.3.2", size=3000)


def otalab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("OTALAB_CONFIG", None)
    for name in ("ENABLE_OTA_SIGNING", "ENABLE_OTA_ENCRYPTION", "ENABLE_OTA_ADVANCED", "FIRMWARE_BUILD_TIMESTAMP"):
        if name not in (env or {}):
            full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "otalib", *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=full_env
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def _files(tmp: Path) -> dict[str, Path]:
    """One file of every kind inspect recognises."""
    made = {
        "esp8266.bin": make_demo_image("esp8266", "test", "4.3.2"),
        "esp32.bin": make_demo_image("esp32", "test", "4.3.2"),
        "standard.sdp": pack(IMAGE, 3),
        "standard-byte.sdp": pack(IMAGE, 3, varint=False),
        "unknown.sdp": pack(b"\x00not firmware at all" * 4, 3),
        "plain.ota": build_ota([Rom(0x8000, IMAGE)], timestamp=TS),
        "signed.ota": build_ota([Rom(0x8000, IMAGE)], KEY, signed=True, timestamp=TS),
        "encrypted.ota": build_ota([Rom(0x8000, IMAGE)], KEY, encrypted=True, timestamp=TS),
        "advanced.sdp": pack(build_ota([Rom(0x8000, IMAGE)], KEY, signed=True, timestamp=TS), 5),
        "future.ota": build_ota([Rom(0x8000, IMAGE)], timestamp=2**64 - 1),
    }
    out = {}
    for name, data in made.items():
        out[name] = tmp / name
        out[name].write_bytes(data)
    real = VECTORS / "esp8266" / "rom0.bin"  # a real Sming v2 image (0xEA), when the vectors carry one
    if real.is_file():
        out["sming-v2.bin"] = real
    return out


@pytest.mark.parametrize("with_key", [False, True])
def test_text_and_json_for_every_kind(tmp_path, with_key):
    for name, path in _files(tmp_path).items():
        extra = ["-k", str(VECTORS / "demo.key")] if with_key else []
        text = otalab("inspect", str(path), *extra, cwd=tmp_path)
        no_traceback(text)
        assert text.returncode in (0, 1), (name, text.stderr)
        assert text.stdout.strip(), name
        as_json = otalab("inspect", str(path), *extra, "--json", cwd=tmp_path)
        no_traceback(as_json)
        report = json.loads(as_json.stdout)
        assert as_json.returncode == (0 if report["ok"] else 1), name
        assert as_json.returncode == text.returncode, name


def test_text_of_images_and_standard_packages(tmp_path):
    files = _files(tmp_path)
    image = otalab("inspect", str(files["esp8266.bin"]), cwd=tmp_path)
    assert image.returncode == 0 and "ESP image (esp8266" in image.stdout and "checksum valid" in image.stdout
    assert "segment @ 0x" in image.stdout and "app test version 4.3.2" in image.stdout
    assert "sha256 valid" in otalab("inspect", str(files["esp32.bin"]), cwd=tmp_path).stdout
    sdp = otalab("inspect", str(files["standard.sdp"]), cwd=tmp_path)
    assert sdp.returncode == 0, sdp.stderr
    assert "deployment package: patch 3" in sdp.stdout and "ESP image (esp8266" in sdp.stdout
    assert "device: applied" in sdp.stdout
    # a signing key means an advanced, signing device: it rejects a raw image (unless told standard mode)
    keyed = otalab("inspect", str(files["standard.sdp"]), "-k", str(VECTORS / "demo.key"), cwd=tmp_path)
    assert keyed.returncode == 1 and "device: rejected: InvalidFormat" in keyed.stdout
    assert "--mode standard" in keyed.stderr
    standard = ["--mode", "standard", "-k", str(VECTORS / "demo.key")]
    assert otalab("inspect", str(files["standard.sdp"]), *standard, cwd=tmp_path).returncode == 0


def test_timestamp_beyond_year_9999_is_shown_raw_and_out_of_range(tmp_path):
    path = _files(tmp_path)["future.ota"]
    text = otalab("inspect", str(path), cwd=tmp_path)
    no_traceback(text)
    assert f"build timestamp {2**64 - 1} (out of range" in text.stdout
    report = json.loads(otalab("inspect", str(path), "--json", cwd=tmp_path).stdout)
    assert report["timestamp"] == 2**64 - 1 and "out of range" in report["built"]
    # one changed header byte does it too: the top byte of the timestamp
    data = bytearray((VECTORS / "unsigned.ota").read_bytes())
    data[11] = 0xFF
    (tmp_path / "flipped.ota").write_bytes(bytes(data))
    flipped = otalab("inspect", "flipped.ota", cwd=tmp_path)
    no_traceback(flipped)
    assert "out of range" in flipped.stdout and flipped.returncode == 1  # and the MD5 no longer matches


def test_explain_layout_is_total_on_a_far_future_timestamp():
    from otalib.explain import layout

    fields = layout(build_ota([Rom(0x8000, IMAGE)], timestamp=2**64 - 1))
    (stamp,) = [f for f in fields if f.field == "build timestamp"]
    assert str(2**64 - 1) in stamp.value and "out of range" in stamp.value


def test_dev_zero_and_huge_inputs_are_refused_with_one_line(tmp_path):
    for args, needle in (
        (["inspect", "/dev/zero"], "/dev/zero is larger than 64 MiB"),
        (["mkfile", "-o", "x.ota", "--rom", "/dev/zero@0x8000"], "/dev/zero is larger than 16 MiB"),
        (["pack", "/dev/zero", "x.sdp", "5"], "/dev/zero is larger than 64 MiB"),
        (["inspect", str(VECTORS / "signed.ota"), "-k", "/dev/zero"], "/dev/zero is larger than 4096 bytes"),
    ):
        result = otalab(*args, cwd=tmp_path)
        no_traceback(result)
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)
    assert not list(tmp_path.iterdir())
    refused = otalab("inspect", "/dev/zero", "--json", cwd=tmp_path)
    assert json.loads(refused.stdout) == {
        "file": "/dev/zero",
        "kind": None,
        "ok": False,
        "error": "file /dev/zero is larger than 64 MiB: refusing it",
    }


# -- the device's verdict ----------------------------------------------------------------------------------


def test_unsigned_with_a_signing_key_is_not_verified(tmp_path):
    unsigned = str(VECTORS / "unsigned.ota")
    for extra in (
        ["-k", str(VECTORS / "demo.key")],
        ["--verify-key", str(VECTORS / "verify.key.bin")],
        ["--signing"],
    ):
        result = otalab("inspect", unsigned, *extra, cwd=tmp_path)
        no_traceback(result)
        assert result.returncode == 1, extra
        assert "verified (md5)" not in result.stdout
        assert "rejected: InvalidFormat" in result.stdout and "expects a signed file" in result.stdout
    configured = otalab("inspect", unsigned, cwd=tmp_path, env={"ENABLE_OTA_SIGNING": "1"})
    assert configured.returncode == 1 and "rejected: InvalidFormat" in configured.stdout
    (tmp_path / "otalab.toml").write_text("ENABLE_OTA_SIGNING = 1\n")
    assert otalab("inspect", unsigned, cwd=tmp_path).returncode == 1
    # a device built without signing takes it
    ok = otalab("inspect", unsigned, "-k", str(VECTORS / "demo.key"), "--no-signing", cwd=tmp_path)
    assert ok.returncode == 0 and "device: applied" in ok.stdout


def _judge(data: bytes, hint: str = "", **build) -> tuple[Decision, str | None, int | None]:
    report = inspect_bytes(data, hint=hint, build=DeviceBuild(**build))
    verdict = report.verdict
    assert verdict is not None
    assert report.ok is (verdict.outcome is Decision.APPLIED and bool(report.data.get("verified")))
    return verdict.outcome, verdict.error, verdict.patch_read


SIGNING = DeviceKeys(KEY.verify_key)
ENCRYPTING = DeviceKeys(KEY.verify_key, KEY.decrypt_key)


def test_device_builds_judge_as_the_virtual_board_would():
    signed = build_ota([Rom(0x8000, IMAGE)], KEY, signed=True, timestamp=TS)
    encrypted = build_ota([Rom(0x8000, IMAGE)], KEY, signed=True, encrypted=True, timestamp=TS)
    plain = build_ota([Rom(0x8000, IMAGE)], timestamp=TS)
    applied = (Decision.APPLIED, None, None)
    assert _judge(signed, keys=SIGNING, signing=True, encryption=False) == applied
    # an encrypted file on a signing-only firmware: its bytes are no magic
    assert _judge(encrypted, keys=ENCRYPTING, signing=True, encryption=False)[:2] == (
        Decision.REJECTED,
        "InvalidFormat",
    )
    # a plain file on an encrypting firmware
    rejected = _judge(signed, keys=ENCRYPTING, signing=True, encryption=True)
    assert rejected[:2] == (Decision.REJECTED, "DecryptionFailed")
    assert _judge(encrypted, keys=ENCRYPTING, signing=True, encryption=True) == applied
    # unsigned on a signing firmware
    assert _judge(plain, keys=SIGNING, signing=True)[:2] == (Decision.REJECTED, "InvalidFormat")
    # older than the running firmware
    older = _judge(signed, keys=SIGNING, signing=True, firmware_timestamp=TS + 1)
    assert older[:2] == (Decision.REJECTED, DeviceErrorCode.DowngradeNotAllowed.value)
    assert _judge(signed, keys=SIGNING, signing=True, firmware_timestamp=TS) == applied
    # another key
    assert _judge(signed, keys=DeviceKeys(OTHER.verify_key), signing=True)[:2] == (
        Decision.REJECTED,
        "VerificationFailed",
    )
    # no key to tell: not applied, not rejected
    assert _judge(signed, signing=True)[0] is Decision.UNKNOWN
    assert _judge(encrypted, signing=True, encryption=True)[0] is Decision.UNKNOWN


def test_packages_skipped_with_the_patch_the_device_reads():
    package = pack(build_ota([Rom(0x8000, IMAGE)], KEY, signed=True, timestamp=TS), 300)  # ac 02: reads 46
    assert _judge(package, keys=SIGNING, signing=True, current_patch=46) == (Decision.APPLIED, None, 46)
    assert _judge(package, keys=SIGNING, signing=True, current_patch=47) == (Decision.SKIPPED, None, 46)
    assert _judge(package, keys=SIGNING, signing=True, current_patch=47, profile="reference") == (
        Decision.APPLIED,
        None,
        300,
    )
    # equal patch: sming-6.1 re-installs, the reference device skips
    assert _judge(package, keys=SIGNING, current_patch=46)[0] is Decision.APPLIED
    assert _judge(package, keys=SIGNING, current_patch=300, profile="reference")[0] is Decision.SKIPPED


def test_standard_packages_and_unknown_payloads():
    assert _judge(pack(IMAGE, 3)) == (Decision.APPLIED, None, 3)
    # an advanced (ENABLE_OTA_ADVANCED) device rejects a raw image
    assert _judge(pack(IMAGE, 3), advanced=True, keys=SIGNING, signing=True)[:2] == (Decision.REJECTED, "InvalidFormat")
    junk = pack(b"\x00this is no firmware" * 8, 3)
    report = inspect_bytes(junk, hint=".sdp")
    assert report.kind == "sdp" and report.data["payload"]["kind"] == "unknown"
    assert any("not an ESP image" in w for w in report.warnings)
    assert not report.ok


def test_cli_verdicts_exit_codes_and_json_on_failure(tmp_path):
    files = _files(tmp_path)
    key = str(VECTORS / "demo.key")
    signed = str(files["signed.ota"])
    older = otalab("inspect", signed, "-k", key, "--firmware-timestamp", str(TS + 1), "--json", cwd=tmp_path)
    report = json.loads(older.stdout)
    assert older.returncode == 1 and report["device"]["outcome"] == "rejected"
    assert report["device"]["error"] == "DowngradeNotAllowed" and report["ok"] is False
    configured = otalab("inspect", signed, "-k", key, cwd=tmp_path, env={"FIRMWARE_BUILD_TIMESTAMP": str(TS + 1)})
    assert configured.returncode == 1 and "rejected: DowngradeNotAllowed" in configured.stdout
    enc = str(files["encrypted.ota"])
    for extra, outcome, error in (
        (["--no-encryption"], "rejected", "InvalidFormat"),
        (["--encryption", "--no-signing"], "applied", None),
    ):
        result = otalab("inspect", enc, "-k", key, *extra, "--json", cwd=tmp_path)
        got = json.loads(result.stdout)["device"]
        assert (got["outcome"], got["error"]) == (outcome, error), extra
        assert result.returncode == (0 if outcome == "applied" else 1)
    configured = otalab("inspect", signed, "-k", key, "--json", cwd=tmp_path, env={"ENABLE_OTA_ENCRYPTION": "1"})
    assert json.loads(configured.stdout)["device"]["error"] == "DecryptionFailed"
    adv = str(files["advanced.sdp"])
    skipped = otalab("inspect", adv, "-k", key, "--current-patch", "6", cwd=tmp_path)
    assert skipped.returncode == 1 and "device: skipped" in skipped.stdout and "reads patch 5" in skipped.stdout
    assert otalab("inspect", adv, "-k", key, "--current-patch", "5", cwd=tmp_path).returncode == 0
    unknown = otalab("inspect", str(files["unknown.sdp"]), "--json", cwd=tmp_path)
    got = json.loads(unknown.stdout)
    assert unknown.returncode == 1 and got["payload"]["kind"] == "unknown" and "warning" in unknown.stderr
    for bad in ("missing.ota", str(files["esp8266.bin"]) + "x"):
        failed = otalab("inspect", bad, "--json", cwd=tmp_path)
        assert failed.returncode == 1 and json.loads(failed.stdout)["ok"] is False
        assert len(failed.stderr.strip().splitlines()) == 1
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff\xfe definitely not firmware" * 3)
    failed = otalab("inspect", str(garbage), "--json", cwd=tmp_path)
    assert failed.returncode == 1 and "not an OTA file" in json.loads(failed.stdout)["error"]
    badkey = otalab("inspect", signed, "-k", str(garbage), "--json", cwd=tmp_path)
    assert badkey.returncode == 1 and json.loads(badkey.stdout)["ok"] is False


def test_the_real_sming_firmware_file_as_its_device_would(tmp_path):
    sming = VECTORS / "esp8266"
    if not (sming / "firmware.ota").is_file():
        pytest.skip("no real Sming build in the vectors")
    args = ["inspect", str(sming / "firmware.ota"), "--verify-key", str(sming / "verify.key.bin")]
    result = otalab(*args, cwd=tmp_path)
    assert result.returncode == 0 and "device: applied" in result.stdout, result.stdout + result.stderr
    other = otalab(
        "inspect", str(sming / "firmware.ota"), "--verify-key", str(VECTORS / "verify.key.bin"), cwd=tmp_path
    )
    assert other.returncode == 1 and "rejected: VerificationFailed" in other.stdout


# -- inspect and the virtual board agree ---------------------------------------------------------------------


def _board_cases():
    from board_helpers import KEY as BOARD_KEY
    from board_helpers import OTHER_KEY as BOARD_OTHER
    from board_helpers import T_RUNNING, signed_package, standard_package

    unsigned = pack(build_ota([Rom(0x8000, IMAGE)], timestamp=T_RUNNING + 1000), 6)
    tampered = bytearray(signed_package("4.3.6", 6))
    tampered[200] ^= 1
    packages = {
        "signed": signed_package("4.3.6", 6),
        "signed-encrypted": signed_package("4.3.6", 6, encrypted=True),
        "unsigned": unsigned,
        "older-file": signed_package("4.3.6", 6, timestamp=T_RUNNING - 1),
        "older-patch": signed_package("4.3.4", 4),
        "quirk-300-reads-46": signed_package("4.3.300", 300),
        "other-key": signed_package("4.3.6", 6, key=BOARD_OTHER),
        "tampered": bytes(tampered),
        "standard": standard_package("4.3.6", 6),
    }
    devices = {
        "signing": ("advanced", DeviceKeys(BOARD_KEY.verify_key)),
        "signing+encryption": ("advanced", DeviceKeys(BOARD_KEY.verify_key, BOARD_KEY.decrypt_key)),
        "md5-only": ("advanced", DeviceKeys()),
        "standard": ("standard", DeviceKeys()),
    }
    return packages, devices, T_RUNNING


@pytest.mark.parametrize("device_name", ["signing", "signing+encryption", "md5-only", "standard"])
def test_inspect_says_what_the_virtual_board_does(tmp_path, device_name):
    from board_helpers import deliver, make_flash

    from otalib.board.sim.device import Device

    packages, devices, t_running = _board_cases()
    mode, keys = devices[device_name]
    for name, package in packages.items():
        build = DeviceBuild(
            keys,
            signing=keys.verify is not None,
            encryption=keys.decrypt is not None,
            advanced=mode == "advanced",
            firmware_timestamp=t_running,
            current_patch=5,
        )
        with make_flash(tmp_path / f"{device_name}-{name}.bin", "4.3.5") as flash:
            device = Device(flash, build)  # the same build judges and runs
            device.boot()
            result = deliver(device, package)
        verdict = inspect_bytes(package, build=build).verdict
        assert verdict is not None
        assert (verdict.outcome.value, verdict.error) == (result.outcome, result.error), (device_name, name)
        if result.outcome == "skipped":
            assert verdict.patch_read == result.patch
