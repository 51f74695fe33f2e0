"""A file-backed SPI flash with rBoot's two-ROM layout (the virtual board's flash chip).

The file is the flash: created erased (all ``0xFF``) and initialised in a temp file
that is then renamed (never a half-made flash), read and written with
``pread``/``pwrite`` so nothing of its content stays in memory. Sectors are 4 KiB.
rBoot keeps its config in the sector at ``0x1000``::

    u8 magic (0xE1), u8 version (0x01), u8 mode, u8 current_rom, u8 gpio_rom,
    u8 count, u8 unused[2], u32 roms[4]

Layouts of the Sming sample's "spiffs-two-roms" hardware config (4 MB flash, two
0xF8000-byte slots; protocol.md §4): :data:`ESP8266_LAYOUT`, a real ESP8266 (rBoot at 0x0,
``rom0`` 0x2000, ``rom1`` 0x102000, partition table 0x3FA000), and :data:`HOST_LAYOUT`,
Sming's Host emulator (``rom0`` 0x8000, ``rom1`` 0x108000: what the recorded consoles show).
:func:`layout_from_partitions` reads a layout from a Sming ``partitions.bin``.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from otalib.errors import BoardError, UsageError

SECTOR = 0x1000
ERASED = 0xFF
BOOT_CONFIG_ADDR = 0x1000
RBOOT_MAGIC = 0xE1
RBOOT_VERSION = 0x01
MAX_ROMS = 4
#: The largest ROM slot a real flash chip holds (16 MiB chips; rBoot maps at most 8 MiB).
MAX_SLOT_SIZE = 16 * 0x100000
#: The largest virtual flash (two 16 MiB slots and 1 MiB below them).
MAX_FLASH_SIZE = 2 * MAX_SLOT_SIZE + 0x100000
_CONFIG = struct.Struct("<BBBBBB2x4I")
#: otalab's note of the build timestamp per slot: in rBoot's config sector, after its config
#: (a real rBoot leaves the rest of the sector unused); not something a device has.
_NOTES_ADDR = BOOT_CONFIG_ADDR + 0x800
_NOTES_MAGIC = b"OTALAB-SLOTS\0"
_NOTES_HEAD = 0x10000  # the slot bytes a note is bound to (rewriting them voids the note)


class LayoutName(str, enum.Enum):
    """The named flash layouts of the sample (``otalab board --layout``)."""

    ESP8266 = "esp8266"  # a real ESP8266 built by Sming: rom0 0x2000, rom1 0x102000
    HOST = "host"  # Sming's Host emulator (the recorded consoles): rom0 0x8000, rom1 0x108000


@dataclass(frozen=True)
class Layout:
    """Flash size and the ROM slots' addresses; every slot is ``slot_size`` bytes.

    ``partition_table``: where Sming's partition table lives (None: not modelled).
    """

    flash_size: int = 0x400000
    roms: tuple[int, ...] = (0x8000, 0x108000)
    slot_size: int = 0xF8000
    name: str = LayoutName.HOST.value
    partition_table: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.roms) <= MAX_ROMS:
            raise UsageError(f"a layout has 1..{MAX_ROMS} ROM slots")
        if not 0 < self.slot_size <= MAX_SLOT_SIZE or self.slot_size % SECTOR:
            raise UsageError(f"ROM slot size {self.slot_size:#x}: expected whole 4 KiB sectors, at most 16 MiB")
        if not 0 < self.flash_size <= MAX_FLASH_SIZE:
            raise UsageError(f"flash size {self.flash_size:#x}: at most {MAX_FLASH_SIZE // 0x100000} MiB")
        for addr in self.roms:
            if addr % SECTOR or addr < BOOT_CONFIG_ADDR + SECTOR or addr + self.slot_size > self.flash_size:
                raise UsageError(f"ROM slot at {addr:#x} (size {self.slot_size:#x}) does not fit the flash")
        table = self.partition_table
        if table is not None and (table % SECTOR or not BOOT_CONFIG_ADDR < table < self.flash_size):
            raise UsageError(f"partition table at {table:#x} does not fit the flash")

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


#: A real ESP8266 with Sming's "spiffs-two-roms" (4 MB flash, two 992 KB slots, rBoot at 0x0).
ESP8266_LAYOUT = Layout(roms=(0x2000, 0x102000), name=LayoutName.ESP8266.value, partition_table=0x3FA000)
#: Sming's Host emulator with the same hardware config (what the recorded consoles show).
HOST_LAYOUT = Layout()
#: The Host emulator's layout (the name older code uses).
TWO_ROM_LAYOUT = HOST_LAYOUT
LAYOUTS: dict[LayoutName, Layout] = {LayoutName.ESP8266: ESP8266_LAYOUT, LayoutName.HOST: HOST_LAYOUT}


def named_layout(name: LayoutName | str) -> Layout:
    """:data:`ESP8266_LAYOUT` or :data:`HOST_LAYOUT` by name; :class:`UsageError` otherwise."""
    try:
        return LAYOUTS[LayoutName(name)]
    except ValueError:
        raise UsageError(f"unknown layout {name!r} (choose from {', '.join(n.value for n in LayoutName)})") from None


def big_layout(slot_mib: int = 16) -> Layout:
    """A bigger two-ROM layout: ``2 * slot_mib`` MiB + 1 MiB flash with ``slot_mib`` MiB slots (1..16)."""
    if isinstance(slot_mib, bool) or not isinstance(slot_mib, int) or not 1 <= slot_mib <= MAX_SLOT_SIZE // 0x100000:
        raise UsageError(f"bad slot size {slot_mib!r} MiB: real flash chips allow 1..16 MiB slots")
    slot = slot_mib * 0x100000
    return Layout(flash_size=2 * slot + 0x100000, roms=(0x100000, 0x100000 + slot), slot_size=slot, name="big")


def layout_from_partitions(data: bytes, *, source: str = "partition table") -> Layout:
    """The layout a Sming ``partitions.bin`` describes: its app partitions are the ROM slots.

    The flash size is the ``spiFlash`` device entry's (else the end of the last partition,
    rounded up to a MiB); the table itself sits 0x6000 below the end, as Sming puts it.
    """
    from otalib.firmware.partitions import PartitionType, read_partitions

    entries = read_partitions(data, source=source)
    apps = sorted((p for p in entries if p.type is PartitionType.APP), key=lambda p: (p.subtype, p.offset))
    if not apps:
        raise UsageError(f"{source}: no app partitions (ROM slots)")
    sizes = {p.size for p in apps}
    if len(sizes) != 1:
        raise UsageError(f"{source}: the ROM slots differ in size ({', '.join(f'{s:#x}' for s in sorted(sizes))})")
    device = next((p for p in entries if p.type is PartitionType.STORAGE and p.offset == 0), None)
    end = max(p.offset + p.size for p in entries if p is not device)
    flash_size = device.size if device is not None else -(-end // 0x100000) * 0x100000
    table: int | None = flash_size - 0x6000
    others = [p for p in entries if p is not device]
    if table < 0 or any(p.offset < table + SECTOR and table < p.offset + p.size for p in others):
        table = None
    return Layout(
        flash_size=flash_size,
        roms=tuple(p.offset for p in apps),
        slot_size=sizes.pop(),
        name="partitions",
        partition_table=table,
    )


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
    """A flash chip backed by the file ``path``.

    A missing (or empty) file is made erased, ``initialise``d (e.g. its first firmware
    flashed) in a temp file beside it and renamed into place: a failure (a full disk, a
    bad image) leaves no flash file. An existing file must have the layout's flash size.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        layout: Layout = TWO_ROM_LAYOUT,
        *,
        create: bool = True,
        initialise: Callable[[FlashImage], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.layout = layout
        self.size = layout.flash_size
        self.created = False
        self._fd = -1
        try:
            actual = self.path.stat().st_size
        except FileNotFoundError:
            actual = None
        except OSError as exc:
            raise BoardError(f"cannot open flash file {self.path}: {exc.strerror or exc}") from None
        if actual is None and not create:
            raise BoardError(f"flash file not found: {self.path}")
        if not actual:
            _create_flash_file(self.path, layout, initialise)
            self.created = True
        try:
            self._fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise BoardError(f"cannot open flash file {self.path}: {exc.strerror or exc}") from None
        actual = os.fstat(self._fd).st_size
        if actual != self.size:
            os.close(self._fd)
            self._fd = -1
            raise BoardError(f"flash file {self.path} has {actual} bytes, the layout needs {self.size}")
        try:
            self._check_layout()
        except BoardError:
            self.close()
            raise

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
        """Erase the config sector and write ``config`` (as rBoot does; otalab's slot notes stay)."""
        notes = self.read(_NOTES_ADDR, SECTOR - (_NOTES_ADDR - BOOT_CONFIG_ADDR))
        self.erase_sector(BOOT_CONFIG_ADDR)
        self.write(BOOT_CONFIG_ADDR, config.pack())
        if notes.startswith(_NOTES_MAGIC):
            self.write(_NOTES_ADDR, notes.rstrip(b"\xff"))

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

    # -- otalab's note of each slot's build timestamp --
    def _slot_digest(self, slot: int) -> str:
        start, end = self.layout.slot_range(slot)
        return hashlib.sha256(self.read(start, min(_NOTES_HEAD, end - start))).hexdigest()[:32]

    def _notes(self) -> dict[str, dict]:
        raw = self.read(_NOTES_ADDR, SECTOR - (_NOTES_ADDR - BOOT_CONFIG_ADDR))
        if not raw.startswith(_NOTES_MAGIC):
            return {}
        body = raw[len(_NOTES_MAGIC) :].split(b"\0", 1)[0]
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            notes = json.loads(body.decode())
            if isinstance(notes, dict):
                return notes
        return {}

    def note_build_timestamp(self, slot: int, timestamp: int, patch: int | None = None) -> None:
        """Remember ``timestamp`` (ms since 1900) as the build time of the firmware now in ``slot``.

        A real device reads its compiled-in timestamp from the code; the virtual board
        cannot read it from a real ROM, so it keeps the timestamp of the ``.ota`` that
        installed the slot (or the one given when it was flashed). Rewriting the slot's
        first 64 KiB otherwise voids the note.
        """
        notes = {k: v for k, v in self._notes().items() if k != str(slot)}
        notes[str(slot)] = {"timestamp": int(timestamp), "digest": self._slot_digest(slot)}
        if patch is not None:
            notes[str(slot)]["patch"] = int(patch)
        self._write_notes(notes)

    def _write_notes(self, notes: dict) -> None:
        data = _NOTES_MAGIC + json.dumps(notes, separators=(",", ":")).encode() + b"\0"
        if len(data) > SECTOR - (_NOTES_ADDR - BOOT_CONFIG_ADDR):
            raise BoardError("otalab's slot notes do not fit rBoot's config sector")
        config = self.read(BOOT_CONFIG_ADDR, _CONFIG.size)
        self.erase_sector(BOOT_CONFIG_ADDR)
        self.write(BOOT_CONFIG_ADDR, config)
        self.write(_NOTES_ADDR, data)

    def _check_layout(self) -> None:
        """Refuse a flash file made for another layout (its firmware is not where this one looks)."""
        made = self._notes().get("layout")
        if not isinstance(made, dict):
            return  # an older file: nothing recorded
        if made.get("roms") != list(self.layout.roms) or made.get("slot_size") != self.layout.slot_size:
            roms = ", ".join(f"{a:#x}" for a in made.get("roms") or [] if isinstance(a, int))
            raise BoardError(
                f"flash file {self.path} was made for the {made.get('name', '?')} layout (ROM slots at {roms}): "
                f"use that layout (e.g. --layout {made.get('name', 'host')}) or a new flash file"
            )

    def _record_layout(self) -> None:
        layout = self.layout
        self._write_notes({"layout": {"name": layout.name, "roms": list(layout.roms), "slot_size": layout.slot_size}})

    def slot_note(self, slot: int) -> dict:
        """What :meth:`note_build_timestamp` kept for ``slot`` (``timestamp``, maybe ``patch``), if the
        slot still holds that firmware; else ``{}``."""
        note = self._notes().get(str(slot))
        if not isinstance(note, dict) or not isinstance(note.get("timestamp"), int):
            return {}
        if note.get("digest") != self._slot_digest(slot):
            return {}
        return {k: v for k, v in note.items() if k in ("timestamp", "patch") and isinstance(v, int)}

    def noted_build_timestamp(self, slot: int) -> int | None:
        """The timestamp :meth:`note_build_timestamp` kept for ``slot``, if the slot still holds that firmware."""
        return self.slot_note(slot).get("timestamp")


def _create_flash_file(path: Path, layout: Layout, initialise: Callable[[FlashImage], None] | None) -> None:
    """An erased flash file of ``layout``'s size, initialised, made in a temp file and renamed to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            block = bytes([ERASED]) * 0x100000
            for offset in range(0, layout.flash_size, len(block)):
                data = block[: min(len(block), layout.flash_size - offset)]
                if os.pwrite(fd, data, offset) != len(data):
                    raise OSError(28, "short write (disk full?)")
        finally:
            os.close(fd)
        with FlashImage(tmp, layout, create=False) as flash:
            flash._record_layout()
            if initialise is not None:
                initialise(flash)
            flash.flush()
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BoardError(f"cannot create flash file {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SlotWriter:
    """Streams bytes into a slot as the device's flash writer does: each sector is erased
    when the write first reaches it; data beyond the slot raises :class:`BoardError`."""

    def __init__(self, flash: FlashImage, start: int, size: int) -> None:
        self.flash = flash
        self.start = start
        self.size = size
        self.written = 0
        self._erased_to = start  # first address not yet erased

    @property
    def erased_to(self) -> int:
        """The first address not erased yet (the writer erases each sector when it first reaches it)."""
        return self._erased_to

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
