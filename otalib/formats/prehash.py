"""Ed25519ph prehashing shared by verifiers that are fed the same bytes (a fleet's boards).

A signed ``.ota`` file is checked with Ed25519ph: SHA-512 over the whole file (libsodium's
``crypto_sign_ed25519ph_update``), then one signature check. A thousand boards taking one update
hash the same megabyte a thousand times. A :class:`PrehashPool` keeps one chain of hash steps per
stream, a step per :data:`BLOCK` bytes (the block and the hash state after it): a verifier whose
next block equals the chain's (compared byte for byte) takes the state after it instead of hashing
it; the first verifier to reach a block hashes it and extends the chain; a verifier whose bytes
differ (a bit flip on its link) copies the state where it left the chain and hashes the rest itself.
What each verifier ends with is the SHA-512 state of its own bytes, bit for bit — as
:class:`~otalib.fleet.flash.SectorPool` stores equal flash sectors once, this computes equal hash
steps once.
"""

from __future__ import annotations

from nacl import bindings as sodium
from nacl._sodium import ffi

from otalib.formats._sodium import ph_update

#: Bytes per shared hash step.
BLOCK = 16 * 1024


def _snapshot(state: sodium.crypto_sign_ed25519ph_state) -> bytes:
    return bytes(ffi.buffer(state.state))


def _state_from(snapshot: bytes) -> sodium.crypto_sign_ed25519ph_state:
    state = sodium.crypto_sign_ed25519ph_state()
    ffi.memmove(state.state, snapshot, len(snapshot))
    return state


class _Step:
    """One block of a stream and the hash state after it; ``next`` the chain's following step."""

    __slots__ = ("block", "next", "state")

    def __init__(self, block: bytes, state: bytes) -> None:
        self.block = block
        self.state = state
        self.next: _Step | None = None


class PrehashPool:
    """The chains of hash steps, one per stream (by its first block)."""

    def __init__(self) -> None:
        self._first: dict[bytes, _Step] = {}
        self._initial = _snapshot(sodium.crypto_sign_ed25519ph_state())
        #: blocks hashed (the chains' steps and the blocks of verifiers that left them)
        self.hashed = 0

    def step(self, at: _Step | None, block: bytes) -> tuple[_Step, bool]:
        """The step after ``at`` (None: a stream's start) for ``block``: (the step, True) on the chain,
        hashed now if the chain ends at ``at``; (a step of the verifier's own, False) if the chain's
        next block differs."""
        following = self._first.get(block) if at is None else at.next
        if following is not None and following.block == block:
            return following, True
        state = _state_from(at.state if at is not None else self._initial)
        ph_update(state, block)
        self.hashed += 1
        own = _Step(block, _snapshot(state))
        if following is not None:  # the chain goes on with other bytes: this stream is its own
            return own, False
        if at is None:
            self._first[block] = own
        else:
            at.next = own
        return own, True

    def state_after(self, at: _Step | None) -> sodium.crypto_sign_ed25519ph_state:
        """A fresh libsodium state equal to the one after ``at`` (None: nothing hashed)."""
        return _state_from(at.state if at is not None else self._initial)


class PooledPrehash:
    """An Ed25519ph prehash (``update``, then :meth:`state`) that shares its work through ``pool``."""

    def __init__(self, pool: PrehashPool) -> None:
        self._pool = pool
        self._at: _Step | None = None
        self._pending = bytearray()
        self._own: sodium.crypto_sign_ed25519ph_state | None = None  # off the chain: hashing alone

    def update(self, data: bytes) -> None:
        own = self._own
        if own is not None:
            ph_update(own, data)
            return
        pending = self._pending
        pending += data
        if len(pending) < BLOCK:
            return
        whole = len(pending) - len(pending) % BLOCK
        pool, at = self._pool, self._at
        for start in range(0, whole, BLOCK):
            at, shared = pool.step(at, bytes(pending[start : start + BLOCK]))
            if not shared:  # its bytes differ from the chain's: the rest is hashed here
                self._own = own = pool.state_after(at)
                ph_update(own, bytes(pending[start + BLOCK :]))
                self._pending = bytearray()
                return
        self._at = at
        del pending[:whole]

    def state(self) -> sodium.crypto_sign_ed25519ph_state:
        """A libsodium state holding the hash of everything fed (fresh: finishing it changes nothing here)."""
        if self._own is not None:
            return _state_from(_snapshot(self._own))
        state = self._pool.state_after(self._at)
        if self._pending:
            ph_update(state, bytes(self._pending))
        return state
