"""Per-chunk libsodium calls on the decoder's hot path, without PyNaCl's per-call argument checks.

The states are PyNaCl's own (created and finished through its public API); only
``update``/``pull``, called once per 2 KiB chunk, go straight to the same libsodium
functions through PyNaCl's cffi binding. Arguments are checked here once, by
construction (bytes of bounded length), instead of on every call.
"""

from __future__ import annotations

from typing import Any

from nacl import bindings as sodium
from nacl._sodium import ffi, lib
from nacl.exceptions import CryptoError

ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
MAX_CHUNK = 0x10000  # a chunk length is a u16 + 1


def ph_update(state: sodium.crypto_sign_ed25519ph_state, data: bytes) -> None:
    """``crypto_sign_ed25519ph_update`` on a PyNaCl Ed25519ph state."""
    if lib.crypto_sign_ed25519ph_update(state.state, data, len(data)) != 0:  # pragma: no cover - never fails
        raise CryptoError("crypto_sign_ed25519ph_update failed")


class Pusher:
    """``crypto_secretstream_xchacha20poly1305_push`` of a plaintext range straight into the caller's buffer."""

    def __init__(self, state: sodium.crypto_secretstream_xchacha20poly1305_state) -> None:
        self._state = state.statebuf
        self._keep = state  # the state buffer lives as long as this object

    def push_all(self, plain: bytes, out: bytearray, at: int, chunk: int, final_tag: int, tag: int) -> int:
        """Encrypt ``plain`` in chunks of ``chunk`` bytes into ``out`` from ``at``, each after its
        ``u16 length - 1`` field (the last with ``final_tag``); the offset after the last."""
        size = len(plain)
        if size and at + size + -(-size // chunk) * (2 + ABYTES) > len(out):
            raise ValueError("the output buffer is too small")
        src, dst, push = ffi.from_buffer(plain), ffi.from_buffer(out), lib.crypto_secretstream_xchacha20poly1305_push
        for offset in range(0, size, chunk):
            n = min(chunk, size - offset)
            cipher = n + ABYTES
            out[at : at + 2] = (cipher - 1).to_bytes(2, "little")
            last = offset + n >= size
            if push(self._state, dst + at + 2, ffi.NULL, src + offset, n, ffi.NULL, 0, final_tag if last else tag):
                raise CryptoError("crypto_secretstream_xchacha20poly1305_push failed")  # pragma: no cover
            at += 2 + cipher
        return at


class Puller:
    """``crypto_secretstream_xchacha20poly1305_pull`` with one reused output buffer (grown to the largest
    chunk: 2 KiB as the reference tool writes, not the 64 KiB a chunk may have; a fleet holds one per board)."""

    def __init__(self, state: sodium.crypto_secretstream_xchacha20poly1305_state) -> None:
        self._state = state.statebuf
        self._keep = state  # the state buffer lives as long as this object
        self._out = ffi.new("unsigned char[]", 0)
        self._out_len = ffi.new("unsigned long long *")
        self._tag = ffi.new("unsigned char *")

    def pull_at(self, cipher: Any, size: int) -> tuple[bytes, int]:
        """Decrypt the chunk of ``size`` bytes at ``cipher`` (bytes, or a cffi pointer into a buffer); raise
        :class:`CryptoError` if it does not authenticate."""
        if not ABYTES <= size <= MAX_CHUNK:
            raise CryptoError("bad chunk length")
        if len(self._out) < size:
            self._out = ffi.new("unsigned char[]", size)
        rc = lib.crypto_secretstream_xchacha20poly1305_pull(
            self._state, self._out, self._out_len, self._tag, cipher, size, ffi.NULL, 0
        )
        if rc != 0:
            raise CryptoError("chunk did not authenticate")
        return ffi.buffer(self._out, self._out_len[0])[:], self._tag[0]
