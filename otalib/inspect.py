"""Recognise and check any update file: ``.ota`` (plain or encrypted), ``.sdp``, ESP image.

Judges a file as a device built in a given way (:class:`DeviceBuild`) would: it
drives the same :class:`~otalib.formats.package.PackageParser` and
:class:`~otalib.formats.ota.OtaDecoder` as the virtual board, and says whether
that device would apply it, skip it (and which patch it reads) or reject it
(and with which of the device's error names).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from otalib.board.sim.build import DeviceBuild
from otalib.errors import DeviceError, DeviceErrorCode, InputError
from otalib.fileio import MAX_PACKAGE_BYTES
from otalib.formats.kinds import Kind, detect
from otalib.formats.ota import (
    OtaDecoder,
    OtaEvent,
    OtaHeader,
    RomEnd,
    Unverified,
    Verified,
    iter_chunks,
    timestamp_to_datetime,
)
from otalib.formats.package import PackageParser, PatchRead
from otalib.formats.version import decode_patch, device_patch
from otalib.keys import DeviceKeys, LabKey
from otalib.vocabulary import Decision

FEED_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Verdict:
    """The device's decision: ``error`` is its error name when rejected, ``patch_read`` the patch it decoded."""

    outcome: Decision
    error: str | None = None
    reason: str = ""
    patch_read: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "error": self.error,
            "reason": self.reason,
            "patch_read": self.patch_read,
        }


@dataclass
class Report:
    """What ``inspect`` found. ``ok`` only when the device would apply it and everything in it verified."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    verdict: Verdict | None = None
    build: DeviceBuild | None = None

    @property
    def ok(self) -> bool:
        verified = bool(self.data.get("verified"))
        if self.verdict is None:  # a bare ESP image: nothing to apply, its checks decide
            return verified
        return self.verdict.outcome is Decision.APPLIED and verified

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, **self.data}
        if self.verdict is not None:
            out["device"] = {**self.verdict.to_dict(), "build": self.build.describe() if self.build else None}
        out["ok"] = self.ok
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


OUT_OF_RANGE = "out of range: after year 9999"


def timestamp_datetime(ms: int) -> datetime | None:
    """The UTC time of a build timestamp, or None when no calendar date fits it."""
    try:
        return timestamp_to_datetime(ms)
    except (OverflowError, ValueError):
        return None


def timestamp_text(ms: int) -> str:
    """A build timestamp as UTC text, total: says ``out of range`` when no calendar date fits it."""
    when = timestamp_datetime(ms)
    return OUT_OF_RANGE if when is None else when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _ota_verdict(exc: DeviceError | None, unverified: str | None, keys: DeviceKeys) -> Verdict:
    if exc is not None:
        if exc.code is DeviceErrorCode.DecryptionFailed and keys.decrypt is None:
            reason = "encrypted: the device's decryption key is needed (-k or --decrypt-key)"
            return Verdict(Decision.UNKNOWN, reason=reason)
        return Verdict(Decision.REJECTED, exc.code.value, exc.detail)
    if unverified is not None:
        return Verdict(Decision.UNKNOWN, reason="signed: the device's verification key is needed (-k or --verify-key)")
    return Verdict(Decision.APPLIED)


def inspect_ota(data: bytes, key: LabKey | DeviceKeys | None = None, build: DeviceBuild | None = None) -> Report:
    """Decode an OTA file completely, as the device ``build`` would (default: keys only, build unknown)."""
    build = _build(key, build)
    keys = build.keys
    kind = detect(data)
    encrypted = build.encryption
    if encrypted is None and not kind.advanced:
        encrypted = False  # neither plain nor an encrypted container: rejected by either build, as a bad magic
    decoder = OtaDecoder(
        verify_key=keys.verify,
        decrypt_key=keys.decrypt,
        encrypted=encrypted,
        expect_signed=build.signing,
        current_timestamp=None if build.allow_downgrade else build.firmware_timestamp,  # as the Device does
        hash_roms=True,
    )
    info: dict[str, Any] = {
        "signed": None,
        "encrypted": kind is Kind.OTA_ENCRYPTED or (kind is not Kind.OTA and build.encryption is True),
        "timestamp": None,
        "verified": False,
        "error": None,
        "roms": [],
        "size": len(data),
    }
    report = Report("ota", info, build=build)
    unverified: str | None = None

    def take(events: Iterable[OtaEvent]) -> None:
        nonlocal unverified
        for event in events:
            if isinstance(event, OtaHeader):
                info["signed"] = event.signed
                info["timestamp"] = event.timestamp
                when = timestamp_datetime(event.timestamp)
                info["built"] = OUT_OF_RANGE if when is None else when.isoformat()
            elif isinstance(event, RomEnd):
                info["roms"].append({"address": event.address, "size": event.size, "sha256": event.sha256})
            elif isinstance(event, Verified):
                info["verified"] = True
                info["method"] = event.method
            elif isinstance(event, Unverified):
                info["method"] = event.method
                unverified = event.reason
                report.warnings.append(f"signature not checked: {event.reason} (-k KEY)")

    error: DeviceError | None = None
    try:  # the events completed before an error come first, then the error
        for chunk in iter_chunks(data, FEED_CHUNK):
            take(decoder.feed(chunk))
        decoder.end_of_input()
    except DeviceError as exc:
        error = exc
        info["error"] = exc.code.value
        info["error_detail"] = exc.detail
        info["verified"] = False
        if exc.code is DeviceErrorCode.DecryptionFailed and keys.decrypt is None:
            report.warnings.append("encrypted: give the key (-k KEY) to decrypt and verify")
    report.verdict = _ota_verdict(error, unverified, keys)
    if info["signed"] is False and build.signing is None and report.verdict.outcome is Decision.APPLIED:
        report.warnings.append(
            "unsigned: only firmware built with ENABLE_OTA_SIGNING=0 takes it"
            " (-k/--verify-key/--signing judge it as a signing device)"
        )
    return report


def _payload_report(payload: bytes, kind: Kind, build: DeviceBuild) -> Report:
    """The payload as a device of ``build`` handles it (advanced: the OTA decoder; standard: written as is)."""
    advanced = build.advanced
    if advanced is None:  # signing and encryption exist only in advanced mode
        advanced = kind.advanced or bool(build.signing or build.encryption)
    if advanced:
        report = inspect_ota(payload, build=build)
        if kind is Kind.ESP_IMAGE:
            report.warnings.append(
                "a raw ESP image: only a standard-mode device (ENABLE_OTA_ADVANCED=0, --mode standard) takes it"
            )
        return report
    if kind is Kind.ESP_IMAGE:
        try:
            inner = inspect_image_bytes(payload)
        except InputError as exc:
            inner = Report("esp-image", {"size": len(payload), "verified": False, "error": "InvalidImage"})
            inner.warnings.append(f"{exc}")
    else:
        inner = Report(kind.value, {"size": len(payload), "verified": False, "error": None})
    if not inner.data.get("verified"):
        what = "not an ESP image" if kind is not Kind.ESP_IMAGE else "an ESP image that does not check out"
        inner.warnings.append(
            f"the payload is {what}: a standard-mode device writes it to flash as it is and then cannot boot it"
        )
    inner.verdict = Verdict(Decision.APPLIED, reason="standard mode: written to the slot without a check")
    return inner


def inspect_package(
    data: bytes,
    key: LabKey | DeviceKeys | None = None,
    varint: bool = True,
    build: DeviceBuild | None = None,
) -> Report:
    """Report on a deployment package, the firmware inside it, and what the device ``build`` does with it."""
    build = _build(key, build)
    patch, used = decode_patch(data, varint)
    payload = data[used:]
    kind = detect(payload)
    inner = _payload_report(payload, kind, build)
    dev = device_patch(patch, varint)
    report = Report(
        "sdp",
        {
            "patch": patch,
            "varint": varint,
            "version_bytes": used,
            "device_patch": dev,
            "payload": inner.to_dict() | {"kind": inner.kind},
            "verified": bool(inner.data.get("verified")),
            "error": inner.data.get("error"),
        },
        build=build,
    )
    report.data["payload"].pop("device", None)
    report.data["payload"].pop("ok", None)
    if dev != patch:
        report.warnings.append(
            f"a Sming 6.1 device decodes patch {patch} as {dev} (additive varint quirk); use patches below 128"
            " or the one-byte encoding"
        )
    report.warnings.extend(inner.warnings)
    report.verdict = _package_verdict(data, varint, build, inner.verdict)
    return report


def _package_verdict(data: bytes, varint: bool, build: DeviceBuild, payload: Verdict | None) -> Verdict:
    """The device's PackageParser decides skip or stream; the payload's verdict decides the rest."""
    parser = PackageParser(build.current_patch, varint, build.profile)
    read: PatchRead | None = None
    try:
        for event in parser.feed(data):
            if isinstance(event, PatchRead):
                read = event
        parser.end_of_input()
    except InputError as exc:
        return Verdict(Decision.REJECTED, DeviceErrorCode.InvalidFormat.value, str(exc))
    assert read is not None
    if not read.accepted:
        return Verdict(
            Decision.SKIPPED,
            reason=f"it reads patch {read.patch}, older than its current patch {build.current_patch}",
            patch_read=read.patch,
        )
    base = payload or Verdict(Decision.UNKNOWN)
    return replace(base, patch_read=read.patch)


def inspect_image_bytes(data: bytes) -> Report:
    """Report on an ESP image through esptool."""
    from otalib.firmware.image import inspect_image

    info = inspect_image(data).to_dict()
    valid = bool(info.get("checksum_valid")) and info.get("sha256_valid") is not False
    return Report("esp-image", {**info, "verified": valid, "error": None if valid else "InvalidImage"})


def _package_prefix(data: bytes, varint: bool) -> int:
    """Length of the patch prefix when ``data`` reads as a package with this encoding, else 0."""
    try:
        _, used = decode_patch(data, varint)
    except InputError:
        return 0
    payload = data[used:]
    return used if payload and detect(payload) is not Kind.UNKNOWN else 0


def _build(key: LabKey | DeviceKeys | None, build: DeviceBuild | None) -> DeviceBuild:
    if build is None:
        return DeviceBuild(DeviceKeys.of(key))
    return build if key is None else replace(build, keys=DeviceKeys.of(key))


def inspect_bytes(
    data: bytes,
    key: LabKey | DeviceKeys | None = None,
    *,
    varint: bool | None = None,
    allow_package: bool = True,
    hint: str = "",
    build: DeviceBuild | None = None,
) -> Report:
    """Recognise ``data`` and report on it, judged as the device ``build`` would.

    Without ``build`` the device is only known by ``key``: it takes signed and
    unsigned, plain and encrypted files alike. ``varint=None`` detects the patch
    encoding of a package (varint first); ``hint`` is the file's suffix (``.sdp``
    makes an unrecognised payload a package with payload kind ``unknown``).
    """
    if not data:
        raise InputError("the file is empty")
    build = _build(key, build)
    kind = detect(data)
    if kind is Kind.OTA or (kind is Kind.OTA_ENCRYPTED and hint != ".sdp"):
        return inspect_ota(data, build=build)
    if kind is Kind.ESP_IMAGE and hint != ".sdp":
        return inspect_image_bytes(data)
    encodings = (True, False) if varint is None else (varint,)
    if allow_package:
        for encoding in encodings:
            if _package_prefix(data, encoding):
                return inspect_package(data, varint=encoding, build=build)
        if hint == ".sdp":
            return inspect_package(data, varint=encodings[0], build=build)
    if kind is Kind.OTA_ENCRYPTED:
        return inspect_ota(data, build=build)
    raise InputError("not an OTA file, deployment package or ESP image (wrong --varint setting?)")


def inspect_file(
    path: str | Path,
    key: LabKey | DeviceKeys | None = None,
    varint: bool | None = None,
    build: DeviceBuild | None = None,
) -> Report:
    """Read ``path`` (at most a package's bound) and report on it."""
    from otalib.fileio import read_input

    data = read_input(path, "file", MAX_PACKAGE_BYTES)
    return inspect_bytes(data, key, varint=varint, hint=Path(path).suffix.lower(), build=build)
