"""Real ESP8266 images built by Sming 6.1.1 (tests/vectors/esp8266): read, inspect, boot, update."""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from otalib.broker import find_mosquitto
from otalib.cli import cli
from otalib.errors import ImageError
from otalib.firmware.image import ImageFormat, inspect_image, is_esp_image
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
    from otalib.formats.kinds import Kind, detect
    from otalib.formats.package import pack

    package = pack(ROM0.read_bytes(), 3)
    assert detect(package[1:]) is Kind.ESP_IMAGE
    report = inspect_bytes(package)
    assert report.kind == "sdp" and report.data["payload"]["kind"] == "esp-image" and report.ok


# --------------------------------------------------------------------------- the esp8266 virtual board

SMING_OTA = REAL / "firmware.ota"
#: The build timestamp in the header of Sming's own firmware.ota (ms since 1900).
SMING_OTA_TIMESTAMP = 4004872437378
SMING_OTA_ROM_SHA256 = "96cf2d32457f96be0ab406f06661987f6311a66784b456ce2abaa3a6ac539ebf"


def _real_board(tmp_path: Path, *, build_timestamp: int | None = None, layout=None):
    from board_helpers import make_device

    from otalib.board.sim.build import DeviceBuild
    from otalib.board.sim.flash import ESP8266_LAYOUT
    from otalib.board.virtual import prepare_flash
    from otalib.keys import DeviceKeys

    flash = prepare_flash(
        tmp_path / "flash.bin",
        DeviceBuild(version="4.3.1", layout=layout or ESP8266_LAYOUT, firmware_timestamp=build_timestamp),
        initial_image=ROM0.read_bytes(),
        partitions=(REAL / "partitions.bin").read_bytes() if layout is None else None,
    )
    device, out = make_device(flash, key=None)
    device.keys = DeviceKeys((REAL / "verify.key.bin").read_bytes())
    return flash, device, out


def test_real_rom_boots_from_rom0_at_0x2000(tmp_path: Path) -> None:
    flash, device, out = _real_board(tmp_path, build_timestamp=1234)
    result = device.boot()
    assert result.booted and result.slot == 0 and device.build_timestamp == 1234
    assert flash.read(0x2000, 1) == b"\xea" and flash.read(0x3FA000, 2) == b"\xaa\x50"
    running = next(e for e in out.events() if e.event == "running")
    assert (running.fields["slot"], running.fields["address"]) == (0, 0x2000)
    flash.close()


def test_signed_update_with_real_rom_at_0x2000_boots_from_rom1(tmp_path: Path) -> None:
    from board_helpers import KEY, deliver, make_device

    from otalib.board.sim.build import DeviceBuild
    from otalib.board.sim.flash import ESP8266_LAYOUT
    from otalib.board.virtual import prepare_flash
    from otalib.formats.ota import Rom, build_ota
    from otalib.formats.package import pack

    flash = prepare_flash(
        tmp_path / "flash.bin", DeviceBuild(version="4.3.1", layout=ESP8266_LAYOUT), initial_image=ROM0.read_bytes()
    )
    device, out = make_device(flash)  # verify key: KEY
    device.boot()
    out.clear()
    stamp = 4_000_000_000_123
    ota = build_ota([Rom(0x2000, ROM0.read_bytes())], KEY, signed=True, timestamp=stamp)
    result = deliver(device, pack(ota, 2))
    assert result.outcome == "applied" and result.target_slot == 1, out.output
    assert "Update slot rom1 [0x00102000.." in out.output and "Skip ROM" not in out.output
    assert flash.read(0x102000, len(ROM0.read_bytes())) == ROM0.read_bytes()
    out.clear()
    device.restart()
    assert device.slot == 1 and device.build_timestamp == stamp  # the .ota's timestamp, kept for the slot
    running = next(e for e in out.events() if e.event == "running")
    assert (running.fields["slot"], running.fields["address"]) == (1, 0x102000)
    # the next update prints the installed firmware's build timestamp, not 0
    out.clear()
    older = build_ota([Rom(0x2000, ROM0.read_bytes())], KEY, signed=True, timestamp=stamp - 1)
    assert deliver(device, pack(older, 3)).outcome == "rejected"
    assert f"Build timestamp of current firmware: {stamp & 0xFFFFFFFF}ll" in out.output
    flash.close()


@pytest.mark.parametrize(("board_timestamp", "outcome"), [(SMING_OTA_TIMESTAMP - 1, "applied"), (None, "applied")])
def test_smings_own_two_rom_ota_applies_to_rom1(tmp_path: Path, board_timestamp, outcome) -> None:
    from board_helpers import deliver

    from otalib.formats.package import pack

    flash, device, out = _real_board(tmp_path, build_timestamp=board_timestamp)
    device.boot()
    out.clear()
    result = deliver(device, pack(SMING_OTA.read_bytes(), 2))
    assert result.outcome == outcome and result.target_slot == 1, out.output
    # the first ROM (0x2000) matches rom1 (0x102000 & 0xFFFFF); the second is skipped
    assert "Update slot rom1 [0x00102000.." in out.output and "Skip ROM image for [0x00102000.." in out.output
    device.restart()
    assert device.slot == 1 and device.build_timestamp == SMING_OTA_TIMESTAMP
    installed = flash.read(0x102000, 312_544)  # a later build than rom0.bin: the .ota's own ROM
    assert hashlib.sha256(installed).hexdigest() == SMING_OTA_ROM_SHA256 and inspect_image(installed).valid
    flash.close()


def test_smings_ota_is_a_downgrade_for_a_newer_build(tmp_path: Path) -> None:
    from board_helpers import deliver

    from otalib.formats.package import pack

    flash, device, out = _real_board(tmp_path, build_timestamp=SMING_OTA_TIMESTAMP + 1)
    device.boot()
    result = deliver(device, pack(SMING_OTA.read_bytes(), 2))
    assert result.outcome == "rejected" and result.error == "DowngradeNotAllowed", out.output
    device.restart()
    assert device.slot == 0 and device.build_timestamp == SMING_OTA_TIMESTAMP + 1
    flash.close()


def test_host_layout_skips_a_rom_for_0x2000(tmp_path: Path) -> None:
    """The emulator's layout (rom1 at 0x108000) has no slot for Sming's real ROM addresses."""
    from board_helpers import deliver

    from otalib.board.sim.flash import HOST_LAYOUT
    from otalib.formats.ota import Rom, build_ota
    from otalib.formats.package import pack
    from otalib.keys import LabKey

    flash, device, out = _real_board(tmp_path, build_timestamp=0, layout=HOST_LAYOUT)
    device.boot()
    key = LabKey.from_bytes(bytes(range(64)), "test")
    device.keys = type(device.keys)(key.verify_key)
    result = deliver(device, pack(build_ota([Rom(0x2000, ROM0.read_bytes())], key, signed=True, timestamp=5), 2))
    assert result.outcome == "rejected" and "Skip ROM image for [0x00002000.." in out.output
    flash.close()


# --------------------------------------------------------------------------- otalab board: options first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patch", "-1"], "bad --patch -1"),
        (["--app-id", "a/b"], "bad app id"),
        (["--slot-mib", "2000000000"], "1..16 MiB"),
        (["--slot-mib", "17"], "1..16 MiB"),
        (["--layout", "host", "--partitions", str(REAL / "partitions.bin")], "both set the flash layout"),
        (["--partitions", str(REAL / "rom0.bin")], "larger than 4096 bytes"),
        (["--partitions", str(REAL / "verify.key.bin")], "not a partition table"),
        (["--rom", str(REAL / "partitions.bin")], "not an ESP image"),
        (["--build-timestamp", "-5"], "-5"),
    ],
)
def test_board_refuses_bad_options_before_making_a_flash(tmp_path: Path, args: list[str], message: str) -> None:
    flash = tmp_path / "flash.bin"
    result = run("board", "--broker", "mqtt://127.0.0.1:1", "--flash", str(flash), *args)
    assert result.exit_code in (1, 2), result.output  # a usage error, or an unreadable input
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_board_layout_options(tmp_path: Path) -> None:
    from otalib.board.sim.flash import ESP8266_LAYOUT, HOST_LAYOUT, big_layout
    from otalib.cli.board import _board_layout

    assert _board_layout("esp8266", None, None, None) == (ESP8266_LAYOUT, None)
    assert _board_layout("esp32", None, None, None) == (HOST_LAYOUT, None)
    assert _board_layout("esp8266", "host", None, None) == (HOST_LAYOUT, None)
    assert _board_layout("esp8266", None, None, 16) == (big_layout(16), None)
    layout, table = _board_layout("esp8266", None, REAL / "partitions.bin", None)
    assert layout.roms == (0x2000, 0x102000) and table == (REAL / "partitions.bin").read_bytes()


def test_new_flash_takes_the_given_build_timestamp_never_now(tmp_path: Path) -> None:
    from board_helpers import KEY, deliver, make_device

    from otalib.board.sim.build import DeviceBuild
    from otalib.board.virtual import prepare_flash
    from otalib.firmware.demo import make_demo_image
    from otalib.formats.ota import Rom, build_ota
    from otalib.formats.package import pack

    old_file = pack(
        build_ota([Rom(0x8000, make_demo_image("esp8266", "test", "4.3.2"))], KEY, signed=True, timestamp=5), 2
    )
    flash = prepare_flash(tmp_path / "unknown.bin", DeviceBuild(version="4.3.1", layout="host"))
    device, out = make_device(flash)
    device.boot()
    assert device.build_timestamp == 0  # unknown: not the time the flash was made
    assert deliver(device, old_file).outcome == "applied", out.output
    flash.close()
    flash = prepare_flash(tmp_path / "given.bin", DeviceBuild(version="4.3.1", layout="host", firmware_timestamp=6))
    device, out = make_device(flash)
    device.boot()
    assert device.build_timestamp == 6
    assert deliver(device, old_file).error == "DowngradeNotAllowed"
    flash.close()


# --------------------------------------------------------------------------- end to end: otalab board + Mosquitto


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_board_process_takes_smings_ota_over_mqtt(tmp_path: Path) -> None:
    from otalib.board.sim.flash import ESP8266_LAYOUT, FlashImage
    from otalib.board.virtual import VirtualBoardProcess
    from otalib.broker import start_broker
    from otalib.formats.package import pack
    from otalib.mqtt.publish import deploy

    flash = tmp_path / "flash.bin"
    args = ["--app-id", "realota", "--version", "4.3.1", "--flash", str(flash), "--profile", "reference"]
    args += ["--partitions", str(REAL / "partitions.bin"), "--rom", str(ROM0)]
    args += ["--build-timestamp", str(SMING_OTA_TIMESTAMP - 60_000), "--verify-key", str(REAL / "verify.key.bin")]
    args += ["--restart-delay", "0.1"]
    with start_broker("mosquitto") as broker, VirtualBoardProcess(["--broker", broker.url, *args]) as proc:
        first = proc.expect("running", 20)
        assert (first.fields["slot"], first.fields["address"]) == (0, 0x2000)
        proc.expect("subscribing", 20)
        deploy(pack(SMING_OTA.read_bytes(), 2), f"{broker.url}/a/realota/u/4.3")  # retained
        slot = proc.expect("update_slot", 20)
        assert (slot.fields["slot"], slot.fields["start"]) == (1, 0x102000)
        assert proc.expect("switch_ok", 20)
        after = proc.expect("running", 20)
        assert (after.fields["slot"], after.fields["address"]) == (1, 0x102000)
        proc.power_cycle()  # kill -9 and start again: the retained patch 2 is the running one now
        again = proc.expect("running", 20)
        assert (again.fields["slot"], again.fields["address"]) == (1, 0x102000)
        proc.expect("subscribing", 20)
    with FlashImage(flash, ESP8266_LAYOUT, create=False) as image:
        assert image.slot_note(1) == {"timestamp": SMING_OTA_TIMESTAMP, "patch": 2}
        assert image.read(0x3FA000, 3072) == (REAL / "partitions.bin").read_bytes()


def test_image_regions_cover_the_real_rom_in_order() -> None:
    from otalib.firmware.image import find_in_image, image_regions

    data = ROM0.read_bytes()
    regions = image_regions(data)
    assert [r["part"] for r in regions[:4]] == ["header (v2)", "segment header", "segment 0", "header (v1)"]
    assert all(a["offset"] + a["size"] == b["offset"] for a, b in itertools.pairwise(regions))
    assert regions[-1]["offset"] + regions[-1]["size"] == len(data)
    assert data[regions[3]["offset"]] == 0xE9  # the second (v1) header after irom0
    # the version string is data of the application, not a header field
    [where] = find_in_image(data, "4.3")
    assert where["part"] == "segment 4" and where["offset"] == 310003


def test_standard_mode_installs_and_boots_the_real_rom(tmp_path: Path) -> None:
    """rBoot/the chip check the v2 image (irom0 first) and find it intact: no crash loop."""
    from board_helpers import deliver, make_device

    from otalib.board.sim.build import DeviceBuild
    from otalib.board.sim.flash import ESP8266_LAYOUT
    from otalib.board.virtual import prepare_flash
    from otalib.formats.package import pack

    flash = prepare_flash(
        tmp_path / "f.bin", DeviceBuild(version="4.3.1", layout=ESP8266_LAYOUT), initial_image=ROM0.read_bytes()
    )
    device, out = make_device(flash, mode="standard", key=None, write_current_slot=False)
    device.boot()
    assert deliver(device, pack(ROM0.read_bytes(), 2)).outcome == "applied"
    result = device.restart()
    assert result.booted and result.slot == 1, out.output
    bad = bytearray(ROM0.read_bytes())
    bad[0x44A30 + 100] ^= 1  # a byte the checksum covers
    assert deliver(device, pack(bytes(bad), 3)).outcome == "applied"
    assert device.restart().reason == "crash"
    flash.close()


def test_board_refuses_a_flash_of_another_layout(tmp_path: Path) -> None:
    from otalib.board.sim.flash import HOST_LAYOUT, FlashImage

    FlashImage(tmp_path / "host.bin", HOST_LAYOUT).close()
    result = run("board", "--broker", "mqtt://127.0.0.1:1", "--flash", str(tmp_path / "host.bin"))
    assert result.exit_code == 1 and "made for the host layout" in result.output and "--layout host" in result.output
    result = run("board", "--broker", "mqtt://127.0.0.1:1", "--flash", str(tmp_path / "host.bin"), "--rom", str(ROM0))
    assert "warning: --rom only set up a new flash" in result.output and result.exit_code == 1


def test_inspect_text_and_deploy_check_of_real_images() -> None:
    from otalib.formats.kinds import Kind
    from otalib.formats.package import check_package, pack

    result = run("inspect", str(ROM0))
    assert result.exit_code == 0, result.output
    assert "ESP image (esp8266, v2): 312544 bytes, entry 0x40100004" in result.output
    result = run("inspect", str(SMING_OTA), "--verify-key", str(REAL / "verify.key.bin"))
    assert result.exit_code == 0 and "ROM @ 0x00102000" in result.output and "verified" in result.output
    result = run("inspect", str(SMING_OTA), "--verify-key", str(REAL / "verify.key.bin"), "--json")
    assert json.loads(result.output)["roms"][0]["address"] == 0x2000
    # deploy's pre-publish check takes a standard package of the real ROM
    assert check_package(pack(ROM0.read_bytes(), 2)).kind is Kind.ESP_IMAGE
