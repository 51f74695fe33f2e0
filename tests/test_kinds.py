"""formats.kinds: one detection of file kinds, by the named magics (and the container's chunk chain)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otalib.board.sim.device import _header_ok
from otalib.firmware.image import is_esp_image
from otalib.formats.kinds import Kind, detect

VECTORS = Path(__file__).parent / "vectors"
ENCRYPTED = (VECTORS / "encrypted.ota").read_bytes()
V1 = b"\xe9\x03\x02\x20" + bytes(12)
V2 = b"\xea\x04\x02\x20" + bytes(12)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ((VECTORS / "signed.ota").read_bytes(), Kind.OTA),
        ((VECTORS / "unsigned.ota").read_bytes(), Kind.OTA),
        (ENCRYPTED, Kind.OTA_ENCRYPTED),
        (ENCRYPTED[:-1], Kind.UNKNOWN),  # the chunk chain must end where the file ends
        (ENCRYPTED + b"\x00", Kind.UNKNOWN),
        ((VECTORS / "esp8266" / "rom0.bin").read_bytes(), Kind.ESP_IMAGE),
        (V1, Kind.ESP_IMAGE),
        (V2, Kind.ESP_IMAGE),
        (b"\xe9\x11" + V1[2:], Kind.UNKNOWN),  # 17 segments: more than a header can count
        (b"\xe9\x00" + V1[2:], Kind.UNKNOWN),
        (V2[:8] + b"\x00\x10\x00\x40" + V2[12:], Kind.UNKNOWN),  # a v2 irom0 segment is saved at address 0
        (b"\xe9\x03", Kind.UNKNOWN),
        (b"", Kind.UNKNOWN),
    ],
)
def test_detect(data, kind):
    assert detect(data) is kind
    # the device's rBoot header check and firmware's cheap check are this one detection
    assert _header_ok(data[:16]) is (kind is Kind.ESP_IMAGE)
    assert is_esp_image(data) is (kind is Kind.ESP_IMAGE)
