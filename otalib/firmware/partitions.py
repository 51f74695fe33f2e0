"""Sming / ESP-IDF binary partition tables (``partitions.bin``).

32-byte entries, little-endian::

    u16 magic 0x50AA, u8 type, u8 subtype, u32 offset, u32 size, char label[16], u32 flags

ended by an erased entry or an MD5 entry (magic 0xEBEB, then the MD5 of the entries
before it). Type 0 is an app (a ROM slot: subtype 0x10 + n is ``ota_n``), 1 data, 2 a
storage device (Sming's ``spiFlash`` entry: the whole flash chip).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from otalib.errors import UsageError

ENTRY_SIZE = 32
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
#: The most entries a table holds (one 4 KiB sector... minus the MD5 entry, as ESP-IDF).
MAX_ENTRIES = 95


class PartitionType(enum.IntEnum):
    APP = 0
    DATA = 1
    STORAGE = 2  # Sming: a storage device entry (spiFlash)


_KNOWN_TYPES = frozenset(int(t) for t in PartitionType)


@dataclass(frozen=True)
class Partition:
    """One entry of a partition table."""

    label: str
    type: PartitionType | int
    subtype: int
    offset: int
    size: int
    flags: int = 0


def read_partitions(data: bytes, *, source: str = "partition table") -> list[Partition]:
    """The entries of a binary partition table; :class:`UsageError` (naming ``source``) if it is none.

    A stored MD5 that does not match the entries is refused.
    """
    data = bytes(data)
    entries: list[Partition] = []
    for pos in range(0, min(len(data), (MAX_ENTRIES + 1) * ENTRY_SIZE) - ENTRY_SIZE + 1, ENTRY_SIZE):
        entry = data[pos : pos + ENTRY_SIZE]
        if entry[:2] == MD5_MAGIC:
            if entry[16:32] != hashlib.md5(data[:pos], usedforsecurity=False).digest():
                raise UsageError(f"{source}: the table's MD5 does not match its entries")
            break
        if entry[:2] != ENTRY_MAGIC:
            break
        ptype = int(entry[2])
        label = entry[12:28].split(b"\0", 1)[0].decode("ascii", "replace")
        entries.append(
            Partition(
                label=label,
                type=PartitionType(ptype) if ptype in _KNOWN_TYPES else ptype,
                subtype=entry[3],
                offset=int.from_bytes(entry[4:8], "little"),
                size=int.from_bytes(entry[8:12], "little"),
                flags=int.from_bytes(entry[28:32], "little"),
            )
        )
    if not entries:
        raise UsageError(f"{source}: not a partition table (no 0xAA50 entries)")
    return entries


def app_partitions(data: bytes) -> dict[str, int]:
    """``{label: offset}`` of the app partitions (ROM slots) of a table; empty if ``data`` is none."""
    try:
        entries = read_partitions(data)
    except UsageError:
        return {}
    return {p.label: p.offset for p in entries if p.type is PartitionType.APP and p.label}
