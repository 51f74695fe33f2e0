"""How a device was built: :class:`DeviceBuild`, one frozen value made from the lab configuration.

The device model (:class:`~otalib.board.sim.device.Device`), the virtual board, a lab
session, ``otalab board`` and ``otalab inspect`` all take one. Its fields are the
firmware's compiled-in facts, in the Sming framework's terms: ``APP_ID``,
``APP_VERSION`` (+ patch), ``FIRMWARE_BUILD_TIMESTAMP``, ``ENABLE_OTA_ADVANCED`` /
``ENABLE_OTA_SIGNING`` / ``ENABLE_OTA_ENCRYPTION`` with the keys, ``ENABLE_OTA_VARINT_VERSION``,
the framework profile, the chip and its flash layout. ``None`` means not known: a judge
(``inspect``) lets the file decide, a device takes its default.
Run-time wiring (broker URL, flash file, link, clock) is not part of a build.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from otalib.board.sim.flash import ESP8266_LAYOUT, HOST_LAYOUT, Layout, LayoutName, named_layout
from otalib.errors import UsageError
from otalib.formats.version import DeviceProfile, Version
from otalib.keys import DeviceKeys
from otalib.vocabulary import FirmwareParser, UpdateMode


class Chip(str, enum.Enum):
    """The SoC the firmware was built for (``SMING_ARCH``)."""

    ESP8266 = "esp8266"
    ESP32 = "esp32"

    def __str__(self) -> str:
        return self.value


#: The version of a build that names none.
DEFAULT_VERSION = Version(4, 3, 0)
#: The flash layout a chip's build has unless one is named (esp8266: the real one).
DEFAULT_LAYOUTS: dict[Chip, Layout] = {Chip.ESP8266: ESP8266_LAYOUT, Chip.ESP32: HOST_LAYOUT}


@dataclass(frozen=True)
class DeviceBuild:
    """A device's firmware build; ``None`` means not known (a judge lets the file decide).

    ``signing``/``encryption`` are ``ENABLE_OTA_SIGNING``/``ENABLE_OTA_ENCRYPTION`` (None:
    as the keys say), ``advanced`` is ``ENABLE_OTA_ADVANCED`` (None: a device is advanced,
    a judge asks the file), ``firmware_timestamp`` the running firmware's build timestamp
    (ms since 1900; downgrade protection), ``current_patch`` its patch version (older
    packages are skipped; None: ``version``'s patch for a device, unknown for a judge).
    ``write_current_slot`` (standard mode): the sample's bug of writing the running slot
    (None: on for ``sming-6.1``). ``layout``: None is the chip's default
    (:data:`DEFAULT_LAYOUTS`); a :class:`~otalib.board.sim.flash.LayoutName` or its value
    names one.
    """

    keys: DeviceKeys = field(default_factory=DeviceKeys)
    signing: bool | None = None
    encryption: bool | None = None
    advanced: bool | None = None
    firmware_timestamp: int | None = None
    current_patch: int | None = None
    profile: DeviceProfile = DeviceProfile.SMING_61
    app_id: str = "test"
    version: Version = DEFAULT_VERSION
    varint: bool = True
    write_current_slot: bool | None = None
    allow_downgrade: bool = False
    chip: Chip = Chip.ESP8266
    layout: Layout | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", DeviceProfile(self.profile))
        try:
            object.__setattr__(self, "chip", Chip(self.chip))
        except ValueError:
            raise UsageError(f"unknown chip {self.chip!r} (choose from esp8266, esp32)") from None
        if isinstance(self.version, str):
            object.__setattr__(self, "version", Version.parse(self.version))
        if isinstance(self.layout, (str, LayoutName)):
            object.__setattr__(self, "layout", named_layout(self.layout))
        patch = self.current_patch
        if patch is not None and (isinstance(patch, bool) or not isinstance(patch, int) or patch < 0):
            raise UsageError(f"bad patch {patch!r}: expected a non-negative integer")
        stamp = self.firmware_timestamp
        if stamp is not None and not 0 <= stamp < 1 << 64:
            raise UsageError(f"bad build timestamp {stamp}: expected ms since 1900 (0..2^64-1)")

    # -- what a device of this build is --
    @property
    def is_advanced(self) -> bool:
        """The device parses ``.ota`` files (ENABLE_OTA_ADVANCED; a device's default is on)."""
        return self.advanced is not False

    @property
    def parser(self) -> FirmwareParser:
        """The payload parser compiled in (``ENABLE_OTA_ADVANCED``)."""
        return FirmwareParser.ADVANCED if self.is_advanced else FirmwareParser.STANDARD

    @property
    def running_version(self) -> Version:
        """``version`` with ``current_patch`` (when given) as its patch."""
        if self.current_patch is None:
            return self.version
        return Version(self.version.major, self.version.minor, self.current_patch)

    @property
    def device_keys(self) -> DeviceKeys:
        """The keys compiled in: none in standard mode; those the signing/encryption flags keep."""
        if not self.is_advanced:
            return DeviceKeys()
        return DeviceKeys(
            None if self.signing is False else self.keys.verify,
            None if self.encryption is False else self.keys.decrypt,
        )

    @property
    def flash_layout(self) -> Layout:
        """The flash layout (the chip's default unless one is named)."""
        return self.layout or DEFAULT_LAYOUTS[self.chip]

    @property
    def rom_address(self) -> int:
        """Where a single-ROM ``.ota`` for this device puts its ROM: rom0's address
        (the device matches ``addr & 0xFFFFF``, so it fits either slot of a two-ROM layout)."""
        return self.flash_layout.roms[0]

    @property
    def update_mode(self) -> UpdateMode:
        """The update mode of the packages this device applies."""
        if not self.is_advanced:
            return UpdateMode.STANDARD
        keys = self.device_keys
        signed, encrypted = keys.verify is not None, keys.decrypt is not None
        if signed and encrypted:
            return UpdateMode.SIGNED_ENCRYPTED
        return UpdateMode.SIGNED if signed else UpdateMode.ENCRYPTED if encrypted else UpdateMode.MD5

    def accepts(self, mode: UpdateMode | str) -> bool:
        """True when a package made in ``mode`` is one this device's build applies."""
        return UpdateMode.parse(mode) is self.update_mode

    def accepting(self, mode: UpdateMode | str, keys: DeviceKeys | None = None) -> DeviceBuild:
        """A copy built to apply packages made in update ``mode`` (with ``keys``, default its own)."""
        mode = UpdateMode.parse(mode)
        return replace(
            self,
            keys=self.keys if keys is None else keys,
            advanced=mode.advanced,
            signing=mode.signed,
            encryption=mode.encrypted,
        )

    def with_options(self, **changes: Any) -> DeviceBuild:
        """A copy with the given fields changed; ``None`` values leave a field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (never the keys themselves)."""
        return {
            "signing": self.signing,
            "encryption": self.encryption,
            "advanced": self.advanced,
            "verify_key": self.keys.verify is not None,
            "decrypt_key": self.keys.decrypt is not None,
            "firmware_timestamp": self.firmware_timestamp,
            "allow_downgrade": self.allow_downgrade,
            "current_patch": self.current_patch,
            "profile": self.profile.value,
        }
