"""CLI: keygen, keys export/rollover, mkfile, pack, inspect — success and every bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "vectors"
TS = 4004806641253


def otalab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("OTALAB_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "otalib", *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=full_env
    )


def fails_cleanly(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_keygen_creates_0600_refuses_overwrite_and_backs_up(tmp_path):
    result = otalab("keygen", "-o", "ota.key", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "ota.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    content = key.read_text()
    assert len(content) == 128 and int(content, 16) >= 0
    assert content not in result.stdout + result.stderr  # never printed
    fails_cleanly(otalab("keygen", "-o", "ota.key", cwd=tmp_path), "exists")
    assert key.read_text() == content
    result = otalab("keygen", "-o", "ota.key", "--force", cwd=tmp_path)
    assert result.returncode == 0
    backups = list(tmp_path.glob("ota.key.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == content
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert key.read_text() != content


def test_keys_export(tmp_path):
    result = otalab("keys", "export", "-k", str(VECTORS / "demo.key"), "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/verify.key.bin").read_bytes() == (VECTORS / "verify.key.bin").read_bytes()
    decrypt = tmp_path / "out/decrypt.key.bin"
    assert decrypt.read_bytes() == (VECTORS / "decrypt.key.bin").read_bytes()
    assert stat.S_IMODE(decrypt.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("flags", "vector"),
    [(["-s"], "signed.ota"), ([], "signed.ota"), (["-s", "-e"], "signed_encrypted.ota")],
)
def test_mkfile_matches_reference(tmp_path, flags, vector):
    ts = json.loads((VECTORS / "manifest.json").read_text())["ota_files"][vector]["timestamp"]
    roms = ["--rom", f"{VECTORS / 'rom0.bin'}@0x2000", "--rom", f"{VECTORS / 'rom1.bin'}@0x108000"]
    args = ["mkfile", "-o", "out.ota", "-k", str(VECTORS / "demo.key"), *flags, "--timestamp", str(ts), *roms]
    result = otalab(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    built = (tmp_path / "out.ota").read_bytes()
    reference = (VECTORS / vector).read_bytes()
    assert len(built) == len(reference)
    if "-e" not in flags:
        assert built == reference
    check = otalab("inspect", "out.ota", "-k", str(VECTORS / "demo.key"), "--json", cwd=tmp_path)
    assert check.returncode == 0
    assert json.loads(check.stdout)["verified"] is True


def test_unsigned_mkfile_matches_reference(tmp_path):
    result = otalab(
        "mkfile", "-o", "u.ota", "--timestamp", "4004806641200", "--rom", f"{VECTORS / 'rom0.bin'}@0x2000", cwd=tmp_path
    )
    assert result.returncode == 0
    assert (tmp_path / "u.ota").read_bytes() == (VECTORS / "unsigned.ota").read_bytes()


def test_pack_and_quirk_warning(tmp_path):
    ota = str(VECTORS / "signed.ota")
    result = otalab("pack", ota, "p.sdp", "300", cwd=tmp_path)
    assert result.returncode == 0
    assert "46" in result.stderr and "warning" in result.stderr
    assert (tmp_path / "p.sdp").read_bytes() == (VECTORS / "pack_300_varint.sdp").read_bytes()
    result = otalab("pack", ota, "q.sdp", "7", "--no-varint", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert (tmp_path / "q.sdp").read_bytes() == (VECTORS / "pack_7_byte.sdp").read_bytes()
    result = otalab("pack", ota, "t.sdp", cwd=tmp_path)  # default: unix time
    info = json.loads(otalab("inspect", "t.sdp", "--json", "-k", str(VECTORS / "demo.key"), cwd=tmp_path).stdout)
    assert info["patch"] > 1_700_000_000 and info["device_patch"] < 700
    result = otalab("pack", ota, "c.sdp", cwd=tmp_path, env={"APP_VERSION_PATCH": "9"})
    assert json.loads(otalab("inspect", "c.sdp", "--json", cwd=tmp_path).stdout)["patch"] == 9


def test_inspect_json_fields(tmp_path):
    key = str(VECTORS / "demo.key")
    ota = json.loads(otalab("inspect", str(VECTORS / "signed_encrypted.ota"), "-k", key, "--json", cwd=tmp_path).stdout)
    for field in ("kind", "signed", "encrypted", "timestamp", "verified", "error", "roms"):
        assert field in ota
    assert ota["kind"] == "ota" and ota["signed"] and ota["encrypted"] and ota["verified"]
    assert {"address", "size", "sha256"} <= set(ota["roms"][0])
    result = otalab("inspect", str(VECTORS / "pack_300_varint.sdp"), "-k", key, "--json", cwd=tmp_path)
    sdp = json.loads(result.stdout)
    assert (sdp["kind"], sdp["patch"], sdp["varint"], sdp["device_patch"]) == ("sdp", 300, True, 46)
    assert sdp["payload"]["kind"] == "ota" and sdp["payload"]["verified"]
    assert result.returncode == 0
    bad = otalab("inspect", str(VECTORS / "signed.ota"), "-k", str(VECTORS / "other.key"), "--json", cwd=tmp_path)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"] == "VerificationFailed"
    nokey = otalab("inspect", str(VECTORS / "signed.ota"), cwd=tmp_path)
    assert nokey.returncode == 1 and "not checked" in nokey.stderr
    bins = otalab(
        "inspect",
        str(VECTORS / "signed_encrypted.ota"),
        "--verify-key",
        str(VECTORS / "verify.key.bin"),
        "--decrypt-key",
        str(VECTORS / "decrypt.key.bin"),
        cwd=tmp_path,
    )
    assert bins.returncode == 0 and "verified" in bins.stdout


def test_rollover(tmp_path):
    new = tmp_path / "new.key"
    assert otalab("keygen", "-o", str(new), cwd=tmp_path).returncode == 0
    from otalib.keys import load_key

    new_verify = load_key(new).verify_key
    (tmp_path / "fw.bin").write_bytes(b"\xe9" + bytes(100) + new_verify + bytes(100))
    result = otalab(
        "keys",
        "rollover",
        "--old",
        str(VECTORS / "demo.key"),
        "--new",
        str(new),
        "-o",
        "r.ota",
        "--rom",
        "fw.bin@0x8000",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["new_verify_key_found"] is True
    assert otalab("inspect", "r.ota", "-k", str(VECTORS / "demo.key"), cwd=tmp_path).returncode == 0
    assert otalab("inspect", "r.ota", "-k", str(new), cwd=tmp_path).returncode == 1
    (tmp_path / "old.bin").write_bytes(b"\xe9" + bytes(300))
    result = otalab(
        "keys",
        "rollover",
        "--old",
        str(VECTORS / "demo.key"),
        "--new",
        str(new),
        "-o",
        "r2.ota",
        "--rom",
        "old.bin@0x8000",
        cwd=tmp_path,
    )
    assert "does not contain the new verify.key.bin" in result.stderr


BAD_INPUTS = [
    (["mkfile", "-o", "x.ota", "--rom", "missing.bin@0x2000"], "not found"),
    (["mkfile", "-o", "x.ota", "--rom", "rom.bin"], "FILE@ADDRESS"),
    (["mkfile", "-o", "x.ota", "--rom", "rom.bin@0xZZ"], "bad address"),
    (["mkfile", "-o", "x.ota", "--rom", "rom.bin@-5"], "bad address"),
    (["mkfile", "-o", "x.ota", "-s", "--rom", "rom.bin@0"], "no key"),
    (["mkfile", "-o", "x.ota", "-k", "short.key", "--rom", "rom.bin@0"], "expected 128"),
    (["mkfile", "-o", "x.ota", "-k", "nothex.key", "--rom", "rom.bin@0"], "not hex"),
    (["mkfile", "-o", "x.ota", "-k", "missing.key", "--rom", "rom.bin@0"], "not found"),
    (["mkfile", "-o", "nodir/x.ota", "--rom", "rom.bin@0"], "no such folder"),
    (["pack", "rom.bin", "x.sdp", "256", "--no-varint"], "one byte"),
    (["pack", "missing.bin", "x.sdp", "5"], "not found"),
    (["pack", "empty.bin", "x.sdp", "5"], "empty"),
    (["inspect", "truncated.ota", "-k", "demo.key"], None),
    (["inspect", "garbage.bin"], "not an OTA file"),
    (["inspect", "empty.bin"], "empty"),
    (["inspect", "missing.ota"], "not found"),
    (["keys", "export", "-k", "short.key", "-o", "out"], "expected 128"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUTS)
def test_bad_input_gives_one_line_and_no_output_file(tmp_path, args, needle):
    (tmp_path / "rom.bin").write_bytes(b"\xe9" + bytes(64))
    (tmp_path / "short.key").write_text("ab" * 10)
    (tmp_path / "nothex.key").write_text("zz" * 64)
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "garbage.bin").write_bytes(b"hello, this is not firmware" * 3)
    (tmp_path / "demo.key").write_bytes((VECTORS / "demo.key").read_bytes())
    (tmp_path / "truncated.ota").write_bytes((VECTORS / "signed.ota").read_bytes()[:-10])
    before = set(os.listdir(tmp_path))
    result = otalab(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    if needle is None:  # inspect of a bad file: a report on stdout, exit 1
        assert "REJECTED: InvalidFormat" in result.stdout
        return
    fails_cleanly(result, needle)
    assert set(os.listdir(tmp_path)) == before  # no (partial) output file
