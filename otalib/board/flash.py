"""A file-backed SPI flash with rBoot's two-ROM layout (the virtual board's flash chip).

The file is the flash: created erased (all ``0xFF``), read and written with
``pread``/``pwrite`` so nothing of its content stays in memory. Sectors are 4 KiB.
rBoot keeps its config in the sector at ``0x1000``::

    u8 magic (0xE1), u8 version (0x01), u8 mode, u8 current_rom, u8 gpio_rom,
    u8 count, u8 unused[2], u32 roms[4]

:data:`TWO_ROM_LAYOUT` is the Sming sample's "spiffs-two-roms" layout (4 MB flash,
``rom0`` at 0x8000 and ``rom1`` at 0x108000, 0xF8000 bytes each).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from otalib.errors import BoardError, UsageError

SECTOR = 0x1000
ERASED = 0xFF
BOOT_CONFIG_ADDR = 0x1000
RBOOT_MAGIC = 0xE1
RBOOT_VERSION = 0x01
MAX_ROMS = 4
_CONFIG = struct.Struct("<BBBBBB2x4I")


@dataclass(frozen=True)
class Layout:
    """Flash size and the ROM slots' addresses; every slot is ``slot_size`` bytes."""

    flash_size: int = 0x400000
    roms: tuple[int, ...] = (0x8000, 0x108000)
    slot_size: int = 0xF8000

    def __post_init__(self) -> None:
        if not 1 <= len(self.roms) <= MAX_ROMS:
            raise UsageError(f"a layout has 1..{MAX_ROMS} ROM slots")
        for addr in self.roms:
            if addr % SECTOR or addr < BOOT_CONFIG_ADDR + SECTOR or addr + self.slot_size > self.flash_size:
                raise UsageError(f"ROM slot at {addr:#x} (size {self.slot_size:#x}) does not fit the flash")

    def slot_range(self, slot: int) -> tuple[int, int]:
        """``(start, end)`` flash addresses of ``slot``."""
        start = self.roms[slot]
        return start, start + self.slot_size

    def other_slot(self, slot: int) -> int:
        """The "next" slot after ``slot`` (rBoot's two-ROM update target)."""
        return (slot + 1) % len(self.roms)

    @property
    def rom_table(self) -> tuple[tuple[int, int], ...]:
        """``((address, size), ...)`` as the console prints the partitions."""
        return tuple((addr, self.slot_size) for addr in self.roms)


#: The Sming sample's layout (4 MB flash, two 992 KB slots).
TWO_ROM_LAYOUT = Layout()


def big_layout(slot_mib: int = 16) -> Layout:
    """A bigger two-ROM layout: ``2 * slot_mib`` MiB + 1 MiB flash with ``slot_mib`` MiB slots."""
    slot = slot_mib * 0x100000
    return Layout(flash_size=2 * slot + 0x100000, roms=(0x100000, 0x100000 + slot), slot_size=slot)


@dataclass(frozen=True)
class BootConfig:
    """rBoot's config sector."""

    current_rom: int
    roms: tuple[int, ...]
    mode: int = 0
    gpio_rom: int = 0
    magic: int = RBOOT_MAGIC
    version: int = RBOOT_VERSION

    def pack(self) -> bytes:
        roms = list(self.roms) + [0] * (MAX_ROMS - len(self.roms))
        return _CONFIG.pack(self.magic, self.version, self.mode, self.current_rom, self.gpio_rom, len(self.roms), *roms)

    @classmethod
    def unpack(cls, data: bytes) -> BootConfig | None:
        """The config in ``data``, or None when the sector holds no valid config (erased)."""
        magic, version, mode, current, gpio, count, *roms = _CONFIG.unpack_from(data)
        if magic != RBOOT_MAGIC or not 1 <= count <= MAX_ROMS or current >= count:
            return None
        return cls(current, tuple(roms[:count]), mode, gpio, magic, version)


class FlashImage:
    """A flash chip backed by the file ``path`` (created erased when missing).

    An existing file must have the layout's flash size. Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], layout: Layout = TWO_ROM_LAYOUT, *, create: bool = True) -> None:
        self.path = Path(path)
        self.layout = layout
        self.size = layout.flash_size
        self.created = False
        exists = self.path.exists()
        if not exists and not create:
            raise BoardError(f"flash file not found: {self.path}")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BoardError(f"cannot open flash file {self.path}: {exc.strerror or exc}") from None
        actual = os.fstat(self._fd).st_size
        if not exists or actual == 0:
            self._fill_erased()
            self.created = True
        elif actual != self.size:
            os.close(self._fd)
            raise BoardError(f"flash file {self.path} has {actual} bytes, the layout needs {self.size}")

    def _fill_erased(self) -> None:
        block = bytes([ERASED]) * 0x100000
        for offset in range(0, self.size, len(block)):
            os.pwrite(self._fd, block[: min(len(block), self.size - offset)], offset)

    # -- raw access --
    def _check(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise BoardError(f"flash access {addr:#x}+{length:#x} outside the {self.size:#x}-byte flash")

    def read(self, addr: int, length: int) -> bytes:
        """``length`` bytes from ``addr``."""
        self._check(addr, length)
        return os.pread(self._fd, length, addr)

    def write(self, addr: int, data: bytes | memoryview) -> None:
        """Program ``data`` at ``addr`` (the caller erased the sectors first, as the device does)."""
        self._check(addr, len(data))
        view = memoryview(data)
        while len(view):
            done = os.pwrite(self._fd, view, addr)
            view = view[done:]
            addr += done

    def erase_sector(self, addr: int) -> None:
        """Erase the 4 KiB sector holding ``addr`` (all bytes become ``0xFF``)."""
        start = addr - addr % SECTOR
        self._check(start, SECTOR)
        os.pwrite(self._fd, bytes([ERASED]) * SECTOR, start)

    def erase_range(self, addr: int, length: int) -> None:
        """Erase every sector that ``[addr, addr + length)`` touches."""
        for sector in range(addr - addr % SECTOR, addr + length, SECTOR):
            self.erase_sector(sector)

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FlashImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rBoot config --
    def boot_config(self) -> BootConfig | None:
        """The rBoot config, or None if the config sector is erased/invalid."""
        return BootConfig.unpack(self.read(BOOT_CONFIG_ADDR, _CONFIG.size))

    def write_boot_config(self, config: BootConfig) -> None:
        """Erase the config sector and write ``config`` (as rBoot does)."""
        self.erase_sector(BOOT_CONFIG_ADDR)
        self.write(BOOT_CONFIG_ADDR, config.pack())

    def default_boot_config(self) -> BootConfig:
        """What rBoot writes when it finds no config: boot ROM 0."""
        return BootConfig(0, self.layout.roms)

    def set_current_rom(self, slot: int) -> None:
        """Select the ROM slot rBoot boots next (``rboot_set_current_rom``)."""
        if not 0 <= slot < len(self.layout.roms):
            raise BoardError(f"no ROM slot {slot}")
        config = self.boot_config() or self.default_boot_config()
        self.write_boot_config(BootConfig(slot, config.roms, config.mode, config.gpio_rom))

    # -- slots --
    def slot_head(self, slot: int, length: int = SECTOR) -> bytes:
        """The first ``length`` bytes of ``slot``."""
        start, _ = self.layout.slot_range(slot)
        return self.read(start, length)

    def write_slot(self, slot: int, image: bytes) -> None:
        """Erase ``slot``'s sectors that ``image`` covers and program it (flash tooling, not OTA)."""
        start, end = self.layout.slot_range(slot)
        if len(image) > end - start:
            raise BoardError(f"image of {len(image)} bytes does not fit slot {slot} ({end - start} bytes)")
        self.erase_range(start, len(image))
        self.write(start, image)

    def erase_slot_header(self, slot: int) -> None:
        """Erase the first sector of ``slot`` (it can no longer boot)."""
        self.erase_sector(self.layout.slot_range(slot)[0])


class SlotWriter:
    """Streams bytes into a slot as the device's flash writer does: each sector is erased
    when the write first reaches it; data beyond the slot raises :class:`BoardError`."""

    def __init__(self, flash: FlashImage, start: int, size: int) -> None:
        self.flash = flash
        self.start = start
        self.size = size
        self.written = 0
        self._erased_to = start  # first address not yet erased

    def write(self, data: bytes | memoryview) -> None:
        if self.written + len(data) > self.size:
            raise BoardError(f"write beyond the end of the slot at {self.start:#x} ({self.size} bytes)")
        addr = self.start + self.written
        end = addr + len(data)
        while self._erased_to < end:
            self.flash.erase_sector(self._erased_to)
            self._erased_to += SECTOR
        self.flash.write(addr, data)
        self.written += len(data)
