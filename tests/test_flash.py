"""The file-backed flash: erased creation, sectors, rBoot config, slot writer."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import pytest

from otalib.board.sim.flash import (
    BOOT_CONFIG_ADDR,
    SECTOR,
    TWO_ROM_LAYOUT,
    BootConfig,
    FlashImage,
    Layout,
    SlotWriter,
    big_layout,
)
from otalib.errors import BoardError, UsageError


def test_created_erased_with_sample_layout(tmp_path):
    with FlashImage(tmp_path / "f.bin") as flash:
        assert flash.created and (tmp_path / "f.bin").stat().st_size == 0x400000
        assert flash.read(0, 64) == b"\xff" * 64
        assert flash.boot_config() is None
        assert TWO_ROM_LAYOUT.slot_range(1) == (0x108000, 0x200000)


def test_boot_config_roundtrip_and_persistence(tmp_path):
    with FlashImage(tmp_path / "f.bin") as flash:
        flash.set_current_rom(1)
        raw = flash.read(BOOT_CONFIG_ADDR, 24)
        assert raw[0] == 0xE1 and raw[3] == 1 and raw[5] == 2
        assert int.from_bytes(raw[12:16], "little") == 0x108000
    with FlashImage(tmp_path / "f.bin", create=False) as flash:
        assert not flash.created
        assert flash.boot_config() == BootConfig(1, (0x8000, 0x108000))


def test_size_mismatch_and_missing_file(tmp_path):
    (tmp_path / "small.bin").write_bytes(b"\xff" * 100)
    with pytest.raises(BoardError, match="layout needs"):
        FlashImage(tmp_path / "small.bin")
    with pytest.raises(BoardError, match="not found"):
        FlashImage(tmp_path / "none.bin", create=False)


def test_slot_writer_erases_sectors_as_it_goes(tmp_path):
    with FlashImage(tmp_path / "f.bin") as flash:
        start, end = TWO_ROM_LAYOUT.slot_range(1)
        flash.write(start, b"\x00" * (3 * SECTOR))  # old content
        writer = SlotWriter(flash, start, end - start)
        for i in range(SECTOR + 10):  # one byte at a time across a sector boundary
            writer.write(bytes([i & 0x7F]))
        assert flash.read(start, 3) == b"\x00\x01\x02"
        assert flash.read(start + SECTOR + 10, SECTOR - 10) == b"\xff" * (SECTOR - 10)  # erased tail
        assert flash.read(start + 2 * SECTOR, 4) == b"\x00" * 4  # untouched sector
        with pytest.raises(BoardError, match="beyond"):
            SlotWriter(flash, start, 4).write(b"12345")


def test_erase_slot_header_and_bounds(tmp_path):
    with FlashImage(tmp_path / "f.bin") as flash:
        flash.write_slot(0, b"\xe9\x01" + b"\x00" * 5000)
        flash.erase_slot_header(0)
        assert flash.slot_head(0, SECTOR) == b"\xff" * SECTOR
        assert flash.slot_head(0, SECTOR + 8)[SECTOR:] == b"\x00" * 8
        with pytest.raises(BoardError, match="outside"):
            flash.read(0x3FFFFF, 2)


def test_layouts():
    big = big_layout(16)
    assert big.slot_size == 16 * 1024 * 1024 and big.roms[1] + big.slot_size == big.flash_size
    with pytest.raises(UsageError):
        Layout(flash_size=0x100000, roms=(0x8000, 0x108000))


# --------------------------------------------------------------------------- layouts, creation, notes

REAL = Path(__file__).parent / "vectors" / "esp8266"


def test_named_layouts_and_smings_partition_table():
    from otalib.board.sim.flash import ESP8266_LAYOUT, HOST_LAYOUT, layout_from_partitions, named_layout
    from otalib.firmware.partitions import PartitionType, read_partitions

    assert named_layout("esp8266").roms == (0x2000, 0x102000) and ESP8266_LAYOUT.partition_table == 0x3FA000
    assert named_layout("host") is HOST_LAYOUT and HOST_LAYOUT.roms == (0x8000, 0x108000)
    table = (REAL / "partitions.bin").read_bytes()
    entries = read_partitions(table)
    assert [(p.label, p.offset, p.size) for p in entries if p.type is PartitionType.APP] == [
        ("rom0", 0x2000, 0xF8000),
        ("rom1", 0x102000, 0xF8000),
    ]
    layout = layout_from_partitions(table)
    assert (layout.flash_size, layout.roms, layout.slot_size, layout.partition_table) == (
        ESP8266_LAYOUT.flash_size,
        ESP8266_LAYOUT.roms,
        ESP8266_LAYOUT.slot_size,
        0x3FA000,
    )
    corrupt = bytearray(table)
    corrupt[0x24] ^= 1  # rom0's offset: the stored MD5 no longer matches
    with pytest.raises(UsageError, match="MD5"):
        read_partitions(bytes(corrupt))
    with pytest.raises(UsageError, match="not a partition table"):
        layout_from_partitions(b"\xff" * 64)
    with pytest.raises(UsageError):
        named_layout("esp9000")


@pytest.mark.parametrize("slot_mib", [0, 17, 2_000_000_000, -1])
def test_slots_are_bounded_by_real_flash_chips(slot_mib):
    with pytest.raises(UsageError, match=r"1\.\.16 MiB"):
        big_layout(slot_mib)
    with pytest.raises(UsageError):
        Layout(flash_size=1 << 40, roms=(0x100000,), slot_size=max(slot_mib, 1) << 20)


def test_new_flash_appears_only_complete(tmp_path):
    path = tmp_path / "f.bin"

    def fail(flash):
        flash.write_slot(0, b"\xe9\x01" + b"\0" * 100)
        raise UsageError("bad image")

    with pytest.raises(UsageError):
        FlashImage(path, initialise=fail)
    assert list(tmp_path.iterdir()) == []  # no flash, no temp file
    with FlashImage(path, initialise=lambda f: f.write_slot(0, b"\xe9\x01" + b"\0" * 100)) as flash:
        assert flash.created and flash.slot_head(0, 2) == b"\xe9\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_flash_creation_on_a_full_disk_leaves_nothing(tmp_path):
    path = tmp_path / "f.bin"
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0x100000, old[1]))  # writes beyond 1 MiB fail (EFBIG)
    try:
        with pytest.raises(BoardError, match=f"cannot create flash file {path}"):
            FlashImage(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)
    assert os.listdir(tmp_path) == []


def test_build_timestamp_notes_survive_config_writes_and_die_with_the_slot(tmp_path):
    with FlashImage(tmp_path / "f.bin") as flash:
        flash.write_slot(1, b"\xea\x04" + b"\1" * 5000)
        assert flash.noted_build_timestamp(1) is None
        flash.note_build_timestamp(1, 4_000_000_000_000)
        flash.set_current_rom(1)  # rBoot rewrites its sector: the note stays
        assert flash.boot_config().current_rom == 1
    with FlashImage(tmp_path / "f.bin", create=False) as flash:
        assert flash.noted_build_timestamp(1) == 4_000_000_000_000 and flash.noted_build_timestamp(0) is None
        flash.write_slot(1, b"\xe9\x01" + b"\2" * 5000)  # other firmware in the slot: the note is void
        assert flash.noted_build_timestamp(1) is None


def test_a_flash_made_for_one_layout_is_refused_with_another(tmp_path):
    from otalib.board.sim.flash import ESP8266_LAYOUT, HOST_LAYOUT

    FlashImage(tmp_path / "f.bin", ESP8266_LAYOUT).close()
    with pytest.raises(BoardError, match=r"made for the esp8266 layout \(ROM slots at 0x2000, 0x102000\)"):
        FlashImage(tmp_path / "f.bin", HOST_LAYOUT)
    with FlashImage(tmp_path / "f.bin", ESP8266_LAYOUT) as flash:  # the same layout opens, and keeps its record
        flash.set_current_rom(1)
        flash.note_build_timestamp(1, 7)
    with pytest.raises(BoardError, match="made for the esp8266 layout"):
        FlashImage(tmp_path / "f.bin", HOST_LAYOUT)
