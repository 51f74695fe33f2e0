"""OTA upgrade files (``.ota``, advanced mode): build them and decode them as a device does.

Layout (little-endian): magic, build timestamp (ms since 1900), ROM count, 3
reserved bytes; per ROM address, size, data; then an Ed25519ph signature (64
bytes) or an MD5 (16 bytes) over everything before it. Optionally the whole
file is wrapped in a libsodium secretstream (:mod:`.secretstream`).

:class:`OtaDecoder` is sans-IO (h11's shape): ``feed(chunk)`` returns an iterator
over the events the chunk completes, each with its byte offset; when the chunk
holds an error, iterating delivers the events completed before it and then raises
:class:`~otalib.errors.DeviceError` with the device's error name (and every later
call raises it again). ``end_of_input()`` says the file ended. Its memory does not
grow with the image size (ROM data is passed through, not kept).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError

from otalib.errors import DeviceError, DeviceErrorCode, UsageError
from otalib.formats._sodium import ph_update
from otalib.formats.kinds import OTA_MAGIC_SIGNED, OTA_MAGIC_UNSIGNED, OTA_MAGICS, is_ota_magic
from otalib.formats.prehash import PooledPrehash, PrehashPool
from otalib.formats.secretstream import ContainerEvent, SecretstreamReader, encrypt

if TYPE_CHECKING:  # formats is the bottom layer: it only reads a key's attributes
    from otalib.keys import LabKey

HEADER = struct.Struct("<IQB3x")
ROM_HEADER = struct.Struct("<II")
SIGNATURE_BYTES = sodium.crypto_sign_BYTES
MD5_BYTES = 16
MAX_ROMS = 255
ADDRESS_MASK = 0xFFFFF
EPOCH_1900 = datetime(1900, 1, 1, tzinfo=timezone.utc)


def timestamp_now() -> int:
    """The build timestamp for now: milliseconds since 1900-01-01."""
    return timestamp_from_datetime(datetime.now(timezone.utc))


def timestamp_from_datetime(when: datetime) -> int:
    """Milliseconds since 1900-01-01 (UTC) of ``when``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - EPOCH_1900
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def timestamp_to_datetime(ms: int) -> datetime:
    """The UTC time of a build timestamp."""
    from datetime import timedelta

    return EPOCH_1900 + timedelta(milliseconds=ms)


@dataclass(frozen=True)
class Rom:
    """One ROM image of an OTA file: flash address and content."""

    address: int
    data: bytes


def resolve_modes(has_key: bool, signed: bool, encrypted: bool) -> tuple[bool, bool]:
    """The reference tool's rule: a key with neither flag means signed."""
    if (signed or encrypted) and not has_key:
        raise UsageError("signing/encryption requested, but no key given (-k KEY)")
    if has_key and not signed and not encrypted:
        signed = True
    return signed, encrypted


def build_plain(
    roms: Sequence[Rom], key: LabKey | None = None, *, signed: bool = False, timestamp: int | None = None
) -> bytes:
    """The unencrypted OTA file: header, ROMs, then signature or MD5."""
    if not roms:
        raise UsageError("an OTA file needs at least one ROM (--rom FILE@ADDRESS)")
    if len(roms) > MAX_ROMS:
        raise UsageError(f"too many ROMs: {len(roms)} (at most {MAX_ROMS})")
    if signed and key is None:
        raise UsageError("signing requested, but no key given")
    ts = timestamp_now() if timestamp is None else timestamp
    if not 0 <= ts < 2**64:
        raise UsageError(f"bad timestamp {ts}: must fit in 64 bits")
    parts: list[bytes] = [HEADER.pack(OTA_MAGIC_SIGNED if signed else OTA_MAGIC_UNSIGNED, ts, len(roms))]
    for rom in roms:
        if not 0 <= rom.address < 2**32:
            raise UsageError(f"bad ROM address {rom.address:#x}: must fit in 32 bits")
        parts.append(ROM_HEADER.pack(rom.address, len(rom.data)))
        parts.append(bytes(rom.data))
    # hash the parts as they are and join once, signature included (no second copy of the image)
    if signed:
        assert key is not None
        state = sodium.crypto_sign_ed25519ph_state()
        for part in parts:
            ph_update(state, part)
        parts.append(sodium.crypto_sign_ed25519ph_final_create(state, key.signing_key))
    else:
        digest = hashlib.md5()
        for part in parts:
            digest.update(part)
        parts.append(digest.digest())
    return b"".join(parts)


def build_ota(
    roms: Sequence[Rom],
    key: LabKey | None = None,
    *,
    signed: bool = False,
    encrypted: bool = False,
    timestamp: int | None = None,
) -> bytes:
    """Build an OTA upgrade file, byte-compatible with ``otatool.py mkfile``.

    ``timestamp`` (ms since 1900) makes builds reproducible; signatures are
    deterministic, encryption is not (random secretstream header).
    """
    if encrypted and key is None:
        raise UsageError("encryption requested, but no key given")
    plain = build_plain(roms, key, signed=signed, timestamp=timestamp)
    if encrypted:
        assert key is not None
        return encrypt(plain, key.stream_key)
    return plain


# -- streaming decoder -------------------------------------------------------------


@dataclass(frozen=True)
class OtaHeader:
    """The file header was read (always the first :data:`HEADER` bytes of the plaintext)."""

    signed: bool
    timestamp: int
    rom_count: int
    encrypted: bool
    reserved: bytes = bytes(3)

    offset = 0
    length = HEADER.size


@dataclass(frozen=True)
class RomStart:
    """A ROM header was read at ``offset``; ``selected`` ROMs are written to the target slot."""

    index: int
    address: int
    size: int
    selected: bool
    offset: int = 0

    length = ROM_HEADER.size

    @property
    def data_offset(self) -> int:
        """Where the ROM's content starts (it is ``size`` bytes long)."""
        return self.offset + ROM_HEADER.size


@dataclass(frozen=True)
class RomData:
    """A piece of ROM content at ``offset`` within the ROM."""

    index: int
    offset: int
    data: bytes
    selected: bool


@dataclass(frozen=True)
class RomEnd:
    """A ROM's content is complete; ``sha256`` when the decoder hashes ROMs."""

    index: int
    address: int
    size: int
    selected: bool
    sha256: str | None


@dataclass(frozen=True)
class DigestRead:
    """The signature (``ed25519ph``) or checksum (``md5``) at ``offset`` was read; checking it comes next."""

    method: str
    digest: bytes
    offset: int

    @property
    def length(self) -> int:
        return len(self.digest)


@dataclass(frozen=True)
class Verified:
    """The signature (``ed25519ph``) or checksum (``md5``) matched."""

    method: str
    digest: bytes


@dataclass(frozen=True)
class Unverified:
    """The signature could not be checked (no verification key was given)."""

    method: str
    digest: bytes
    reason: str


@dataclass(frozen=True)
class OtaDone:
    """The whole file was accepted; ``rom_index`` is the ROM written to the slot (or None)."""

    rom_index: int | None


OtaEvent = ContainerEvent | OtaHeader | RomStart | RomData | RomEnd | DigestRead | Verified | Unverified | OtaDone
"""Offsets are in the file for a plain ``.ota``; for an encrypted one, container events
(:mod:`.secretstream`) carry file offsets and the others offsets in the decrypted plaintext."""


class Verifier(Protocol):
    """Checks the signature or checksum over everything before it, fed as it streams by."""

    method: str
    digest_size: int
    update: Callable[[bytes], object]

    def matches(self, digest: bytes, public_key: bytes | None) -> bool:
        """True when ``digest`` (read from the file) is right for the bytes fed."""
        ...


class Md5Verifier:
    """The unsigned file's MD5."""

    method = "md5"
    digest_size = MD5_BYTES

    def __init__(self) -> None:
        self._md5 = hashlib.md5()
        self.update: Callable[[bytes], object] = self._md5.update  # hashlib's own method: no extra call per chunk

    def matches(self, digest: bytes, public_key: bytes | None) -> bool:
        return self._md5.digest() == digest


class Ed25519phVerifier:
    """Incremental Ed25519ph (libsodium ``crypto_sign_ed25519ph``) verification."""

    method = "ed25519ph"
    digest_size = SIGNATURE_BYTES

    def __init__(self, pool: PrehashPool | None = None) -> None:
        """``pool``: share the hashing with other verifiers fed the same bytes (:mod:`otalib.formats.prehash`)."""
        self._pooled = PooledPrehash(pool) if pool is not None else None
        self._state = sodium.crypto_sign_ed25519ph_state() if self._pooled is None else None
        self.update: Callable[[bytes], object] = self._update if self._pooled is None else self._pooled.update

    def _update(self, data: bytes) -> None:
        ph_update(self._state, data)

    def matches(self, digest: bytes, public_key: bytes | None) -> bool:
        if public_key is None:
            return False
        state = self._pooled.state() if self._pooled is not None else self._state
        assert state is not None
        try:
            return bool(sodium.crypto_sign_ed25519ph_final_verify(state, digest, public_key))
        except (BadSignatureError, ValueError, TypeError):
            return False


class DecoderState(enum.Enum):
    """Where the decoder is in the (plaintext) file.

    HEADER -(16 bytes)-> ROM_HEADER, one per ROM -(8 bytes)-> ROM_DATA -(size bytes)->
    the next ROM_HEADER, or VERIFY after the last ROM -(64 or 16 bytes)-> COMPLETE;
    any byte in COMPLETE is an error.
    """

    HEADER = enum.auto()
    ROM_HEADER = enum.auto()
    ROM_DATA = enum.auto()
    VERIFY = enum.auto()
    COMPLETE = enum.auto()


_HEADER, _ROM_HEADER, _ROM_DATA, _VERIFY, _COMPLETE = DecoderState
_WHERE = {
    _HEADER: "header",
    _ROM_HEADER: "ROM header",
    _ROM_DATA: "ROM data",
    _VERIFY: "signature/checksum",
}


def _deliver(events: list[OtaEvent], error: DeviceError) -> Iterator[OtaEvent]:
    yield from events
    raise error


class OtaDecoder:
    """Decode an OTA file fed in arbitrary chunks, with the device's checks and error names.

    Parameters mirror a device build: ``target_address``/``slot_size`` the slot
    to update (None: select nothing, as ``inspect`` does), ``verify_key`` the
    Ed25519 public key, ``decrypt_key`` the secretstream key, ``encrypted``
    (None: detect from the magic), ``expect_signed`` (None: accept both magics),
    ``current_timestamp`` for downgrade protection (None: downgrades allowed),
    ``frames`` to have the encryption container's frames reported too (off by
    default: an event per 2 KiB chunk costs about a tenth of the decoding speed),
    ``prehash_pool`` to share the signature's hashing with other decoders of the same
    bytes (a fleet's boards; :mod:`otalib.formats.prehash`: the same result).
    Errors are sticky: after one, every call raises it again.
    """

    def __init__(
        self,
        *,
        target_address: int | None = None,
        slot_size: int | None = None,
        verify_key: bytes | None = None,
        decrypt_key: bytes | None = None,
        encrypted: bool | None = None,
        expect_signed: bool | None = None,
        current_timestamp: int | None = None,
        hash_roms: bool = False,
        frames: bool = False,
        prehash_pool: PrehashPool | None = None,
    ) -> None:
        self.target_address = target_address
        self.slot_size = slot_size
        self.verify_key = verify_key
        self.decrypt_key = decrypt_key
        self.encrypted = encrypted
        self.expect_signed = expect_signed
        self.current_timestamp = current_timestamp
        self.hash_roms = hash_roms
        self.frames = frames
        self.prehash_pool = prehash_pool
        self.header: OtaHeader | None = None
        self.selected_rom: int | None = None
        self.error: DeviceError | None = None
        self.last_digest: bytes | None = None  # the signature/checksum read (a device prints it, also on failure)
        self.plain_bytes = 0
        self._events: list[OtaEvent] = []
        self._state = _HEADER
        self._need = HEADER.size
        self._buf = bytearray()
        self._rom_index = -1
        self._rom: RomStart | None = None
        self._rom_offset = 0
        self._rom_hash: hashlib._Hash | None = None
        self._verifier: Verifier | None = None
        self._sniff = bytearray()
        self._container: SecretstreamReader | None = None

    # -- public API ---------------------------------------------------------------

    def feed(self, chunk: bytes) -> Iterator[OtaEvent]:
        """Take the next chunk of the file; return an iterator over the events it completes.

        If the chunk holds an error, the iterator yields the events completed before
        it, then raises it (and so does every later call).
        """
        if self.error is not None:
            raise self.error
        try:
            if self._container is not None:
                self._container.feed(memoryview(chunk))
            elif self.encrypted is False:
                self._feed_plain(chunk)
            else:
                self._start(chunk)
        except DeviceError as exc:
            self.error = exc
            events, self._events = self._events, []
            return _deliver(events, exc)
        events, self._events = self._events, []
        return iter(events)

    def end_of_input(self) -> None:
        """The file ended; raise if it was incomplete (or an error is pending)."""
        if self.error is not None:
            raise self.error
        if self._state is not _COMPLETE:
            where = _WHERE[self._state]
            self.error = DeviceError(DeviceErrorCode.InvalidFormat, f"truncated: the file ends inside the {where}")
            raise self.error

    def silent_room(self) -> int:
        """Bytes the next :meth:`feed` may hold that complete nothing (only ROM content of the current
        ROM, reported as one :class:`RomData`); 0 outside a plain file's ROM content."""
        if self._state is not _ROM_DATA or self._container is not None or self.error is not None:
            return 0
        return self._need - 1

    @property
    def complete(self) -> bool:
        """True once the signature/checksum was read and accepted."""
        return self._state is _COMPLETE

    # -- encryption container -------------------------------------------------------

    def _start(self, chunk: bytes) -> None:
        """The first bytes: plain or encrypted (``encrypted=None`` decides by the magic)."""
        if self.encrypted is None:
            self._sniff += chunk
            if len(self._sniff) < 4:
                return
            self.encrypted = not is_ota_magic(self._sniff)
            chunk, self._sniff = bytes(self._sniff), bytearray()
        if self.encrypted:
            emit = self._events_append if self.frames else None
            self._container = SecretstreamReader(self.decrypt_key, self._feed_plain, emit)
            self._container.feed(memoryview(chunk))
        else:
            self._feed_plain(chunk)

    def _events_append(self, event: ContainerEvent) -> None:
        self._events.append(event)

    # -- the basic stream (BasicStream::write) ----------------------------------------

    def _feed_plain(self, data: bytes | memoryview) -> None:
        # Hot path: ROM data is passed on as ``bytes`` without an extra copy when a whole
        # chunk belongs to one ROM (the usual case); headers are staged in a small buffer.
        if data.__class__ is not bytes:
            data = bytes(data)
        size = len(data)
        if 0 < size < self._need and self._state is _ROM_DATA:  # the hot path: inside one ROM's content
            self._need -= size
            self.plain_bytes += size
            self._verifier.update(data)  # type: ignore[union-attr]  # set with the header, before any ROM
            self._rom_data(data)
            return
        offset = 0
        while offset < size:
            state = self._state
            if state is _COMPLETE:
                raise DeviceError(DeviceErrorCode.UnsupportedData, "bytes after the signature/checksum")
            take = min(self._need, size - offset)
            piece = data if take == size else data[offset : offset + take]
            offset += take
            self._need -= take
            self.plain_bytes += take
            if state is not _VERIFY and self._verifier is not None:
                self._verifier.update(piece)
            if state is _ROM_DATA:
                self._rom_data(piece)
                if not self._need:
                    self._rom_end()
                continue
            self._buf += piece
            if self._need:
                continue
            block, self._buf = bytes(self._buf), bytearray()
            if state is _HEADER:
                self._on_header(block)
            elif state is _ROM_HEADER:
                self._on_rom_header(block)
            else:
                self._on_verify(block)

    def _on_header(self, block: bytes) -> None:
        magic, timestamp, count = HEADER.unpack(block)
        if magic not in OTA_MAGICS:
            raise DeviceError(DeviceErrorCode.InvalidFormat, f"bad magic {magic:#010x}")
        signed = magic == OTA_MAGIC_SIGNED
        if self.expect_signed is not None and signed != self.expect_signed:
            expected = "signed" if self.expect_signed else "unsigned"
            raise DeviceError(DeviceErrorCode.InvalidFormat, f"the device expects a {expected} file")
        verifier: Verifier = Ed25519phVerifier(self.prehash_pool) if signed else Md5Verifier()
        verifier.update(block)
        self._verifier = verifier
        self.header = OtaHeader(signed, timestamp, count, bool(self.encrypted), block[13:16])
        self._events.append(self.header)
        if self.current_timestamp is not None and timestamp < self.current_timestamp:
            raise DeviceError(DeviceErrorCode.DowngradeNotAllowed, "the file is older than the running firmware")
        self._next_rom()

    def _next_rom(self) -> None:
        assert self.header is not None and self._verifier is not None
        self._rom_index += 1
        if self._rom_index < self.header.rom_count:
            self._state, self._need = _ROM_HEADER, ROM_HEADER.size
        else:
            self._state, self._need = _VERIFY, self._verifier.digest_size

    def _on_rom_header(self, block: bytes) -> None:
        address, size = ROM_HEADER.unpack(block)
        selected = (
            self.target_address is not None
            and self.selected_rom is None
            and (address & ADDRESS_MASK) == (self.target_address & ADDRESS_MASK)
        )
        if selected and self.slot_size is not None and size > self.slot_size:
            raise DeviceError(DeviceErrorCode.RomTooLarge, f"ROM of {size} bytes for a slot of {self.slot_size}")
        self._rom = RomStart(self._rom_index, address, size, selected, self.plain_bytes - ROM_HEADER.size)
        self._rom_offset = 0
        self._rom_hash = hashlib.sha256() if self.hash_roms else None
        self._events.append(self._rom)
        if size:
            self._state, self._need = _ROM_DATA, size
        else:
            self._rom_end()

    def _rom_data(self, data: bytes) -> None:
        rom = self._rom
        if self._rom_hash is not None:
            self._rom_hash.update(data)
        self._events.append(RomData(rom.index, self._rom_offset, data, rom.selected))  # type: ignore[union-attr]
        self._rom_offset += len(data)

    def _rom_end(self) -> None:
        rom = self._rom
        assert rom is not None
        if rom.selected:
            self.selected_rom = rom.index
        digest = self._rom_hash.hexdigest() if self._rom_hash is not None else None
        self._events.append(RomEnd(rom.index, rom.address, rom.size, rom.selected, digest))
        self._next_rom()

    def _on_verify(self, digest: bytes) -> None:
        verifier = self._verifier
        assert self.header is not None and verifier is not None
        self.last_digest = digest
        self._state = _COMPLETE
        method = verifier.method
        self._events.append(DigestRead(method, digest, self.plain_bytes - len(digest)))
        if self.header.signed and self.verify_key is None:
            self._events.append(Unverified(method, digest, "no verification key given"))
        elif verifier.matches(digest, self.verify_key):
            self._events.append(Verified(method, digest))
        else:
            raise DeviceError(DeviceErrorCode.VerificationFailed, f"{method} over the file does not match")
        self._finish()

    def _finish(self) -> None:
        assert self.header is not None
        if self.header.rom_count and self.target_address is not None and self.selected_rom is None:
            raise DeviceError(DeviceErrorCode.NoRomFound, f"no ROM for the slot at {self.target_address:#x}")
        self._events.append(OtaDone(self.selected_rom))


def iter_chunks(data: bytes, size: int) -> Iterable[bytes]:
    """``data`` in pieces of ``size`` bytes (for feeding decoders)."""
    view = memoryview(data)
    for offset in range(0, len(data), size):
        yield bytes(view[offset : offset + size])
