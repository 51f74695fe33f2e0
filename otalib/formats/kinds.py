"""What a file is: the one place that names each format's magic and tells them apart.

esptool's ``LoadFirmwareImage`` style: every format's magic is a named constant
here, and :func:`detect` dispatches on them. Only cheap header checks live here;
reading an ESP image properly is :mod:`otalib.firmware.image` (esptool).
"""

from __future__ import annotations

from enum import Enum

from otalib.formats.secretstream import ABYTES, HEADER_BYTES, LENGTH_BYTES

#: First four bytes (little-endian) of a signed ``.ota`` file.
OTA_MAGIC_SIGNED = 0xF01AF02A
#: First four bytes (little-endian) of an unsigned ``.ota`` file (MD5 at its end).
OTA_MAGIC_UNSIGNED = 0xF01AF020
OTA_MAGICS = (OTA_MAGIC_SIGNED, OTA_MAGIC_UNSIGNED)
#: First byte of every ESP image (ESP8266 v1, ESP32 family).
ESP_IMAGE_MAGIC = 0xE9
#: First byte of an ESP8266 "v2" image (irom0 segment before a second header).
ESP8266_V2_MAGIC = 0xEA
#: The "segment count" byte of every v2 image (a format version, not a count).
ESP8266_V2_SEGMENT = 4
#: Most segments an ESP image header can count.
MAX_SEGMENTS = 16


class Kind(str, Enum):
    """What a file (or a package's firmware data) is."""

    OTA = "ota"
    OTA_ENCRYPTED = "ota-encrypted"
    ESP_IMAGE = "esp-image"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def advanced(self) -> bool:
        """True for an OTA upgrade file (the device's AdvancedPayloadParser)."""
        return self in (Kind.OTA, Kind.OTA_ENCRYPTED)


def is_ota_magic(data: bytes) -> bool:
    """True when ``data`` starts with a plain ``.ota`` magic (signed or not)."""
    return len(data) >= 4 and int.from_bytes(data[:4], "little") in OTA_MAGICS


def is_esp_image(data: bytes) -> bool:
    """Does ``data`` (a whole image or its first 16+ bytes) start like an ESP image?

    rBoot's header check: magic 0xE9 (ESP8266 v1, ESP32 family) with 1..16
    segments, or 0xEA (ESP8266 v2, as Sming's esptool2 writes for rBoot) with its
    constant 4 and an irom0 segment saved at load address 0.
    """
    head = bytes(data[:16])
    if len(head) < 8:
        return False
    if head[0] == ESP_IMAGE_MAGIC:
        return 1 <= head[1] <= MAX_SEGMENTS
    if head[0] == ESP8266_V2_MAGIC and head[1] == ESP8266_V2_SEGMENT:
        return len(head) < 12 or head[8:12] == bytes(4)
    return False


def is_secretstream(data: bytes) -> bool:
    """True when ``data`` walks as a secretstream header + length-prefixed chunks to its exact end.

    The container has no magic: it is recognised by its chunk lengths (the first
    one right after the 24-byte header). Every chunk must hold at least the
    authentication tag; a device reading anything else fails (a chunk too short
    to decrypt, or a file ending mid-chunk).
    """
    offset = HEADER_BYTES
    if len(data) < offset + LENGTH_BYTES + ABYTES:
        return False
    while offset < len(data):
        if offset + LENGTH_BYTES > len(data):
            return False
        size = int.from_bytes(data[offset : offset + LENGTH_BYTES], "little") + 1
        if size < ABYTES:
            return False
        offset += LENGTH_BYTES + size
    return offset == len(data)


def detect(data: bytes) -> Kind:
    """The kind of ``data``: a plain ``.ota`` by its magic, an encrypted one by its chunk chain, an ESP image."""
    if is_ota_magic(data):
        return Kind.OTA
    if is_secretstream(data):
        return Kind.OTA_ENCRYPTED
    if is_esp_image(data):
        return Kind.ESP_IMAGE
    return Kind.UNKNOWN
