"""OTA upgrade files (``.ota``, advanced mode): build them and decode them as a device does.

Layout (little-endian): magic, build timestamp (ms since 1900), ROM count, 3
reserved bytes; per ROM address, size, data; then an Ed25519ph signature (64
bytes) or an MD5 (16 bytes) over everything before it. Optionally the whole
file is wrapped in a libsodium secretstream (24-byte header, then chunks of
``u16 ciphertext_length - 1`` + ciphertext).

:class:`OtaDecoder` is sans-IO: ``feed(chunk)`` returns events and raises
:class:`~otalib.errors.DeviceError` with the device's error name. Its memory
does not grow with the image size (ROM data is passed through, not kept).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError, CryptoError

from otalib.errors import DeviceError, DeviceErrorCode, UsageError
from otalib.formats._sodium import Puller, ph_update
from otalib.keys import LabKey

MAGIC_SIGNED = 0xF01AF02A
MAGIC_UNSIGNED = 0xF01AF020
HEADER = struct.Struct("<IQB3x")
ROM_HEADER = struct.Struct("<II")
SIGNATURE_BYTES = sodium.crypto_sign_BYTES
MD5_BYTES = 16
MAX_ROMS = 255
ENC_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
ENC_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
#: Plaintext bytes per encrypted chunk, as the reference tool writes them.
ENC_CHUNK_PLAIN = 2048 - ENC_ABYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
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
    parts: list[bytes] = [HEADER.pack(MAGIC_SIGNED if signed else MAGIC_UNSIGNED, ts, len(roms))]
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


def encrypt(plain: bytes, stream_key: bytes) -> bytes:
    """Wrap ``plain`` in the reference tool's secretstream container."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, stream_key)
    push = sodium.crypto_secretstream_xchacha20poly1305_push
    size = len(plain)
    view = memoryview(plain)
    parts = [header]
    length = struct.Struct("<H")
    for offset in range(0, size, ENC_CHUNK_PLAIN):
        end = min(offset + ENC_CHUNK_PLAIN, size)
        cipher = push(state, bytes(view[offset:end]), None, TAG_FINAL if end >= size else TAG_MESSAGE)
        parts.append(length.pack(len(cipher) - 1))
        parts.append(cipher)
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
    """The file header was read."""

    signed: bool
    timestamp: int
    rom_count: int
    encrypted: bool


@dataclass(frozen=True)
class RomStart:
    """A ROM header was read; ``selected`` ROMs are written to the target slot."""

    index: int
    address: int
    size: int
    selected: bool


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


OtaEvent = OtaHeader | RomStart | RomData | RomEnd | Verified | Unverified | OtaDone

_HEADER, _ROM_HEADER, _ROM_DATA, _VERIFY, _COMPLETE = range(5)
_E_HEADER, _E_LENGTH, _E_CHUNK, _E_FINAL = range(4)


class OtaDecoder:
    """Decode an OTA file fed in arbitrary chunks, with the device's checks and error names.

    Parameters mirror a device build: ``target_address``/``slot_size`` the slot
    to update (None: select nothing, as ``inspect`` does), ``verify_key`` the
    Ed25519 public key, ``decrypt_key`` the secretstream key, ``encrypted``
    (None: detect from the magic), ``expect_signed`` (None: accept both magics),
    ``current_timestamp`` for downgrade protection (None: downgrades allowed).
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
    ) -> None:
        self.target_address = target_address
        self.slot_size = slot_size
        self.verify_key = verify_key
        self.decrypt_key = decrypt_key
        self.encrypted = encrypted
        self.expect_signed = expect_signed
        self.current_timestamp = current_timestamp
        self.hash_roms = hash_roms
        self.header: OtaHeader | None = None
        self.selected_rom: int | None = None
        self.error: DeviceError | None = None
        self.last_digest: bytes | None = None  # the signature/checksum read (a device prints it, also on failure)
        self.plain_bytes = 0
        self._events: list[OtaEvent] = []
        # plaintext state
        self._state = _HEADER
        self._need = HEADER.size
        self._buf = bytearray()
        self._rom_index = -1
        self._rom: RomStart | None = None
        self._rom_offset = 0
        self._rom_hash: hashlib._Hash | None = None
        self._signed = False
        self._verifier: object = None
        # encryption state
        self._sniff = bytearray()
        self._e_state = _E_HEADER
        self._e_need = ENC_HEADER_BYTES
        self._e_buf = bytearray()
        self._e_pull: object = None

    # -- public API ---------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[OtaEvent]:
        """Take the next chunk of the file; return the events it completes."""
        if self.error is not None:
            raise self.error
        try:
            if self.encrypted is None:
                chunk = self._detect(chunk)
            if chunk:
                if self.encrypted:
                    self._feed_encrypted(memoryview(chunk))
                else:
                    self._feed_plain(chunk)
        except DeviceError as exc:
            self.error = exc
            raise
        events, self._events = self._events, []
        return events

    def drain(self) -> list[OtaEvent]:
        """Events completed before an error was raised (e.g. ROM data already written)."""
        events, self._events = self._events, []
        return events

    def close(self) -> list[OtaEvent]:
        """The input ended; raise if the file was incomplete."""
        if self.error is not None:
            raise self.error
        if self._state != _COMPLETE:
            where = ("header", "ROM header", "ROM data", "signature/checksum")[self._state]
            self.error = DeviceError(DeviceErrorCode.InvalidFormat, f"truncated: the file ends inside the {where}")
            raise self.error
        return []

    @property
    def complete(self) -> bool:
        """True once the signature/checksum was read and accepted."""
        return self._state == _COMPLETE

    # -- encryption container -------------------------------------------------------

    def _detect(self, chunk: bytes) -> bytes:
        self._sniff += chunk
        if len(self._sniff) < 4:
            return b""
        head = bytes(self._sniff[:4])
        magic = int.from_bytes(head, "little")
        self.encrypted = magic not in (MAGIC_SIGNED, MAGIC_UNSIGNED)
        data, self._sniff = bytes(self._sniff), bytearray()
        return data

    def _feed_encrypted(self, view: memoryview) -> None:
        size, offset = len(view), 0
        while offset < size:
            state = self._e_state
            if state == _E_FINAL:
                raise DeviceError(DeviceErrorCode.InvalidFormat, "data after the final encrypted chunk")
            need = self._e_need
            if self._e_buf or size - offset < need:  # a field split across feeds: stage it
                take = min(need, size - offset)
                self._e_buf += view[offset : offset + take]
                offset += take
                self._e_need = need - take
                if self._e_need:
                    return
                block, self._e_buf = bytes(self._e_buf), bytearray()
            else:  # the whole field is here: no staging copy
                block = bytes(view[offset : offset + need])
                offset += need
                self._e_need = 0
            if state == _E_LENGTH:
                self._e_state, self._e_need = _E_CHUNK, int.from_bytes(block, "little") + 1
            elif state == _E_CHUNK:
                try:
                    plain, tag = self._e_pull.pull(block)  # type: ignore[attr-defined]
                except (CryptoError, ValueError):
                    raise DeviceError(
                        DeviceErrorCode.DecryptionFailed, "a chunk did not decrypt (wrong key or corrupted)"
                    ) from None
                if tag == TAG_FINAL:
                    self._e_state, self._e_need = _E_FINAL, 0
                else:
                    self._e_state, self._e_need = _E_LENGTH, 2
                self._feed_plain(plain)
            else:
                self._init_pull(block)

    def _init_pull(self, header: bytes) -> None:
        if self.decrypt_key is None:
            raise DeviceError(DeviceErrorCode.DecryptionFailed, "encrypted file, but no decryption key")
        state = sodium.crypto_secretstream_xchacha20poly1305_state()
        try:
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, self.decrypt_key)
        except (CryptoError, ValueError, TypeError):
            raise DeviceError(DeviceErrorCode.DecryptionFailed, "bad secretstream header") from None
        self._e_pull = Puller(state)
        self._e_state, self._e_need = _E_LENGTH, 2

    # -- the basic stream (BasicStream::write) ----------------------------------------

    def _feed_plain(self, data: bytes | memoryview) -> None:
        # Hot path: ROM data is passed on as ``bytes`` without an extra copy when a whole
        # chunk belongs to one ROM (the usual case); headers are staged in a small buffer.
        if isinstance(data, memoryview):
            data = bytes(data)
        offset, size = 0, len(data)
        while offset < size:
            state = self._state
            if state == _COMPLETE:
                raise DeviceError(DeviceErrorCode.UnsupportedData, "bytes after the signature/checksum")
            take = min(self._need, size - offset)
            piece = data if take == size else data[offset : offset + take]
            offset += take
            self._need -= take
            self.plain_bytes += take
            if state != _VERIFY and self._verifier is not None:
                self._verifier.update(piece)  # type: ignore[attr-defined]
            if state == _ROM_DATA:
                self._rom_data(piece)
                if not self._need:
                    self._rom_end()
                continue
            self._buf += piece
            if self._need:
                continue
            block, self._buf = bytes(self._buf), bytearray()
            if state == _HEADER:
                self._on_header(block)
            elif state == _ROM_HEADER:
                self._on_rom_header(block)
            else:
                self._on_verify(block)

    def _on_header(self, block: bytes) -> None:
        magic, timestamp, count = HEADER.unpack(block)
        if magic not in (MAGIC_SIGNED, MAGIC_UNSIGNED):
            raise DeviceError(DeviceErrorCode.InvalidFormat, f"bad magic {magic:#010x}")
        signed = magic == MAGIC_SIGNED
        if self.expect_signed is not None and signed != self.expect_signed:
            expected = "signed" if self.expect_signed else "unsigned"
            raise DeviceError(DeviceErrorCode.InvalidFormat, f"the device expects a {expected} file")
        self._signed = signed
        if signed:
            self._verifier = _Ed25519phVerifier()
        else:
            self._verifier = hashlib.md5()
        self._verifier.update(block)  # type: ignore[attr-defined]
        self.header = OtaHeader(signed, timestamp, count, bool(self.encrypted))
        self._events.append(self.header)
        if self.current_timestamp is not None and timestamp < self.current_timestamp:
            raise DeviceError(DeviceErrorCode.DowngradeNotAllowed, "the file is older than the running firmware")
        self._next_rom()

    def _next_rom(self) -> None:
        assert self.header is not None
        self._rom_index += 1
        if self._rom_index < self.header.rom_count:
            self._state, self._need = _ROM_HEADER, ROM_HEADER.size
        else:
            self._state, self._need = _VERIFY, SIGNATURE_BYTES if self._signed else MD5_BYTES

    def _on_rom_header(self, block: bytes) -> None:
        address, size = ROM_HEADER.unpack(block)
        selected = (
            self.target_address is not None
            and self.selected_rom is None
            and (address & ADDRESS_MASK) == (self.target_address & ADDRESS_MASK)
        )
        if selected and self.slot_size is not None and size > self.slot_size:
            raise DeviceError(DeviceErrorCode.RomTooLarge, f"ROM of {size} bytes for a slot of {self.slot_size}")
        self._rom = RomStart(self._rom_index, address, size, selected)
        self._rom_offset = 0
        self._rom_hash = hashlib.sha256() if self.hash_roms else None
        self._events.append(self._rom)
        if size:
            self._state, self._need = _ROM_DATA, size
        else:
            self._rom_end()

    def _rom_data(self, data: bytes) -> None:
        rom = self._rom
        assert rom is not None
        if self._rom_hash is not None:
            self._rom_hash.update(data)
        self._events.append(RomData(rom.index, self._rom_offset, data, rom.selected))
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
        assert self.header is not None
        self.last_digest = digest
        self._state = _COMPLETE
        if self._signed:
            method = "ed25519ph"
            if self.verify_key is None:
                self._events.append(Unverified(method, digest, "no verification key given"))
                self._finish()
                return
            ok = self._verifier.verify(digest, self.verify_key)  # type: ignore[attr-defined]
        else:
            method = "md5"
            ok = self._verifier.digest() == digest  # type: ignore[attr-defined]
        if not ok:
            raise DeviceError(DeviceErrorCode.VerificationFailed, f"{method} over the file does not match")
        self._events.append(Verified(method, digest))
        self._finish()

    def _finish(self) -> None:
        assert self.header is not None
        if self.header.rom_count and self.target_address is not None and self.selected_rom is None:
            raise DeviceError(DeviceErrorCode.NoRomFound, f"no ROM for the slot at {self.target_address:#x}")
        self._events.append(OtaDone(self.selected_rom))


class _Ed25519phVerifier:
    """Incremental Ed25519ph (libsodium ``crypto_sign_ed25519ph``) verification."""

    def __init__(self) -> None:
        self._state = sodium.crypto_sign_ed25519ph_state()

    def update(self, data: bytes) -> None:
        ph_update(self._state, data)

    def verify(self, signature: bytes, public_key: bytes) -> bool:
        try:
            return bool(sodium.crypto_sign_ed25519ph_final_verify(self._state, signature, public_key))
        except (BadSignatureError, ValueError, TypeError):
            return False


def iter_chunks(data: bytes, size: int) -> Iterable[bytes]:
    """``data`` in pieces of ``size`` bytes (for feeding decoders)."""
    view = memoryview(data)
    for offset in range(0, len(data), size):
        yield bytes(view[offset : offset + size])
