"""The file-backed flash: erased creation, sectors, rBoot config, slot writer."""

from __future__ import annotations

import pytest

from otalib.board.flash import (
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
