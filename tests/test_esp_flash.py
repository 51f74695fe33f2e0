"""esptool layer: argument building checked against esptool's own parser; CLI errors; real board with --port."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import esptool
import pytest

from otalib.errors import BoardError, InputError, UsageError
from otalib.firmware import flashing
from otalib.firmware.flashing import FlashFile, flash_args, parse_image_spec, parse_int, read_args, verify_args

OTALAB = Path(sys.executable).parent / "otalab"


def esptool_parse(argv: list[str]) -> tuple[dict, str, dict]:
    """Parse ``argv`` with esptool's real command line (no connection): global params, command, its params."""
    esptool.cli._esp = None  # what esptool.main sets before parsing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = esptool.cli.make_context("esptool", list(argv))
        name, cmd, rest = esptool.cli.resolve_command(ctx, ctx.protected_args + ctx.args)
        sub = cmd.make_context(name, rest, parent=ctx)
    return ctx.params, name, sub.params


@pytest.fixture
def images(tmp_path: Path) -> list[FlashFile]:
    (tmp_path / "rboot.bin").write_bytes(b"\xe9" + bytes(100))
    (tmp_path / "rom0.bin").write_bytes(b"\xe9" + bytes(5000))
    return [FlashFile(0x8000, tmp_path / "rom0.bin"), FlashFile(0, tmp_path / "rboot.bin")]


def test_parse_image_spec_and_numbers() -> None:
    assert parse_image_spec("out/rom0.bin@0x8000") == FlashFile(0x8000, Path("out/rom0.bin"))
    assert parse_image_spec("a@b.bin@4k") == FlashFile(4096, Path("a@b.bin"))
    assert parse_int("1M") == 1 << 20 and parse_int("32768") == 0x8000 and parse_int("0X1000") == 4096
    for bad in ["rom0.bin", "@0x8000", "rom0.bin@", "rom0.bin@zz", "rom0.bin@0x8001"]:
        with pytest.raises(UsageError, match="bad"):
            parse_image_spec(bad)


def test_flash_args_are_what_esptool_expects(images: list[FlashFile]) -> None:
    argv = flash_args("/dev/ttyUSB0", images, chip="esp8266", baud=921600)
    assert argv[:10] == [
        "--chip",
        "esp8266",
        "--port",
        "/dev/ttyUSB0",
        "--baud",
        "921600",
        "--before",
        "default-reset",
        "--after",
        "hard-reset",
    ]
    assert argv[-4:] == ["0x0", str(images[1].path), "0x8000", str(images[0].path)]  # sorted by address
    top, command, params = esptool_parse(argv)
    assert (top["chip"], top["port"], top["baud"], command) == ("esp8266", "/dev/ttyUSB0", 921600, "write-flash")
    assert [(addr, Path(f.name)) for addr, f in params["addr_filename"]] == [
        (0, images[1].path),
        (0x8000, images[0].path),
    ]
    for f in params["addr_filename"]:
        f[1].close()
    assert (params["flash_mode"], params["flash_freq"], params["flash_size"]) == ("keep", "keep", "keep")
    assert params["erase_all"] is False
    assert esptool_parse(flash_args("rfc2217://lab:4000", images, erase_all=True))[2]["erase_all"] is True


def test_verify_and_read_args(images: list[FlashFile], tmp_path: Path) -> None:
    top, command, params = esptool_parse(verify_args("socket://127.0.0.1:9", images, chip="esp32"))
    assert (top["chip"], command, params["diff"]) == ("esp32", "verify-flash", True)
    assert [addr for addr, f in params["addr_filename"]] == [0, 0x8000]
    for _, f in params["addr_filename"]:
        f.close()
    out = tmp_path / "dump.bin"
    argv = read_args("/dev/ttyUSB1", 0x108000, 0xF8000, out)
    top, command, params = esptool_parse(argv)
    assert (top["chip"], command) == ("auto", "read-flash")
    assert (params["address"], params["size"], params["output"]) == (0x108000, 0xF8000, str(out))
    with pytest.raises(UsageError):
        read_args("/dev/ttyUSB1", 0, 0, out)
    with pytest.raises(UsageError, match="unknown chip"):
        flash_args("/dev/ttyUSB0", images, chip="esp9000")


def test_chip_info_connect_arguments() -> None:
    import inspect

    from esptool import cmds

    kwargs = flashing.connect_kwargs("/dev/ttyUSB0", 115200)
    inspect.signature(cmds.detect_chip).bind(**kwargs)  # every name is a real detect_chip parameter
    assert kwargs == {"port": "/dev/ttyUSB0", "baud": 115200, "connect_mode": "default-reset"}


def test_check_images(images: list[FlashFile], tmp_path: Path) -> None:
    flashing.check_images(images)
    with pytest.raises(UsageError, match="images overlap"):
        flashing.check_images([*images, FlashFile(0x9000, images[0].path)])
    with pytest.raises(InputError):
        flashing.check_images([FlashFile(0, tmp_path / "missing.bin")])


def test_real_esptool_failure_is_one_board_error(images: list[FlashFile], tmp_path: Path) -> None:
    with pytest.raises(BoardError, match=r"^esptool failed on /dev/otalab-nonexistent: .*") as info:
        flashing.flash("/dev/otalab-nonexistent", images)
    assert "\n" not in str(info.value)
    with pytest.raises(BoardError, match="cannot read chip info on /dev/otalab-nonexistent"):
        flashing.chip_info("/dev/otalab-nonexistent")
    out = tmp_path / "dump.bin"
    with pytest.raises(BoardError):
        flashing.read_flash("/dev/otalab-nonexistent", 0, 4096, out)
    assert list(tmp_path.glob("*dump*")) == [] and not list(tmp_path.glob(".otalab-read-*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/dev/otalab-nonexistent", "{rom}@0x8000"], "otalab: error: esptool failed on /dev/otalab-nonexistent"),
        (["/dev/otalab-nonexistent", "--info"], "otalab: error: cannot read chip info on /dev/otalab-nonexistent"),
        (["/dev/ttyUSB9", "rom0.bin"], "otalab: error: bad image 'rom0.bin': expected FILE@ADDR"),
        (["/dev/ttyUSB9", "{rom}@0x8001"], "otalab: error: bad image"),
        (["/dev/ttyUSB9", "{missing}@0x8000"], "otalab: error:"),
        (["/dev/ttyUSB9"], "otalab: error: give FILE@ADDR images, or --info, or --read"),
        (["/dev/ttyUSB9", "--read", "0x0", "4k"], "otalab: error: --read needs -o OUT"),
        (["/dev/ttyUSB9", "--read", "0x0", "lots", "-o", "x.bin"], "otalab: error: bad size"),
    ],
)
def test_flash_cli_errors_are_one_line(images: list[FlashFile], tmp_path: Path, args: list[str], message: str) -> None:
    argv = [a.format(rom=images[0].path, missing=tmp_path / "missing.bin") for a in args]
    proc = subprocess.run([str(OTALAB), "flash", *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.bin").exists()


@pytest.mark.hardware
def test_real_board_chip_info(board_port: str) -> None:
    info = flashing.chip_info(board_port)
    assert info.chip.upper().startswith("ESP")
    assert len(info.mac.split(":")) == 6
