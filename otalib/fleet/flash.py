"""Flash chips in memory for a fleet: the same :class:`~otalib.board.sim.flash.FlashImage`, no file.

A thousand boards of 4 MiB flash would be 4 GiB of files; here each board keeps only the
sectors that are not erased, and identical sectors (every board of a group holds the same
firmware) are stored once in a :class:`SectorPool` shared by the fleet. The sector a board
is writing stays private (mutable) until the board moves on to another sector.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from otalib.board.sim.flash import ERASED, SECTOR, FlashImage, Layout

_ERASED_SECTOR = bytes([ERASED]) * SECTOR


class SectorPool:
    """Interns sector contents: equal sectors of any flash in the pool share one ``bytes``.

    Boards of a group write the same firmware at the same addresses: the sector last interned at
    an index is compared first (a ``memcmp``), and only a different one is hashed for the dict.
    """

    def __init__(self) -> None:
        self._sectors: dict[bytes, bytes] = {}
        self._last_at: dict[int, bytes] = {}

    def intern(self, data: bytes, index: int | None = None) -> bytes:
        if index is not None:
            last = self._last_at.get(index)
            if last is not None and last == data:
                return last
        shared = self._sectors.setdefault(data, data)
        if index is not None:
            self._last_at[index] = shared
        return shared

    @property
    def sectors(self) -> int:
        """Distinct sector contents held."""
        return len(self._sectors)


class MemoryFlash(FlashImage):
    """A :class:`FlashImage` whose bytes live in a :class:`SectorPool` (``path`` is only a name)."""

    def __init__(
        self,
        path: str | Path,
        layout: Layout,
        *,
        pool: SectorPool | None = None,
        initialise: Callable[[FlashImage], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.layout = layout
        self.size = layout.flash_size
        self.created = True
        self._fd = -1
        self._pool = pool or SectorPool()
        self._sectors: dict[int, bytes] = {}
        self._hot_index = -1
        self._hot: bytearray | None = None
        self._record_layout()
        if initialise is not None:
            initialise(self)
        self._freeze()

    # -- sectors --
    def _freeze(self) -> None:
        hot, index = self._hot, self._hot_index
        self._hot, self._hot_index = None, -1
        if hot is None:
            return
        self._store(index, bytes(hot))

    def _sector(self, index: int) -> bytes | bytearray:
        if index == self._hot_index and self._hot is not None:
            return self._hot
        return self._sectors.get(index, _ERASED_SECTOR)

    def _mutable(self, index: int) -> bytearray:
        if index != self._hot_index:
            self._freeze()
            self._hot = bytearray(self._sectors.get(index, _ERASED_SECTOR))
            self._hot_index = index
        assert self._hot is not None
        return self._hot

    # -- raw access (what FlashImage does with its file) --
    def read(self, addr: int, length: int) -> bytes:
        self._check(addr, length)
        out = bytearray()
        while length > 0:
            index, offset = divmod(addr, SECTOR)
            n = min(length, SECTOR - offset)
            out += self._sector(index)[offset : offset + n]
            addr += n
            length -= n
        return bytes(out)

    def write(self, addr: int, data: bytes | memoryview) -> None:
        n = len(data)
        index, offset = divmod(addr, SECTOR)
        if index == self._hot_index and offset + n <= SECTOR and self._hot is not None:  # the common case
            self._hot[offset : offset + n] = data
            return
        self._check(addr, n)
        view = memoryview(data)
        while len(view):
            index, offset = divmod(addr, SECTOR)
            n = min(len(view), SECTOR - offset)
            if n == SECTOR:  # a whole sector (a large write): stored as it is, no private copy first
                self._store(index, bytes(view[:n]))
            else:
                self._mutable(index)[offset : offset + n] = view[:n]
            view = view[n:]
            addr += n

    def _store(self, index: int, data: bytes) -> None:
        """Sector ``index`` is now ``data`` (a whole sector)."""
        if index == self._hot_index:
            self._hot, self._hot_index = None, -1
        if data == _ERASED_SECTOR:
            self._sectors.pop(index, None)
        else:
            self._sectors[index] = self._pool.intern(data, index)

    def erase_sector(self, addr: int) -> None:
        start = addr - addr % SECTOR
        self._check(start, SECTOR)
        index = start // SECTOR
        if index == self._hot_index:
            self._hot, self._hot_index = None, -1
        self._sectors.pop(index, None)

    def flush(self) -> None:
        self._freeze()

    def close(self) -> None:
        self._freeze()

    @property
    def sectors_held(self) -> int:
        """Sectors that are not erased (shared ones included)."""
        return len(self._sectors) + (self._hot is not None and self._hot_index not in self._sectors)
