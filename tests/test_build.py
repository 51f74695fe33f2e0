"""``otalab build``: the project's own make, version variables, ROM discovery, no-toolchain path."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from otalib.cli import cli
from otalib.errors import BuildError, InputError, UsageError
from otalib.firmware.build import build_command, find_roms, read_partition_table, run_build
from otalib.firmware.demo import make_demo_image

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

FW = "out/Esp8266/debug/firmware"

MAKEFILE = f"""\
all:
\tmkdir -p {FW}
\tcp rom0.src {FW}/rom0.bin
\tcp rom1.src {FW}/rom1.bin
\tcp rom0.src {FW}/rboot.bin
\tprintf 'not an image' > {FW}/spiff_rom.bin
\techo "APP_VERSION=$(APP_VERSION) APP_VERSION_PATCH=$(APP_VERSION_PATCH)" > out/vars.txt
\techo "env $$APP_VERSION $$APP_VERSION_PATCH" >> out/vars.txt
"""


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fake firmware project whose Makefile 'builds' two ROMs by copying demo images."""
    folder = tmp_path / "fw"
    folder.mkdir()
    (folder / "Makefile").write_text(MAKEFILE)
    (folder / "rom0.src").write_bytes(make_demo_image("esp8266", "test", "4.3.5", size=4096))
    (folder / "rom1.src").write_bytes(make_demo_image("esp8266", "test", "4.3.5", size=4096, seed=1))
    return folder


def partition_entry(label: str, offset: int, size: int, ptype: int = 0, subtype: int = 0x10) -> bytes:
    return struct.pack("<2sBBII16sI", b"\xaa\x50", ptype, subtype, offset, size, label.encode(), 0)


def test_run_build_passes_version_and_finds_roms(project: Path) -> None:
    result = run_build(project, "make", app_version="4.3", patch=5)
    assert result.ok, result.log_tail
    assert result.command == ["make", "APP_VERSION=4.3", "APP_VERSION_PATCH=5"]
    assert (project / "out/vars.txt").read_text().splitlines() == [
        "APP_VERSION=4.3 APP_VERSION_PATCH=5",
        "env 4.3 5",
    ]
    roms = {rom.slot: rom for rom in result.roms}
    assert sorted(roms) == ["rom0", "rom1"]  # bootloader and non-images left out
    assert (roms["rom0"].address, roms["rom1"].address) == (0x2000, 0x102000)  # a real ESP8266 (protocol.md §4)
    assert roms["rom0"].address_source == "default"
    assert roms["rom0"].path == project / FW / "rom0.bin"
    assert (roms["rom0"].arch, roms["rom0"].config) == ("Esp8266", "debug")
    assert roms["rom0"].info is not None and roms["rom0"].info.app_version == "4.3.5"


def test_addresses_from_partition_table(project: Path) -> None:
    run_build(project)
    table = partition_entry("rom0", 0x2000, 0xF8000) + partition_entry("rom1", 0x102000, 0xF8000)
    table += partition_entry("spiffs0", 0x200000, 0xC0000, ptype=1, subtype=0x82) + b"\xff" * 32
    (project / FW / "partitions.bin").write_bytes(table)
    assert read_partition_table(table) == {"rom0": 0x2000, "rom1": 0x102000}
    roms = {rom.slot: rom for rom in find_roms(project)}
    assert (roms["rom0"].address, roms["rom1"].address) == (0x2000, 0x102000)
    assert roms["rom1"].address_source == "partitions"


def test_addresses_and_names_from_hwconfig_json(tmp_path: Path) -> None:
    firmware = tmp_path / "out/Esp32/release/firmware"
    firmware.mkdir(parents=True)
    (firmware / "app.bin").write_bytes(make_demo_image("esp32", "test", "1.0.0"))
    hwconfig = {"partitions": {"factory": {"address": "0x20000", "filename": "$(TARGET_BIN)/app.bin"}}}
    (firmware / "hwconfig.json").write_text(json.dumps(hwconfig))
    [rom] = find_roms(tmp_path)
    assert (rom.slot, rom.address, rom.address_source) == ("factory", 0x20000, "partitions")
    assert rom.info is not None and rom.info.chip == "esp32"
    (firmware / "hwconfig.json").unlink()
    [rom] = find_roms(tmp_path)
    assert (rom.slot, rom.address, rom.address_source) == ("app", 0x10000, "default")


def test_find_roms_without_out_folder(tmp_path: Path) -> None:
    assert find_roms(tmp_path) == []


def test_build_command_variables() -> None:
    assert build_command("make -j2", "1.2", 0) == (
        ["make", "-j2", "APP_VERSION=1.2", "APP_VERSION_PATCH=0"],
        {"APP_VERSION": "1.2", "APP_VERSION_PATCH": "0"},
    )
    argv, env = build_command("./build.sh --fast", "1.2", None)  # not make: environment only
    assert argv == ["./build.sh", "--fast"] and env == {"APP_VERSION": "1.2"}
    with pytest.raises(UsageError):
        build_command("make", "1.2.3", None)
    with pytest.raises(UsageError):
        build_command("make", None, -1)
    with pytest.raises(UsageError):
        build_command("", None, None)


def test_run_build_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        run_build(tmp_path / "nope")
    with pytest.raises(BuildError, match=r"no firmware toolchain found .*otalab image demo"):
        run_build(tmp_path, "otalab-no-such-make-program")


def test_failed_build_is_a_result(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("all:\n\techo compiling\n\tfalse\n")
    result = run_build(tmp_path)
    assert not result.ok and result.returncode != 0
    assert "compiling" in result.log_tail
    assert not result.toolchain_missing


def test_missing_cross_compiler_is_recognised(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("all:\n\totalab-test-xtensa-lx106-elf-gcc -c app.c\n")
    result = run_build(tmp_path)
    assert not result.ok and result.toolchain_missing


# --------------------------------------------------------------------------- CLI


def test_cli_build_human(project: Path) -> None:
    result = invoke("build", "--project", str(project), "--app-version", "4.3", "--patch", "7")
    assert result.exit_code == 0, result.output
    assert "rom0 @ 0x2000" in result.output and "rom1 @ 0x102000" in result.output
    assert "test 4.3.5" in result.output
    assert "APP_VERSION=4.3 APP_VERSION_PATCH=7" in (project / "out/vars.txt").read_text()


def test_cli_build_json_and_env_defaults(project: Path) -> None:
    result = invoke("build", "--project", str(project), "--json", env={"APP_VERSION": "2.1", "APP_VERSION_PATCH": "9"})
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["ok"] is True and record["command"] == ["make", "APP_VERSION=2.1", "APP_VERSION_PATCH=9"]
    assert [(r["slot"], r["address"]) for r in record["roms"]] == [("rom0", 0x2000), ("rom1", 0x102000)]
    assert record["roms"][0]["image"]["checksum_valid"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--command", "otalab-no-such-make-program"], "no firmware toolchain found"),
        (["--app-version", "4"], "bad app version"),
        (["--patch", "x"], "bad patch"),
        (["--command", "make nosuchtarget"], "build failed"),
    ],
)
def test_cli_build_errors_are_one_line(project: Path, args: list[str], message: str) -> None:
    result = invoke("build", "--project", str(project), *args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("otalab: error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_cli_build_no_toolchain_points_to_demo(tmp_path: Path) -> None:
    result = invoke("build", "--project", str(tmp_path), "--command", "otalab-no-such-make-program")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "otalab image demo" in result.output


# --------------------------------------------------------------------------- a Sming-like project

REAL = Path(__file__).parent / "vectors" / "esp8266"

SMING_MAKEFILE = f"""\
all: {FW}/rom0.bin

out/app.o: app/application.cpp
\tmkdir -p out
\techo "compiled with APP_VERSION_PATCH=$(APP_VERSION_PATCH)" > out/app.o

{FW}/rom0.bin: out/app.o
\tmkdir -p {FW}
\tcp rom0.src {FW}/rom0.bin
\tcp partitions.src {FW}/partitions.bin
"""


@pytest.fixture
def sming_project(tmp_path: Path) -> Path:
    """Like Sming's Upgrade sample: the patch is compiled into app/application.cpp; one rom0.bin, a partition table."""
    folder = tmp_path / "Upgrade"
    (folder / "app").mkdir(parents=True)
    (folder / "Makefile").write_text(SMING_MAKEFILE)
    (folder / "app/application.cpp").write_text('Serial << "patch " << APP_VERSION_PATCH << endl;\n')
    (folder / "app/other.cpp").write_text("int unrelated;\n")
    shutil.copy(REAL / "rom0.bin", folder / "rom0.src")
    shutil.copy(REAL / "partitions.bin", folder / "partitions.src")
    return folder


def _age(folder: Path) -> None:
    """Every file an hour old (the last build happened long ago, whatever the clock's resolution)."""
    import os
    import time

    past = time.time() - 3600
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past + (1 if "out" in path.parts else 0)))


def test_new_patch_reaches_the_firmware(sming_project: Path) -> None:
    assert run_build(sming_project, patch=2).ok
    _age(sming_project)
    result = invoke("build", "--project", str(sming_project), "--app-version", "4.3", "--patch", "3")
    assert result.exit_code == 0, result.output
    assert (sming_project / "out/app.o").read_text().strip() == "compiled with APP_VERSION_PATCH=3"
    assert "APP_VERSION=4.3 APP_VERSION_PATCH=3 reaches the firmware: recompiled app/application.cpp" in result.output
    _age(sming_project)
    record = json.loads(invoke("build", "--project", str(sming_project), "--patch", "4", "--json").output)
    assert record["recompiled"] == [str(sming_project / "app/application.cpp")]
    assert (sming_project / "out/app.o").read_text().strip() == "compiled with APP_VERSION_PATCH=4"


def test_real_rom_listed_for_every_slot_with_its_facts(sming_project: Path) -> None:
    result = invoke("build", "--project", str(sming_project), "--json")
    assert result.exit_code == 0, result.output
    [rom] = json.loads(result.output)["roms"]
    assert [(s["slot"], s["address"]) for s in rom["slots"]] == [("rom0", 0x2000), ("rom1", 0x102000)]
    assert rom["address_source"] == "partitions"
    image = rom["image"]
    assert (image["chip"], image["format"], image["entry"], image["size"]) == (
        "esp8266",
        "esp8266-v2",
        0x40100004,
        312544,
    )
    assert image["sha256"] == "d7904a9b3de85cdf9565da0cc10d64365bb72c228bc4f6e9138270bec5cbe031" and image["valid"]
    text = invoke("build", "--project", str(sming_project)).output
    assert "slots rom0 @ 0x2000, rom1 @ 0x102000 (partitions)" in text
    assert "esp8266 esp8266-v2 image, entry 0x40100004, 312544 bytes, 5 segments, valid" in text
