"""What a package carries, and whether a device could take it: shared by ``deploy`` and ``inspect``.

:func:`payload_kind` is the one place that tells an ``.ota`` (plain or encrypted)
from an ESP image; :func:`check_package` is the pre-publish check: the patch
decodes and the payload is something a device parses — a plain ``.ota`` that
walks through the device's decoder, a secretstream container whose chunks end
exactly at its end, or an ESP image (standard mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from otalib.errors import DeviceError, InputError
from otalib.formats.ota import ENC_ABYTES, ENC_HEADER_BYTES, MAGIC_SIGNED, MAGIC_UNSIGNED, OtaDecoder, iter_chunks
from otalib.formats.version import decode_patch, device_patch

FEED_CHUNK = 64 * 1024


class PayloadKind(str, Enum):
    """What a package's firmware data is."""

    OTA = "ota"
    OTA_ENCRYPTED = "ota-encrypted"
    ESP_IMAGE = "esp-image"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def advanced(self) -> bool:
        """True for an OTA upgrade file (the device's AdvancedPayloadParser)."""
        return self in (PayloadKind.OTA, PayloadKind.OTA_ENCRYPTED)


def is_ota_magic(data: bytes) -> bool:
    """True when ``data`` starts with a plain ``.ota`` magic (signed or not)."""
    return len(data) >= 4 and int.from_bytes(data[:4], "little") in (MAGIC_SIGNED, MAGIC_UNSIGNED)


def encrypted_chain_fits(data: bytes) -> bool:
    """True when ``data`` walks as a secretstream header + length-prefixed chunks to its exact end.

    Every chunk must hold at least the authentication tag; a device reading
    anything else fails (a chunk too short to decrypt, or a file ending mid-chunk).
    """
    offset = ENC_HEADER_BYTES
    if len(data) < offset + 2 + ENC_ABYTES:
        return False
    while offset < len(data):
        if offset + 2 > len(data):
            return False
        size = int.from_bytes(data[offset : offset + 2], "little") + 1
        if size < ENC_ABYTES:
            return False
        offset += 2 + size
    return offset == len(data)


def is_esp_image(data: bytes) -> bool:
    """The one ESP image detection (:func:`otalib.firmware.image.is_esp_image`)."""
    from otalib.firmware.image import is_esp_image as detect

    return detect(data)


def payload_kind(payload: bytes) -> PayloadKind:
    """Recognise a package's firmware data (or a bare file)."""
    if is_ota_magic(payload):
        return PayloadKind.OTA
    if encrypted_chain_fits(payload):
        return PayloadKind.OTA_ENCRYPTED
    if is_esp_image(payload):
        return PayloadKind.ESP_IMAGE
    return PayloadKind.UNKNOWN


def plain_ota_problem(payload: bytes) -> DeviceError | None:
    """The error any device raises on this plain ``.ota`` (structure, MD5), else None.

    Runs the device's decoder without keys: a signed file's signature cannot be
    checked here, everything else is.
    """
    decoder = OtaDecoder()
    try:
        for chunk in iter_chunks(payload, FEED_CHUNK):
            decoder.feed(chunk)
        decoder.close()
    except DeviceError as exc:
        return exc
    return None


@dataclass(frozen=True)
class PackageCheck:
    """A package that passed the pre-publish check."""

    patch: int
    varint: bool
    version_bytes: int
    device_patch: int
    kind: PayloadKind
    payload_size: int


def check_package(data: bytes, varint: bool = True) -> PackageCheck:
    """Check ``data`` as a device would parse it; raise :class:`InputError` naming the reason if it cannot."""
    if not data:
        raise InputError("not a deployment package: it is empty")
    patch, used = decode_patch(data, varint)
    payload = data[used:]
    if not payload:
        raise InputError("not a deployment package: no firmware after the patch version")
    kind = payload_kind(payload)
    if kind is PayloadKind.OTA:
        problem = plain_ota_problem(payload)
        if problem is not None:
            raise InputError(f"not a deployment package a device accepts: its OTA file is rejected ({problem})")
    elif kind is PayloadKind.UNKNOWN:
        raise InputError(
            "not a deployment package: the firmware is neither an OTA upgrade file (plain, or encrypted chunks"
            " that end where the file ends) nor an ESP image (wrong --varint setting?)"
        )
    return PackageCheck(patch, varint, used, device_patch(patch, varint), kind, len(payload))
