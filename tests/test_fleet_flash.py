"""The fleet's flash in memory behaves as the file-backed flash, and boards share identical sectors."""

from __future__ import annotations

import random

from otalib.board.sim.flash import ESP8266_LAYOUT, SECTOR, FlashImage
from otalib.fleet.flash import MemoryFlash, SectorPool


def test_memory_flash_reads_what_the_file_flash_reads(tmp_path):
    rng = random.Random(5)
    with FlashImage(tmp_path / "flash.bin", ESP8266_LAYOUT) as file_flash:
        memory = MemoryFlash("mem", ESP8266_LAYOUT)
        for _ in range(400):
            op = rng.random()
            addr = rng.randrange(0x2000, 0x40000)
            if op < 0.2:
                file_flash.erase_sector(addr)
                memory.erase_sector(addr)
            else:
                data = rng.randbytes(rng.choice([1, 17, 1460, 4096, 9000]))
                file_flash.write(addr, data)
                memory.write(addr, data)
            if op > 0.9:  # read across sector edges, the sector being written included
                start, length = rng.randrange(0x1000, 0x40000), rng.randrange(1, 3 * SECTOR)
                assert memory.read(start, length) == file_flash.read(start, length)
        assert memory.read(0, 0x41000) == file_flash.read(0, 0x41000)
        assert memory.boot_config() == file_flash.boot_config()


def test_identical_sectors_are_stored_once():
    pool = SectorPool()
    image = random.Random(1).randbytes(40 * SECTOR)
    flashes = [MemoryFlash(f"b{i}", ESP8266_LAYOUT, pool=pool) for i in range(50)]
    for flash in flashes:
        flash.write_slot(1, image)
        flash.close()
    assert all(f.read(ESP8266_LAYOUT.roms[1], len(image)) == image for f in flashes)
    assert 40 <= pool.sectors <= 40 + 2  # the image's sectors and the boot config sectors, once for all 50
    first = ESP8266_LAYOUT.roms[1] // SECTOR
    assert all(f._sectors[first + 7] is flashes[0]._sectors[first + 7] for f in flashes)  # one object, shared
    assert flashes[0].sectors_held >= 40


def test_a_different_sector_at_the_same_index_is_not_taken_for_the_last_one():
    pool = SectorPool()
    a, b = bytes(range(256)) * 16, bytes(reversed(range(256))) * 16
    first = pool.intern(a, 5)
    assert pool.intern(bytes(bytearray(a)), 5) is first  # equal: the one object
    other = pool.intern(b, 5)  # different content at the same index: its own
    assert other == b and other is not first
    assert pool.intern(bytes(bytearray(a)), 5) is first and pool.sectors == 2  # the dict still knows the first
    assert pool.intern(bytes(bytearray(b)), 9) is other  # equal content at another index: shared too


def test_a_large_write_over_the_sector_being_written_replaces_it(tmp_path):
    """Whole sectors of a large write are stored as they are; the sector in progress must not shadow them."""
    rng = random.Random(9)
    base = 0x10 * SECTOR
    with FlashImage(tmp_path / "flash.bin", ESP8266_LAYOUT) as file_flash:
        memory = MemoryFlash("mem", ESP8266_LAYOUT, pool=SectorPool())
        for addr, size in ((base + 100, 50), (base - 10, 3 * SECTOR), (base + SECTOR + 7, 9), (base, 2 * SECTOR)):
            data = rng.randbytes(size)  # a partial write (the sector in progress), then whole sectors over it
            file_flash.write(addr, data)
            memory.write(addr, data)
            assert memory.read(base - SECTOR, 4 * SECTOR) == file_flash.read(base - SECTOR, 4 * SECTOR)
        erased = bytes([0xFF]) * SECTOR
        memory.write(base, erased)  # an erased sector written whole is not held
        assert base // SECTOR not in memory._sectors and memory.read(base, SECTOR) == erased
