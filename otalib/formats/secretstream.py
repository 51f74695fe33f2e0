"""The encryption container of ``.ota`` files: a libsodium secretstream, written and read.

Layout: a 24-byte secretstream header, then chunks of ``u16 ciphertext_length - 1``
+ ciphertext; the last chunk carries the FINAL tag. :func:`encrypt` writes it as the
reference tool does; :class:`SecretstreamReader` reads it sans-IO (fed arbitrary
pieces), reports each frame with its offset in the file and hands the plaintext on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from otalib.errors import DeviceError, DeviceErrorCode
from otalib.formats._sodium import Puller, Pusher, ffi

HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
LENGTH_BYTES = 2
#: Plaintext bytes per encrypted chunk, as the reference tool writes them.
CHUNK_PLAIN = 2048 - ABYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def encrypt(plain: bytes, stream_key: bytes) -> bytes:
    """Wrap ``plain`` in the reference tool's secretstream container."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, stream_key)
    size = len(plain)
    out = bytearray(len(header) + size + -(-size // CHUNK_PLAIN) * (LENGTH_BYTES + ABYTES))
    out[: len(header)] = header
    end = Pusher(state).push_all(plain, out, len(header), CHUNK_PLAIN, TAG_FINAL, TAG_MESSAGE)
    assert end == len(out)
    return bytes(out)


@dataclass(frozen=True)
class ContainerHeader:
    """The secretstream header: ``length`` bytes at ``offset`` in the file."""

    offset: int
    length: int


@dataclass(frozen=True)
class ContainerChunk:
    """Chunk ``index``: its length field at ``offset`` (2 bytes), then ``cipher_length`` bytes of ciphertext."""

    index: int
    offset: int
    cipher_length: int

    @property
    def cipher_offset(self) -> int:
        """Where the ciphertext starts in the file."""
        return self.offset + LENGTH_BYTES


ContainerEvent = ContainerHeader | ContainerChunk


class ContainerState(enum.Enum):
    """Where the reader is in the container.

    HEADER -(24 bytes)-> LENGTH -(2 bytes)-> CHUNK -(ciphertext)-> LENGTH, or FINAL
    after the chunk tagged final; any byte in FINAL is an error.
    """

    HEADER = enum.auto()
    LENGTH = enum.auto()
    CHUNK = enum.auto()
    FINAL = enum.auto()


class SecretstreamReader:
    """Reads the container fed in arbitrary pieces: plaintext to ``sink``, frames to ``emit``.

    ``emit`` (optional: one event per 2 KiB chunk is a measurable share of decoding)
    gets a :class:`ContainerHeader` and one :class:`ContainerChunk` per chunk, with
    their offsets in the file. With ``frames_only`` nothing is decrypted (no key
    needed): the reader only walks the frames, as ``explain`` does for a file it has
    no key for. Otherwise a missing key, a bad header or a chunk that does not
    authenticate raise :class:`~otalib.errors.DeviceError` ``DecryptionFailed``, as a
    device does.
    """

    def __init__(
        self,
        key: bytes | None,
        sink: Callable[[bytes], object],
        emit: Callable[[ContainerEvent], object] | None = None,
        *,
        frames_only: bool = False,
    ) -> None:
        self._key = key
        self._sink = sink
        self._emit = emit
        self._frames_only = frames_only
        self._state = ContainerState.HEADER
        self._need = HEADER_BYTES
        self._buf = bytearray()
        self._pull: Puller | None = None
        self._offset = 0  # file offset of the next chunk's length field
        self._index = 0
        self._stage = bytearray()  # a chunk split across feeds, gathered for decryption (grown as needed)
        self._stage_at = ffi.from_buffer(self._stage)
        self._staged = 0

    @property
    def state(self) -> ContainerState:
        return self._state

    def feed(self, view: memoryview) -> None:
        """Take the next piece of the container."""
        size, offset = len(view), 0
        while offset < size:
            state = self._state
            if state is _FINAL:
                raise DeviceError(DeviceErrorCode.InvalidFormat, "data after the final encrypted chunk")
            need = self._need
            if state is _CHUNK and self._pull is not None:  # ciphertext: decrypted where it lies, or staged
                staged = self._staged
                if not staged and size - offset >= need:  # the usual case for large feeds: no copy
                    cipher = ffi.from_buffer(view) + offset
                    offset += need
                else:
                    if len(self._stage) < need:  # at most a chunk's length (a u16): 2 KiB as the tool writes
                        self._stage = bytearray(need)
                        self._stage_at = ffi.from_buffer(self._stage)
                    take = min(need - staged, size - offset)
                    self._stage[staged : staged + take] = view[offset : offset + take]
                    offset += take
                    staged += take
                    if staged < need:
                        self._staged = staged
                        return
                    cipher, self._staged = self._stage_at, 0
                self._chunk(need, cipher)
                continue
            if self._buf or size - offset < need:  # a field split across feeds: stage it
                take = min(need, size - offset)
                self._buf += view[offset : offset + take]
                offset += take
                self._need = need - take
                if self._need:
                    return
                block, self._buf = bytes(self._buf), bytearray()
            else:  # the whole field is here: no staging copy
                block = bytes(view[offset : offset + need])
                offset += need
                self._need = 0
            if state is _LENGTH:
                self._state, self._need = _CHUNK, int.from_bytes(block, "little") + 1
                continue
            if state is _HEADER:
                self._on_header(block)
                continue
            self._chunk(len(block), None)  # frames only

    def _chunk(self, length: int, cipher: Any) -> None:
        """A whole chunk of ``length`` bytes at ``cipher`` (a cffi pointer; None: frames only): report
        it, decrypt it, hand the plaintext on."""
        self._state, self._need = _LENGTH, LENGTH_BYTES
        if self._emit is not None:  # offsets are kept only for the frames reported
            self._emit(ContainerChunk(self._index, self._offset, length))
            self._index += 1
            self._offset += LENGTH_BYTES + length
        pull = self._pull
        if pull is None or cipher is None:
            return
        try:
            plain, tag = pull.pull_at(cipher, length)
        except (CryptoError, ValueError):
            raise DeviceError(
                DeviceErrorCode.DecryptionFailed, "a chunk did not decrypt (wrong key or corrupted)"
            ) from None
        if tag == TAG_FINAL:
            self._state, self._need = _FINAL, 0
        self._sink(plain)

    def _on_header(self, header: bytes) -> None:
        self._state, self._need = _LENGTH, LENGTH_BYTES
        self._offset = len(header)
        if self._emit is not None:
            self._emit(ContainerHeader(0, len(header)))
        if self._frames_only:
            return
        if self._key is None:
            raise DeviceError(DeviceErrorCode.DecryptionFailed, "encrypted file, but no decryption key")
        state = sodium.crypto_secretstream_xchacha20poly1305_state()
        try:
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, self._key)
        except (CryptoError, ValueError, TypeError):
            raise DeviceError(DeviceErrorCode.DecryptionFailed, "bad secretstream header") from None
        self._pull = Puller(state)


_HEADER, _LENGTH, _CHUNK, _FINAL = ContainerState
