"""ESP images through esptool: inspect, demo images, app marker, elf2image, ``otalab image``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from esptool.bin_image import LoadFirmwareImage
from image_helpers import minimal_elf

from otalib.cli import cli
from otalib.errors import ImageError, InputError, UsageError
from otalib.firmware.demo import make_demo_image
from otalib.firmware.image import (
    APP_MARKER,
    elf2image,
    inspect_file,
    inspect_image,
    is_esp_image,
    read_app_info,
)

CHIPS = ("esp8266", "esp32")


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# --------------------------------------------------------------------------- demo images + inspect


@pytest.mark.parametrize("chip", CHIPS)
@pytest.mark.parametrize("size", [None, 4096, 64 * 1024, 300_000, 2 * 1024 * 1024])
def test_demo_image_is_valid_and_carries_app(chip: str, size: int | None) -> None:
    data = make_demo_image(chip, "test", "4.3.5", size=size, seed=3)
    info = inspect_image(data)
    assert info.chip == chip
    assert info.checksum_valid
    assert info.sha256_valid is (True if chip == "esp32" else None)
    assert (info.app_id, info.app_version) == ("test", "4.3.5")
    assert info.size == len(data)
    if size is not None:
        assert abs(len(data) - size) <= 64
    assert len(info.segments) <= 16
    # esptool's own loader agrees on the checksum (and digest)
    image = LoadFirmwareImage(chip, data)
    assert image.calculate_checksum() == image.checksum
    if chip == "esp32":
        assert image.stored_digest == image.calc_digest


@pytest.mark.parametrize("chip", CHIPS)
def test_demo_image_is_deterministic_and_seeded(chip: str) -> None:
    one = make_demo_image(chip, "test", "1.0.0", size=20_000, seed=1)
    assert one == make_demo_image(chip, "test", "1.0.0", size=20_000, seed=1)
    assert one != make_demo_image(chip, "test", "1.0.0", size=20_000, seed=2)


def test_demo_image_16mb_is_valid() -> None:
    data = make_demo_image("esp32", "big", "2.0.1", size=16 * 1024 * 1024)
    info = inspect_image(data)
    assert info.valid and abs(info.size - 16 * 1024 * 1024) <= 64


@pytest.mark.parametrize("chip", CHIPS)
def test_corrupt_byte_is_reported_not_raised(chip: str) -> None:
    data = bytearray(make_demo_image(chip, "test", "4.3.5", size=8192))
    data[4000] ^= 0x55
    info = inspect_image(bytes(data))
    assert not info.checksum_valid
    assert not info.valid
    if chip == "esp32":
        assert info.sha256_valid is False


def test_corrupt_digest_only() -> None:
    data = bytearray(make_demo_image("esp32", "test", "4.3.5", size=8192))
    data[-1] ^= 1
    info = inspect_image(bytes(data))
    assert info.checksum_valid and info.sha256_valid is False


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"hello world, not firmware", b"\x7fELF" + bytes(60)])
def test_not_an_image_raises(data: bytes) -> None:
    with pytest.raises(ImageError, match="not an ESP image"):
        inspect_image(data)
    assert not is_esp_image(data)


def test_vector_rom_is_not_an_esp_image(vectors: Path) -> None:
    with pytest.raises(ImageError):
        inspect_file(vectors / "rom0.bin")


@pytest.mark.parametrize("chip", CHIPS)
@pytest.mark.parametrize("cut", [5, 20, 100, 4000, -33, -1])
def test_truncated_image_raises(chip: str, cut: int) -> None:
    data = make_demo_image(chip, "test", "4.3.5", size=8192)
    with pytest.raises(ImageError, match="truncated"):
        inspect_image(data[:cut])


def test_trailing_data_is_ignored() -> None:
    data = make_demo_image("esp8266", "test", "4.3.5", size=4096)
    info = inspect_image(data + b"\xff" * 4096)  # e.g. a whole flash slot
    assert info.valid and info.size == len(data)


def test_is_esp_image() -> None:
    assert is_esp_image(make_demo_image("esp8266", "a", "1.2.3"))
    assert is_esp_image(make_demo_image("esp32", "a", "1.2.3")[:16])
    assert not is_esp_image(b"\xe9")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"chip": "esp9000"}, UsageError),
        ({"chip": "esp32c3"}, UsageError),  # no demo layout for it
        ({"version": "4.3"}, UsageError),
        ({"version": "v4.3.5"}, UsageError),
        ({"app_id": "bad/id"}, UsageError),
        ({"app_id": ""}, UsageError),
        ({"size": -1}, UsageError),
    ],
)
def test_demo_bad_input(kwargs: dict, error: type) -> None:
    args = {"chip": "esp8266", "app_id": "test", "version": "1.0.0", **kwargs}
    with pytest.raises(error):
        make_demo_image(**args)


# --------------------------------------------------------------------------- app marker


@pytest.mark.parametrize("chip", CHIPS)
def test_read_app_info_on_a_prefix(chip: str) -> None:
    data = make_demo_image(chip, "my-app", "10.20.30", size=100_000)
    assert data.find(APP_MARKER) < 64  # marker right after the header
    assert read_app_info(data) == ("my-app", "10.20.30")
    assert read_app_info(data[:128]) == ("my-app", "10.20.30")
    assert read_app_info(data[:40]) is None  # marker cut off
    assert read_app_info(data[:4096] + b"\xff" * 4096) == ("my-app", "10.20.30")


def test_read_app_info_without_marker() -> None:
    assert read_app_info(b"") is None
    assert read_app_info(bytes(4096)) is None
    assert read_app_info(APP_MARKER + b"{not json}\0") is None
    assert read_app_info(APP_MARKER + b'{"app_id": 1, "version": "1.0.0"}\0') is None
    assert read_app_info(APP_MARKER + b"\xff\xfe\0") is None  # not UTF-8
    assert read_app_info(APP_MARKER + b"[" * 20_000 + b"\0") is None  # nested past the recursion limit


# --------------------------------------------------------------------------- elf2image


def _esp8266_elf(tmp_path: Path, irom: bool = False) -> Path:
    sections = [(".text", 0x40100000, bytes(range(64))), (".data", 0x3FFE8000, b"hello, world")]
    if irom:
        sections.append((".irom0.text", 0x40210000, b"I" * 100))
    path = tmp_path / "app.elf"
    path.write_bytes(minimal_elf(sections, entry=0x40100004))
    return path


def test_elf2image_esp8266_v1(tmp_path: Path) -> None:
    out = elf2image(_esp8266_elf(tmp_path), "esp8266", tmp_path / "app.bin")
    info = inspect_file(out)
    assert (info.chip, info.image_version, info.entry) == ("esp8266", 1, 0x40100004)
    assert sorted(info.segments) == [(0x3FFE8000, 12), (0x40100000, 64)]
    assert info.checksum_valid


def test_elf2image_esp8266_v1_with_irom_writes_both_parts(tmp_path: Path) -> None:
    out = elf2image(_esp8266_elf(tmp_path, irom=True), "esp8266", tmp_path / "app.bin")
    assert inspect_file(out).checksum_valid
    assert (tmp_path / "app-0x10000.bin").read_bytes() == b"I" * 100


def test_elf2image_esp8266_v2(tmp_path: Path) -> None:
    out = elf2image(_esp8266_elf(tmp_path, irom=True), "esp8266", tmp_path / "app.bin", version=2)
    info = inspect_file(out)
    assert (info.image_version, info.checksum_valid, info.size) == (2, True, out.stat().st_size)


def test_elf2image_esp32(tmp_path: Path) -> None:
    elf = tmp_path / "app.elf"
    elf.write_bytes(minimal_elf([(".iram0.text", 0x40080000, bytes(64)), (".dram0.data", 0x3FFB0000, b"d" * 32)]))
    info = inspect_file(elf2image(elf, "esp32", tmp_path / "app.bin"))
    assert info.chip == "esp32" and info.checksum_valid and info.sha256_valid


def test_elf2image_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        elf2image(tmp_path / "missing.elf", "esp8266", tmp_path / "x.bin")
    not_elf = tmp_path / "not.elf"
    not_elf.write_bytes(b"just text")
    with pytest.raises(ImageError, match="not an ELF"):
        elf2image(not_elf, "esp8266", tmp_path / "x.bin")
    with pytest.raises(UsageError):
        elf2image(_esp8266_elf(tmp_path), "esp9", tmp_path / "x.bin")
    with pytest.raises(UsageError):
        elf2image(_esp8266_elf(tmp_path), "esp8266", tmp_path / "x.bin", version=7)
    wrong_machine = bytearray(minimal_elf([(".text", 0x40100000, bytes(8))]))
    wrong_machine[18] = 3  # EM_386
    not_elf.write_bytes(bytes(wrong_machine))
    with pytest.raises(ImageError, match="elf2image failed"):
        elf2image(not_elf, "esp8266", tmp_path / "x.bin")
    with pytest.raises(ImageError, match="cannot read back"):  # v2 needs an irom0 section
        elf2image(_esp8266_elf(tmp_path), "esp8266", tmp_path / "x.bin", version=2)
    assert not (tmp_path / "x.bin").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_demo_then_info(tmp_path: Path) -> None:
    out = tmp_path / "rom0.bin"
    result = run("image", "demo", "--chip", "esp8266", "--app-id", "test", "--version", "4.3.5", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "test 4.3.5" in result.output
    result = run("image", "info", str(out))
    assert result.exit_code == 0
    assert "ESP8266 image v1" in result.output and "valid" in result.output and "test 4.3.5" in result.output
    result = run("image", "info", str(out), "--json")
    record = json.loads(result.output)
    assert record["chip"] == "esp8266" and record["checksum_valid"] is True and record["app_version"] == "4.3.5"


def test_cli_demo_esp32_sized_json(tmp_path: Path) -> None:
    out = tmp_path / "app.bin"
    result = run(
        "image", "demo", "--chip", "esp32", "--app-id", "a", "--version", "1.0.2", "--size", "64K", "-o", str(out),
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["sha256_valid"] is True and record["size"] == out.stat().st_size == 65536


def test_cli_info_reports_corruption(tmp_path: Path) -> None:
    data = bytearray(make_demo_image("esp32", "test", "4.3.5", size=8192))
    data[5000] ^= 1
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(data))
    result = run("image", "info", str(path))
    assert result.exit_code == 0
    assert "INVALID" in result.output


def test_cli_elf2image(tmp_path: Path) -> None:
    out = tmp_path / "app.bin"
    result = run("image", "elf2image", str(_esp8266_elf(tmp_path)), "--chip", "esp8266", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert inspect_file(out).checksum_valid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("image info {tmp}/missing.bin", "not found"),
        ("image info {vectors}/rom0.bin", "not an ESP image"),
        ("image info {tmp}/short.bin", "truncated"),
        ("image demo --chip esp9 --app-id a --version 1.0.0 -o {tmp}/o.bin", "chip"),
        ("image demo --chip esp32 --app-id a --version 1.0 -o {tmp}/o.bin", "version"),
        ("image demo --chip esp32 --app-id a --version 1.0.0 --size lots -o {tmp}/o.bin", "size"),
        ("image elf2image {tmp}/missing.elf --chip esp8266 -o {tmp}/o.bin", "not found"),
        ("image elf2image {tmp}/short.bin --chip esp8266 -o {tmp}/o.bin", "not an ELF"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, vectors: Path, args: str, message: str) -> None:
    (tmp_path / "short.bin").write_bytes(make_demo_image("esp8266", "a", "1.0.0", size=4096)[:1000])
    argv = [a.format(tmp=tmp_path, vectors=vectors) for a in args.split()]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("otalab: error:") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.bin").exists()


def test_esp8266_image_that_looks_like_esp32_header(tmp_path: Path) -> None:
    # segment size 0x100 and zero data put 0x00 at bytes 12 and 23: esptool's header rule says "ESP32"
    elf = tmp_path / "z.elf"
    elf.write_bytes(minimal_elf([(".text", 0x40100000, bytes(256)), (".data", 0x3FFE8000, b"abcd" * 4)]))
    data = elf2image(elf, "esp8266", tmp_path / "z.bin").read_bytes()
    assert data[12] == 0 and data[23] == 0
    info = inspect_image(data)
    assert info.chip == "esp8266" and info.checksum_valid
    assert inspect_image(data, chip="ESP8266") == info
    with pytest.raises(UsageError):
        inspect_image(data, chip="esp9")


@pytest.mark.parametrize("victim", ["elf", "key"])
def test_elf2image_irom_part_never_replaces_the_elf_or_a_key(tmp_path: Path, victim: str) -> None:
    """The irom part's name comes from esptool's rule (``<stem>-0xNNNNN.bin``): a file already there that is the
    ELF itself or a key file is refused, and nothing is written."""
    from otalib.errors import OtaLabError
    from otalib.keys import generate_key_file

    elf = _esp8266_elf(tmp_path, irom=True)
    irom_path = tmp_path / "app-0x10000.bin"
    if victim == "elf":
        irom_path.symlink_to(elf)
    else:
        generate_key_file(irom_path)
    before = irom_path.read_bytes()
    with pytest.raises(OtaLabError):
        elf2image(elf, "esp8266", tmp_path / "app.bin")
    assert irom_path.read_bytes() == before
    assert not (tmp_path / "app.bin").exists()
