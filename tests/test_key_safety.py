"""Nothing lost: outputs never replace their inputs or a key, key exports refuse to replace keys,
racing keygens leave exactly one key, and a write that fails names the path and leaves nothing."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from otalib.errors import OutputError
from otalib.fileio import write_atomic

VECTORS = Path(__file__).parent / "vectors"
PYTHON = [sys.executable, "-m", "otalib"]


def otalab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTALAB_CONFIG"}
    return subprocess.run([*PYTHON, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


def refused(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    shutil.copy(VECTORS / "demo.key", tmp_path / "ota.key")
    os.chmod(tmp_path / "ota.key", 0o600)
    shutil.copy(VECTORS / "other.key", tmp_path / "new.key")
    shutil.copy(VECTORS / "rom0.bin", tmp_path / "app.bin")
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "args",
    [
        ["mkfile", "-o", "ota.key", "-k", "ota.key", "--rom", "app.bin@0x8000"],
        ["mkfile", "-o", "ota.key", "-k", "ota.key", "--rom", "app.bin@0x8000", "--force"],
        ["mkfile", "-o", "app.bin", "--rom", "app.bin@0x8000"],
        ["mkfile", "-o", "alias.bin", "--rom", "app.bin@0x8000"],  # a hard link to the ROM
        ["mkfile", "-o", "link.bin", "--rom", "app.bin@0x8000"],  # a symlink to the ROM
        ["pack", "app.bin", "app.bin", "5"],
        ["pack", "app.bin", "./alias.bin", "5"],
        ["keys", "rollover", "--old", "ota.key", "--new", "new.key", "-o", "ota.key", "--rom", "app.bin@0x8000"],
        ["keys", "rollover", "--old", "ota.key", "--new", "new.key", "-o", "new.key", "--rom", "app.bin@0x8000"],
        ["keys", "rollover", "--old", "ota.key", "--new", "new.key", "-o", "app.bin", "--rom", "app.bin@0x8000"],
    ],
)
def test_an_output_that_is_an_input_is_refused(lab, args):
    os.link(lab / "app.bin", lab / "alias.bin")
    (lab / "link.bin").symlink_to(lab / "app.bin")
    before = snapshot(lab)
    result = otalab(*args, cwd=lab)
    refused(result, "refusing to overwrite an input")
    assert snapshot(lab) == before  # nothing replaced, no backup, no temp file
    assert stat.S_IMODE((lab / "ota.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "command",
    [
        ["mkfile", "-o", "keep.key", "-k", "ota.key", "--rom", "app.bin@0x8000"],
        ["mkfile", "-o", "keep.key", "--rom", "app.bin@0x8000"],
        ["pack", "app.bin", "keep.key", "5"],
        ["keys", "rollover", "--old", "ota.key", "--new", "new.key", "-o", "keep.key", "--rom", "app.bin@0x8000"],
    ],
)
def test_a_key_file_is_replaced_only_with_force_and_backed_up(lab, command):
    shutil.copy(VECTORS / "other.key", lab / "keep.key")
    os.chmod(lab / "keep.key", 0o600)
    key = (lab / "keep.key").read_bytes()
    refused(otalab(*command, cwd=lab), "holds an OTA key")
    assert (lab / "keep.key").read_bytes() == key and not list(lab.glob("keep.key.*.bak"))
    result = otalab(*command, "--force", cwd=lab)
    assert result.returncode == 0, result.stderr
    (backup,) = lab.glob("keep.key.*.bak")
    assert backup.read_bytes() == key and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert "backed up" in result.stderr and key.decode().strip() not in result.stdout + result.stderr


@pytest.mark.parametrize(("output", "needle"), [("newdir/", "is a folder"), ("folder", "is a directory")])
def test_an_output_naming_a_folder_is_refused(lab, output, needle):
    (lab / "folder").mkdir()
    before = snapshot(lab)
    refused(otalab("pack", "app.bin", output, "5", cwd=lab), needle)
    assert snapshot(lab) == before and not (lab / "newdir").exists()


def test_keys_export_refuses_to_replace_other_keys(lab):
    out = lab / "keys"
    assert otalab("keys", "export", "-k", "ota.key", "-o", "keys", cwd=lab).returncode == 0
    first = snapshot(out)
    # the same key again changes nothing: allowed
    assert otalab("keys", "export", "-k", "ota.key", "-o", "keys", cwd=lab).returncode == 0
    assert snapshot(out) == first
    refused(otalab("keys", "export", "-k", "new.key", "-o", "keys", cwd=lab), "refusing to replace")
    assert snapshot(out) == first
    result = otalab("keys", "export", "-k", "new.key", "-o", "keys", "--force", cwd=lab)
    assert result.returncode == 0, result.stderr
    backups = sorted(out.glob("*.bak"))
    assert {b.name.split(".")[0] for b in backups} == {"verify", "decrypt"}
    for backup in backups:
        assert backup.read_bytes() == first[backup.name.split(".bak")[0].rsplit(".", 1)[0]]
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert (out / "decrypt.key.bin").read_bytes() != first["decrypt.key.bin"]


def test_eight_concurrent_keygens_exactly_one_wins(tmp_path):
    go = tmp_path / "go"
    starter = (
        "import os, sys, time\n"
        "import otalib.cli.keys\n"
        "from otalib.cli import main\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.0005)\n"
        "sys.exit(main(['keygen', '-o', 'same.key']))\n"
    )
    # every process imports otalib first, then waits for the same file: they all start together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", starter, str(go)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    go.touch()
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1, results
    for _code, out, err in losers:
        assert out == "" and "Traceback" not in err and "exists" in err and len(err.strip().splitlines()) == 1
    key = (tmp_path / "same.key").read_text()
    assert len(key) == 128 and stat.S_IMODE((tmp_path / "same.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "same.key"]  # no temp files left


def test_write_error_names_the_path(tmp_path):
    with pytest.raises(OutputError, match=r"/sys/otalab-test\.out"):
        write_atomic("/sys/otalab-test.out", b"x")


def _in_mount_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a private read-only / full mount")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -m is not permitted here")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("options", "reason"), [("ro,size=1m", "Read-only file system"), ("size=64k", "No space left on device")]
)
def test_cli_write_error_on_a_read_only_or_full_disk(lab, options, reason):
    (lab / "out").mkdir()
    python = " ".join(PYTHON)
    script = f"mount -t tmpfs -o {options} none out && {python} mkfile -o out/up.ota --rom app.bin@0x8000"
    if "size=64k" in options:
        big = lab / "big.bin"
        big.write_bytes(os.urandom(200_000))
        script = (
            f"mount -t tmpfs -o {options} none out && {python} mkfile -o out/up.ota --rom big.bin@0x8000; ls -A out"
        )
    result = _in_mount_namespace(script, lab)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "out/up.ota" in lines[0], result.stderr
    assert result.stdout.strip() == ""  # nothing written, no temp file left (ls -A prints nothing)
