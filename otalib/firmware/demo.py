"""Small *valid* ESP images synthesised with esptool's classes, for demos and the virtual board.

A demo image needs no toolchain: a marker segment (see :func:`otalib.firmware.image.app_marker`)
placed first, then deterministic pseudo-random padding up to the size asked for.
"""

from __future__ import annotations

import random

from otalib.errors import UsageError
from otalib.firmware.image import (
    FLASH_MODES,
    SHA256_LEN,
    app_image_class,
    app_marker,
    check_app_id,
    check_version,
    esptool_quiet,
    normalise_chip,
    xor_checksum,
)
from otalib.formats.kinds import MAX_SEGMENTS

#: Chips whose demo images otalab can synthesise.
DEMO_CHIPS = ("esp8266", "esp32")

# Load addresses of the demo segments (harmless RAM regions of each chip).
_DEMO_LAYOUT = {
    # chip: (entry, marker address, first padding address, padding address step)
    "esp8266": (0x40100004, 0x3FFE8000, 0x40100000, 0x10000),
    "esp32": (0x40080404, 0x3FFB0000, 0x40080000, 0x1000),
}
_DEMO_FLASH = {"esp8266": ("4MB", "40m", "dio"), "esp32": ("4MB", "40m", "dio")}


def _fast_checksum_class(base: type) -> type:
    """``base`` (an esptool image class) whose ``save`` sums segments without a per-byte loop."""

    class _Fast(base):  # type: ignore[misc, valid-type]
        def save_segment(self, f, segment, checksum=None, segment_name=None):  # type: ignore[no-untyped-def]
            start = f.tell()
            super().save_segment(f, segment, None, segment_name)
            if checksum is None:
                return None
            f.seek(start + self.SEG_HEADER_LEN)
            written = f.read()
            return xor_checksum(written, checksum)

    _Fast.__name__ = f"Fast{base.__name__}"
    return _Fast


def _pseudo_random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size) if size > 0 else b""


def _padding_chunks(total: int, max_segments: int) -> list[int]:
    """Split ``total`` bytes (a multiple of 4) into at most ``max_segments`` 4-aligned chunks."""
    if total <= 0:
        return []
    chunk = max(0x10000, -(-total // max_segments))
    chunk += -chunk % 4
    sizes = []
    while total > 0:
        sizes.append(min(chunk, total))
        total -= sizes[-1]
    return sizes


def _header_overhead(chip: str, segments: int) -> int:
    return (24 if chip != "esp8266" else 8) + 8 * segments + 16 + (SHA256_LEN if chip != "esp8266" else 0)


def make_demo_image(
    chip: str,
    app_id: str,
    version: str,
    size: int | None = None,
    seed: int = 0,
    *,
    build_timestamp: int | None = None,
    patch: int | None = None,
) -> bytes:
    """A valid ESP image (built by esptool's classes) that carries an app marker.

    ``chip`` is ``esp8266`` (v1 image) or ``esp32`` (with appended SHA-256).
    ``size`` pads the image with deterministic pseudo-random data (from
    ``seed``) so it is about that many bytes (never smaller than the minimum).
    ``build_timestamp`` (ms since 1900, e.g. ``otalib.formats.ota.timestamp_now()``) and
    ``patch`` are carried in the marker when given, as real firmware has them compiled in
    (left out by default, so demo images stay reproducible).
    """
    chip = normalise_chip(chip)
    if chip not in DEMO_CHIPS:
        raise UsageError(f"demo images exist for {' and '.join(DEMO_CHIPS)}, not {chip}")
    check_app_id(app_id)
    check_version(version)
    if size is not None and (not isinstance(size, int) or size < 0 or size > 64 * 1024 * 1024):
        raise UsageError(f"bad image size {size!r}: expected 0..64 MiB")
    from esptool.bin_image import ELFSection, ESP8266ROMFirmwareImage

    entry, marker_addr, pad_addr, pad_step = _DEMO_LAYOUT[chip]
    marker = app_marker(app_id, version, chip, build_timestamp, patch)
    segments_data: list[tuple[int, bytes]] = [(marker_addr, marker)]
    target = size or 0
    chunks = _padding_chunks(max(target - _header_overhead(chip, 2) - len(marker), 16) // 4 * 4, MAX_SEGMENTS - 1)
    body = target - _header_overhead(chip, 1 + len(chunks)) - len(marker)
    chunks = _padding_chunks(max(body, 16) // 4 * 4, MAX_SEGMENTS - 1)
    padding = _pseudo_random(seed, sum(chunks))
    offset = 0
    for index, chunk in enumerate(chunks):
        segments_data.append((pad_addr + index * pad_step, padding[offset : offset + chunk]))
        offset += chunk

    flash_size, flash_freq, flash_mode = _DEMO_FLASH[chip]
    with esptool_quiet():
        if chip == "esp8266":
            image = _fast_checksum_class(ESP8266ROMFirmwareImage)()
        else:
            image = _fast_checksum_class(app_image_class(chip))()
            image.append_digest = True
        image.entrypoint = entry
        image.flash_mode = FLASH_MODES[flash_mode]
        image.flash_size_freq = image.ROM_LOADER.parse_flash_size_arg(flash_size)
        image.flash_size_freq += image.ROM_LOADER.parse_flash_freq_arg(flash_freq)
        image.segments = [
            ELFSection(b".otalab.app" if i == 0 else b".otalab.pad%d" % i, addr, data, flags=0)
            for i, (addr, data) in enumerate(segments_data)
        ]
        image.verify()
        saved = image.save(None)
    return saved[1] if isinstance(saved, tuple) else saved
