"""One call from a firmware image to a deployable package, in any update mode.

``standard`` packs the raw image (the device's StandardPayloadParser); the other
modes wrap it in an OTA upgrade file first (AdvancedPayloadParser): ``md5``
(unsigned, checksum only), ``signed``, ``encrypted``, ``signed+encrypted``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.flash import ESP8266_LAYOUT
from otalib.errors import UsageError
from otalib.formats.ota import Rom, build_ota
from otalib.formats.package import pack
from otalib.formats.version import device_patch
from otalib.keys import LabKey
from otalib.vocabulary import UpdateMode

#: Where the ROM of a single-ROM OTA file goes unless a build says: rom0 of a real ESP8266
#: (0x2000; ``addr & 0xFFFFF`` makes this one ROM match either slot, 0x2000 or 0x102000).
DEFAULT_ROM_ADDRESS = ESP8266_LAYOUT.roms[0]


@dataclass(frozen=True)
class Update:
    """A package ready to deploy and what it was made from."""

    mode: UpdateMode
    patch: int
    varint: bool
    package: bytes = field(repr=False)
    ota: bytes | None = field(default=None, repr=False)
    timestamp: int | None = None

    @property
    def advanced(self) -> bool:
        """True when the device must be built with ENABLE_OTA_ADVANCED=1."""
        return self.mode.advanced

    @property
    def signed(self) -> bool:
        return self.mode.signed

    @property
    def encrypted(self) -> bool:
        return self.mode.encrypted

    @property
    def device_patch(self) -> int:
        """The patch a Sming 6.1 device reads from this package."""
        return device_patch(self.patch, self.varint)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.package).hexdigest()


def make_update(
    image: bytes,
    mode: UpdateMode | str = UpdateMode.SIGNED,
    *,
    patch: int,
    key: LabKey | None = None,
    varint: bool = True,
    timestamp: int | None = None,
    address: int | None = None,
    build: DeviceBuild | None = None,
) -> Update:
    """Build the package for ``image`` in ``mode`` (an :class:`~otalib.vocabulary.UpdateMode` or its name).

    The ROM goes at ``address``, else at the ``build``'s rom0 (its flash layout), else at
    :data:`DEFAULT_ROM_ADDRESS`.
    """
    if address is None:
        address = build.rom_address if build is not None else DEFAULT_ROM_ADDRESS
    mode = UpdateMode.parse(mode)
    if mode is UpdateMode.STANDARD:
        return Update(mode, patch, varint, pack(image, patch, varint))
    if mode.needs_key and key is None:
        raise UsageError(f"mode {mode.value!r} needs a key")
    ota = build_ota([Rom(address, image)], key, signed=mode.signed, encrypted=mode.encrypted, timestamp=timestamp)
    return Update(mode, patch, varint, pack(ota, patch, varint), ota, timestamp)
