"""Deployment packages (``.sdp``): patch version prefix + firmware data.

:func:`pack` / :func:`unpack` work on whole packages, :func:`check_package` is the
pre-publish check (shared by ``deploy`` and ``inspect``); :class:`PackageParser` is
the device's streaming parser, fed arbitrary chunks (``end_of_input()`` at the end).
"""

from __future__ import annotations

from dataclasses import dataclass

from otalib.errors import DeviceError, InputError, UsageError
from otalib.formats.kinds import Kind, detect
from otalib.formats.ota import OtaDecoder, iter_chunks
from otalib.formats.version import DeviceProfile, PatchDecoder, decode_patch, device_patch, encode_patch

FEED_CHUNK = 64 * 1024


def pack(firmware: bytes, patch: int, varint: bool = True) -> bytes:
    """Build a package: the encoded patch version followed by ``firmware``."""
    if not firmware:
        raise UsageError("nothing to pack: the firmware file is empty")
    return encode_patch(patch, varint) + bytes(firmware)


def unpack(
    data: bytes, varint: bool = True, profile: DeviceProfile | str = DeviceProfile.REFERENCE
) -> tuple[int, bytes]:
    """Split a package into ``(patch, firmware)`` as ``profile`` decodes it."""
    patch, used = decode_patch(data, varint, profile)
    return patch, bytes(data[used:])


def ota_problem(payload: bytes) -> DeviceError | None:
    """The error any device raises on this plain ``.ota`` (structure, MD5), else None.

    Runs the device's decoder without keys: a signed file's signature cannot be
    checked here, everything else is.
    """
    decoder = OtaDecoder()
    try:
        for chunk in iter_chunks(payload, FEED_CHUNK):
            for _ in decoder.feed(chunk):
                pass
        decoder.end_of_input()
    except DeviceError as exc:
        return exc
    return None


@dataclass(frozen=True)
class PackageCheck:
    """A package that passed the pre-publish check: what it holds and what a Sming 6.1 device reads."""

    patch: int
    varint: bool
    version_bytes: int
    device_patch: int
    kind: Kind
    payload_size: int

    @property
    def quirk(self) -> bool:
        """True when a Sming 6.1 device decodes another patch than the one packed."""
        return self.device_patch != self.patch


def check_package(data: bytes, varint: bool = True) -> PackageCheck:
    """Check ``data`` as a device would parse it; raise :class:`InputError` naming the reason if it cannot.

    The patch must decode and the payload be something a device parses: a plain
    ``.ota`` that walks through the device's decoder, a secretstream container whose
    chunks end exactly at its end, or an ESP image (standard mode).
    """
    if not data:
        raise InputError("not a deployment package: it is empty")
    patch, used = decode_patch(data, varint)
    payload = data[used:]
    if not payload:
        raise InputError("not a deployment package: no firmware after the patch version")
    kind = detect(payload)
    if kind is Kind.OTA:
        problem = ota_problem(payload)
        if problem is not None:
            raise InputError(f"not a deployment package a device accepts: its OTA file is rejected ({problem})")
    elif kind is Kind.UNKNOWN:
        raise InputError(
            "not a deployment package: the firmware is neither an OTA upgrade file (plain, or encrypted chunks"
            " that end where the file ends) nor an ESP image (wrong --varint setting?)"
        )
    return PackageCheck(patch, varint, used, device_patch(patch, varint), kind, len(payload))


# -- streaming parser (the device's PayloadParser) ---------------------------------


@dataclass(frozen=True)
class PatchRead:
    """The patch version is complete; ``accepted`` says whether the rest is streamed."""

    patch: int
    version_bytes: int
    current: int | None
    accepted: bool


@dataclass(frozen=True)
class PayloadData:
    """Firmware bytes after the version, at ``offset`` within the firmware."""

    offset: int
    data: bytes


@dataclass(frozen=True)
class PackageEnd:
    """The message ended; ``accepted`` is False for a skipped (older) package."""

    patch: int | None
    accepted: bool
    payload_bytes: int


PackageEvent = PatchRead | PayloadData | PackageEnd


class PackageParser:
    """The device's streaming package parser, fed arbitrary chunks.

    Same decisions as the device: read the patch version (it may span chunks),
    ignore the message when the patch is older than ``current_patch`` (the
    ``sming-6.1`` profile also re-installs an EQUAL patch, a quirk; ``reference``
    skips it), else stream the rest. ``current_patch=None`` accepts everything.
    """

    def __init__(
        self,
        current_patch: int | None = None,
        varint: bool = True,
        profile: DeviceProfile | str = DeviceProfile.REFERENCE,
    ) -> None:
        self.profile = DeviceProfile(profile)
        self.current_patch = current_patch
        self._decoder = PatchDecoder(varint, self.profile)
        self._read: PatchRead | None = None
        self._offset = 0
        self._ended = False

    @property
    def patch(self) -> PatchRead | None:
        """The patch decision, once the version is complete."""
        return self._read

    def _accepts(self, patch: int) -> bool:
        current = self.current_patch
        if current is None:
            return True
        return patch >= current if self.profile is DeviceProfile.SMING_61 else patch > current

    def feed(self, chunk: bytes) -> list[PackageEvent]:
        """Take the next chunk of the message; return the events it completes."""
        if self._ended:
            raise UsageError("package parser already ended")
        events: list[PackageEvent] = []
        view = memoryview(chunk)
        if self._read is None:
            for index, byte in enumerate(view):
                if self._decoder.feed_byte(byte):
                    patch = self._decoder.value
                    self._read = PatchRead(patch, self._decoder.count, self.current_patch, self._accepts(patch))
                    events.append(self._read)
                    view = view[index + 1 :]
                    break
            else:
                return events
        if self._read.accepted and len(view):
            events.append(PayloadData(self._offset, bytes(view)))
            self._offset += len(view)
        return events

    @property
    def streaming_payload(self) -> bool:
        """The version was read and accepted: every further byte is payload (see :meth:`take_payload`)."""
        read = self._read
        return read is not None and read.accepted and not self._ended

    def take_payload(self, size: int) -> None:
        """Count ``size`` payload bytes the caller hands on itself instead of :meth:`feed` (which would
        report them as one :class:`PayloadData`); only while :attr:`streaming_payload`."""
        if not self.streaming_payload:
            raise UsageError("no payload to take: the patch version is not read or not accepted")
        self._offset += size

    def end_of_input(self) -> PackageEnd:
        """The message is complete."""
        self._ended = True
        if self._read is None:
            raise InputError("truncated package: the message ends inside the patch version")
        return PackageEnd(self._read.patch, self._read.accepted, self._offset)
