"""Versions, topics and the patch-version encoding of deployment packages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from otalib.errors import InputError, UsageError

#: Most bytes a device reads for a varint patch version before giving up.
MAX_VERSION_BYTES = 24

_VERSION_RE = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?\s*$")
_TOPIC_RE = re.compile(r"^a/(?P<app>[^/#+]+)/u/(?P<major>\d+)\.(?P<minor>\d+)(?:/(?P<channel>[^/#+]+))?$")


class DeviceProfile(str, Enum):
    """How a device decodes and applies packages.

    ``sming-6.1`` reproduces the real framework's quirks (additive varint decode,
    equal patch re-installs); ``reference`` behaves as the protocol intends.
    """

    SMING_61 = "sming-6.1"
    REFERENCE = "reference"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, order=True)
class Version:
    """A semantic version ``major.minor.patch`` (patch may be a unix time)."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``X.Y`` or ``X.Y.Z``; raise :class:`UsageError` otherwise."""
        match = _VERSION_RE.match(str(text))
        if not match:
            raise UsageError(f"bad version {text!r}: expected MAJOR.MINOR or MAJOR.MINOR.PATCH")
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    @property
    def major_minor(self) -> str:
        """``"major.minor"``: what a device subscribes to (``APP_VERSION``)."""
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def topic_for(app_id: str, version: Version | str, channel: str | None = None) -> str:
    """The update topic ``a/<app_id>/u/<major>.<minor>[/<channel>]``."""
    ver = Version.parse(version) if isinstance(version, str) else version
    if not app_id or any(c in app_id for c in "/#+"):
        raise UsageError(f"bad app id {app_id!r}: must be non-empty without '/', '#' or '+'")
    topic = f"a/{app_id}/u/{ver.major_minor}"
    if channel:
        if any(c in channel for c in "/#+"):
            raise UsageError(f"bad channel {channel!r}")
        topic += f"/{channel}"
    return topic


@dataclass(frozen=True)
class Topic:
    """A parsed update topic."""

    app_id: str
    major: int
    minor: int
    channel: str | None = None


def parse_topic(topic: str) -> Topic:
    """Parse ``a/<app>/u/<maj>.<min>[/<channel>]``; raise :class:`UsageError` otherwise."""
    match = _TOPIC_RE.match(topic.strip("/"))
    if not match:
        raise UsageError(f"bad update topic {topic!r}: expected a/<app_id>/u/<major>.<minor>[/<channel>]")
    return Topic(match["app"], int(match["major"]), int(match["minor"]), match["channel"])


def encode_patch(patch: int, varint: bool = True) -> bytes:
    """Encode a patch version as a package prefix: LEB128 varint or one byte."""
    if patch < 0:
        raise UsageError(f"patch version {patch} is negative")
    if not varint:
        if patch > 255:
            raise UsageError(f"patch version {patch} does not fit in one byte (0..255); use the varint encoding")
        return bytes([patch])
    out = bytearray()
    while True:
        group = patch & 0x7F
        patch >>= 7
        if patch:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


def decode_patch(
    data: bytes, varint: bool = True, profile: DeviceProfile | str = DeviceProfile.REFERENCE
) -> tuple[int, int]:
    """Decode the patch prefix of ``data``: ``(patch, number of bytes used)``.

    With ``profile="sming-6.1"`` the 7-bit groups are added, as the real
    device's decoder does, instead of shifted. Raises :class:`InputError` when
    ``data`` ends inside the prefix or the prefix is too long.
    """
    decoder = PatchDecoder(varint, profile)
    for index, byte in enumerate(data):
        if decoder.feed_byte(byte):
            return decoder.value, index + 1
    raise InputError("truncated package: the data ends inside the patch version")


def device_patch(patch: int, varint: bool = True) -> int:
    """The patch a Sming 6.1 device decodes from ``encode_patch(patch, varint)``."""
    return decode_patch(encode_patch(patch, varint), varint, DeviceProfile.SMING_61)[0]


class PatchDecoder:
    """Byte-at-a-time patch decoder, as the device's streaming parser reads it."""

    def __init__(self, varint: bool = True, profile: DeviceProfile | str = DeviceProfile.REFERENCE) -> None:
        self.varint = varint
        self.additive = DeviceProfile(profile) is DeviceProfile.SMING_61
        self.value = 0
        self.count = 0
        self.done = False

    def feed_byte(self, byte: int) -> bool:
        """Take one byte; return True once the version is complete."""
        if self.done:
            raise UsageError("patch version already complete")
        if not self.varint:
            self.value, self.count, self.done = byte, 1, True
            return True
        if self.count >= MAX_VERSION_BYTES:
            raise InputError(f"bad package: patch version longer than {MAX_VERSION_BYTES} bytes")
        group = byte & 0x7F
        self.value += group if self.additive else group << (7 * self.count)
        self.count += 1
        self.done = not byte & 0x80
        return self.done
