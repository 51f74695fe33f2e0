"""Recognise and check any update file: ``.ota`` (plain or encrypted), ``.sdp``, ESP image.

Drives the same :class:`~otalib.formats.ota.OtaDecoder` as the virtual board.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otalib.errors import DeviceError, InputError
from otalib.formats.ota import (
    ENC_HEADER_BYTES,
    MAGIC_SIGNED,
    MAGIC_UNSIGNED,
    OtaDecoder,
    OtaHeader,
    RomEnd,
    Unverified,
    Verified,
    iter_chunks,
    timestamp_to_datetime,
)
from otalib.formats.version import decode_patch, device_patch
from otalib.keys import DeviceKeys, LabKey

FEED_CHUNK = 64 * 1024


@dataclass
class Report:
    """What ``inspect`` found; ``ok`` only when everything present verified."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.data.get("verified"))

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, **self.data}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _is_ota_magic(data: bytes) -> bool:
    return len(data) >= 4 and int.from_bytes(data[:4], "little") in (MAGIC_SIGNED, MAGIC_UNSIGNED)


def _encrypted_chain_fits(data: bytes) -> bool:
    """True when ``data`` walks as secretstream header + length-prefixed chunks to its exact end."""
    offset = ENC_HEADER_BYTES
    if len(data) < offset + 2 + 17:
        return False
    while offset < len(data):
        if offset + 2 > len(data):
            return False
        size = int.from_bytes(data[offset : offset + 2], "little") + 1
        if size < 17:
            return False
        offset += 2 + size
    return offset == len(data)


def _esp_image_module():
    try:
        from otalib import images
    except ImportError:  # pragma: no cover - images module not installed
        return None
    return images


def _looks_like_esp_image(data: bytes) -> bool:
    images = _esp_image_module()
    return images is not None and images.is_esp_image(data)


def inspect_ota(data: bytes, key: LabKey | DeviceKeys | None = None) -> Report:
    """Decode an OTA file completely and report what a device would see."""
    keys = DeviceKeys.of(key)
    decoder = OtaDecoder(verify_key=keys.verify, decrypt_key=keys.decrypt, hash_roms=True)
    info: dict[str, Any] = {
        "signed": None,
        "encrypted": not _is_ota_magic(data),
        "timestamp": None,
        "verified": False,
        "error": None,
        "roms": [],
        "size": len(data),
    }
    report = Report("ota", info)

    def take(events: list) -> None:
        for event in events:
            if isinstance(event, OtaHeader):
                info["signed"] = event.signed
                info["timestamp"] = event.timestamp
                info["built"] = timestamp_to_datetime(event.timestamp).isoformat()
            elif isinstance(event, RomEnd):
                info["roms"].append({"address": event.address, "size": event.size, "sha256": event.sha256})
            elif isinstance(event, Verified):
                info["verified"] = True
                info["method"] = event.method
            elif isinstance(event, Unverified):
                info["method"] = event.method
                report.warnings.append(f"signature not checked: {event.reason} (-k KEY)")

    try:
        for chunk in iter_chunks(data, FEED_CHUNK):
            take(decoder.feed(chunk))
        decoder.close()
    except DeviceError as exc:
        take(decoder.drain())
        info["error"] = exc.code.value
        info["error_detail"] = exc.detail
        info["verified"] = False
        if exc.code.value == "DecryptionFailed" and keys.decrypt is None:
            report.warnings.append("encrypted: give the key (-k KEY) to decrypt and verify")
    return report


def inspect_package(data: bytes, key: LabKey | DeviceKeys | None = None, varint: bool = True) -> Report:
    """Report on a deployment package and on the firmware inside it."""
    patch, used = decode_patch(data, varint)
    payload = data[used:]
    inner = inspect_bytes(payload, key, allow_package=False)
    dev = device_patch(patch, varint)
    report = Report(
        "sdp",
        {
            "patch": patch,
            "varint": varint,
            "version_bytes": used,
            "device_patch": dev,
            "payload": inner.to_dict(),
            "verified": inner.ok,
            "error": inner.data.get("error"),
        },
    )
    if dev != patch:
        report.warnings.append(
            f"a Sming 6.1 device decodes patch {patch} as {dev} (additive varint quirk); use patches below 128"
            " or the one-byte encoding"
        )
    report.warnings.extend(inner.warnings)
    return report


def inspect_image_bytes(data: bytes) -> Report:
    """Report on an ESP image through esptool."""
    images = _esp_image_module()
    if images is None:
        raise InputError("ESP image support is not available")
    info = images.inspect_image(data).to_dict()
    valid = bool(info.get("checksum_valid")) and info.get("sha256_valid") is not False
    return Report("esp-image", {**info, "verified": valid, "error": None if valid else "InvalidImage"})


def _package_prefix(data: bytes, varint: bool) -> int:
    """Length of the patch prefix when ``data`` reads as a package with this encoding, else 0."""
    try:
        _, used = decode_patch(data, varint)
    except InputError:
        return 0
    payload = data[used:]
    if payload and (_is_ota_magic(payload) or _looks_like_esp_image(payload) or _encrypted_chain_fits(payload)):
        return used
    return 0


def inspect_bytes(
    data: bytes,
    key: LabKey | DeviceKeys | None = None,
    *,
    varint: bool | None = None,
    allow_package: bool = True,
    hint: str = "",
) -> Report:
    """Recognise ``data`` and report on it.

    ``varint=None`` detects the patch encoding of a package (varint first).
    """
    if not data:
        raise InputError("the file is empty")
    if _is_ota_magic(data):
        return inspect_ota(data, key)
    if _looks_like_esp_image(data) and hint != ".sdp":
        return inspect_image_bytes(data)
    raw_encrypted = _encrypted_chain_fits(data)
    if allow_package and not (raw_encrypted and hint != ".sdp"):
        for encoding in (True, False) if varint is None else (varint,):
            if _package_prefix(data, encoding):
                return inspect_package(data, key, encoding)
    if raw_encrypted:
        return inspect_ota(data, key)
    raise InputError("not an OTA file, deployment package or ESP image (wrong --varint setting?)")


def inspect_file(path: str | Path, key: LabKey | DeviceKeys | None = None, varint: bool | None = None) -> Report:
    """Read ``path`` and report on it."""
    from otalib.fileio import read_input

    data = read_input(path)
    return inspect_bytes(data, key, varint=varint, hint=Path(path).suffix.lower())
