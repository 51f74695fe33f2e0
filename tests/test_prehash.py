"""Shared Ed25519ph prehashing: every verifier ends with the hash of its own bytes, and equal bytes are hashed once."""

from __future__ import annotations

import random

import pytest
from nacl import bindings as sodium

from otalib.formats.ota import Ed25519phVerifier
from otalib.formats.prehash import BLOCK, PooledPrehash, PrehashPool
from otalib.keys import LabKey

KEY = LabKey.from_bytes(bytes(range(64)))


def signature_of(state: sodium.crypto_sign_ed25519ph_state) -> bytes:
    """Ed25519ph is deterministic: equal signatures, equal prehashes."""
    return sodium.crypto_sign_ed25519ph_final_create(state, KEY.signing_key)


def alone(data: bytes) -> bytes:
    state = sodium.crypto_sign_ed25519ph_state()
    sodium.crypto_sign_ed25519ph_update(state, data)
    return signature_of(state)


def fed(prehash: PooledPrehash, data: bytes, rng: random.Random) -> PooledPrehash:
    at = 0
    while at < len(data):
        n = rng.choice([1, 16, 1460, 4096, BLOCK, 3 * BLOCK + 5, 65536])
        prehash.update(data[at : at + n])
        at += n
    return prehash


@pytest.mark.parametrize("seed", range(6))
def test_each_verifier_ends_with_the_hash_of_its_own_bytes(seed):
    rng = random.Random(seed)
    update = rng.randbytes(rng.randrange(0, 12 * BLOCK))
    flipped = bytearray(update)
    if flipped:
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)  # one board's bit flip
    streams = [update] * 4 + [bytes(flipped), rng.randbytes(5 * BLOCK + 7), update[: len(update) // 2]]
    rng.shuffle(streams)  # whichever board hashes first, the others follow or leave the chain
    pool = PrehashPool()
    prehashes = [fed(PooledPrehash(pool), data, rng) for data in streams]
    for data, prehash in zip(streams, prehashes, strict=True):
        assert signature_of(prehash.state()) == alone(data)
        assert signature_of(prehash.state()) == alone(data)  # state() leaves the prehash as it was


def test_equal_bytes_are_hashed_once():
    rng = random.Random(1)
    update = rng.randbytes(10 * BLOCK)
    pool = PrehashPool()
    for _ in range(5):
        fed(PooledPrehash(pool), update, rng)
    assert pool.hashed == 10  # not 5 x 10
    flipped = bytearray(update)
    flipped[7 * BLOCK + 3] ^= 0x10
    fed(PooledPrehash(pool), bytes(flipped), rng)
    assert pool.hashed == 11  # the flipped block; the rest is hashed alone (not counted as steps)


def test_a_pooled_verifier_judges_as_a_lone_one():
    rng = random.Random(2)
    update = rng.randbytes(6 * BLOCK + 100)
    good = sodium.crypto_sign_ed25519ph_final_create(_state_of(update), KEY.signing_key)
    pool = PrehashPool()
    for data, expected in ((update, True), (update[:-1] + b"\x00", False), (update, True)):
        verifier, lone = Ed25519phVerifier(pool), Ed25519phVerifier()
        for start in range(0, len(data), 1460):
            verifier.update(data[start : start + 1460])
            lone.update(data[start : start + 1460])
        assert verifier.matches(good, KEY.verify_key) is lone.matches(good, KEY.verify_key) is expected


def _state_of(data: bytes) -> sodium.crypto_sign_ed25519ph_state:
    state = sodium.crypto_sign_ed25519ph_state()
    sodium.crypto_sign_ed25519ph_update(state, data)
    return state


def test_a_fleets_boards_share_their_hashing_and_still_verify(broker, monkeypatch):
    from otalib.fleet import FleetSession, FleetSpec
    from otalib.formats import _sodium, prehash

    hashed = {"bytes": 0}
    update = _sodium.ph_update

    def counted(state, data):
        hashed["bytes"] += len(data)
        return update(state, data)

    spec = {
        "name": "share",
        "timeout_s": 60,
        "update": {"size": "256KiB", "mode": "signed"},
        "groups": [{"name": "ok", "count": 6}, {"name": "other", "count": 2, "key": "other"}],
    }
    session = FleetSession(FleetSpec.from_dict(spec), broker=broker.url, processes=1)  # the package is made
    monkeypatch.setattr(prehash, "ph_update", counted)  # the boards' (the publish's own check hashes alone)
    result = session.run()
    outcomes = result.boards.groupby("group")["outcome"].agg(set)
    assert outcomes["ok"] == {"updated"} and outcomes["other"] == {"rejected"}
    # 8 boards: the image hashed once, plus each board's last partial block (not 8 times the image)
    assert 256 * 1024 <= hashed["bytes"] < 256 * 1024 + 8 * BLOCK + 1024
