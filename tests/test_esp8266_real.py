"""Real ESP8266 images built by Sming 6.1.1 (tests/vectors/esp8266): read, inspect, boot, update."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from otalib.cli import cli
from otalib.errors import ImageError
from otalib.images import ImageFormat, inspect_image, is_esp_image
from otalib.inspect import inspect_bytes

REAL = Path(__file__).parent / "vectors" / "esp8266"
ROM0 = REAL / "rom0.bin"
ROM0_SHA256 = "d7904a9b3de85cdf9565da0cc10d64365bb72c228bc4f6e9138270bec5cbe031"
#: rom0.bin's segments as esptool reads them (irom0 first, saved at load address 0).
ROM0_SEGMENTS = ((0, 0x44A30), (0x40100000, 1324), (0x4010052C, 24912), (0x3FFE8000, 1380), (0x3FFE8570, 3732))


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# --------------------------------------------------------------------------- reading the image


def test_real_rom_reads_as_a_v2_image_without_crc32() -> None:
    data = ROM0.read_bytes()
    info = inspect_image(data)
    assert (info.chip, info.format, info.image_version) == ("esp8266", ImageFormat.ESP8266_V2, 2)
    assert info.entry == 0x40100004 and info.segments == ROM0_SEGMENTS
    assert info.checksum_valid and info.valid and info.crc32 is None
    assert info.size == len(data) == 312_544
    assert info.file_sha256 == ROM0_SHA256 == hashlib.sha256(data).hexdigest()


def test_v2_image_with_esptools_crc32_is_read_with_it() -> None:
    from esptool.bin_image import esp8266_crc32

    data = ROM0.read_bytes()
    with_crc = data + struct.pack("<I", esp8266_crc32(data))
    info = inspect_image(with_crc + b"\xff" * 64)  # e.g. read from a flash slot
    assert info.crc32 == esp8266_crc32(data) and info.size == len(with_crc) and info.valid
    # four bytes that are not its CRC32 are not part of the image
    assert inspect_image(data + b"\0\0\0\0").size == len(data)


def test_truncated_or_corrupt_real_rom() -> None:
    data = ROM0.read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        inspect_image(data[:-1])
    bad = bytearray(data)
    bad[0x44A30 + 100] ^= 0x01  # a byte of segment 1 (in the checksum)
    assert not inspect_image(bytes(bad)).checksum_valid


def test_is_esp_image_knows_both_magics() -> None:
    data = ROM0.read_bytes()
    assert is_esp_image(data) and is_esp_image(data[:16]) and is_esp_image((REAL / "rboot.bin").read_bytes())
    assert not is_esp_image(b"\xea\x01" + data[2:])  # not the v2 constant 4
    assert not is_esp_image(data[:8] + b"\x00\x00\x00\x01" + data[12:])  # irom0 not saved at address 0
    assert not is_esp_image((REAL / "partitions.bin").read_bytes())


def test_cli_image_info_real_rom_text_and_json() -> None:
    result = run("image", "info", str(ROM0))
    assert result.exit_code == 0, result.output
    assert "ESP8266 image v2, 312544 bytes" in result.output
    assert "format:   esp8266-v2" in result.output and "entry:    0x40100004" in result.output
    assert "irom0, runs from flash" in result.output and "checksum: 0x4a valid" in result.output
    assert "crc32:    none" in result.output and ROM0_SHA256 in result.output
    result = run("image", "info", "--chip", "esp8266", "--json", str(ROM0))
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert (record["format"], record["entry"], record["valid"]) == ("esp8266-v2", 0x40100004, True)
    assert record["crc32"] is None
    assert [(s["address"], s["size"]) for s in record["segments"]] == list(ROM0_SEGMENTS)


def test_inspect_recognises_the_real_rom() -> None:
    report = inspect_bytes(ROM0.read_bytes())
    assert report.kind == "esp-image" and report.ok
    assert report.data["format"] == "esp8266-v2"
    result = run("inspect", "--json", str(ROM0))
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[0])
    assert (record["kind"], record["verified"], record["file_sha256"]) == ("esp-image", True, ROM0_SHA256)


def test_standard_package_of_the_real_rom_is_recognised() -> None:
    from otalib.formats.package import pack, payload_kind

    package = pack(ROM0.read_bytes(), 3)
    assert payload_kind(package[1:]) == "esp-image"
    report = inspect_bytes(package)
    assert report.kind == "sdp" and report.data["payload"]["kind"] == "esp-image" and report.ok
