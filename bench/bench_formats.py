"""Benchmark: .ota build and streaming decode vs the raw libsodium calls on the same bytes.

Targets (issue #2): build and decode ≥ 0.8× the raw throughput; peak memory growth of
a streaming decode of a 16 MB image < 2 MB. Prints ratios measured side by side.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc

from nacl import bindings as s

from otalib.formats.ota import ENC_CHUNK_PLAIN, TAG_FINAL, TAG_MESSAGE, OtaDecoder, Rom, build_ota
from otalib.keys import LabKey

KEY = LabKey.from_bytes(bytes(range(64)))
FEED = 1460  # a TCP segment's worth, as the real device receives it
FEED_BOARD = 16 * 1024  # what the virtual board's socket reads hand over (up to 64 KiB)


def raw_build(body: bytes) -> bytes:
    state = s.crypto_sign_ed25519ph_state()
    s.crypto_sign_ed25519ph_update(state, body)
    plain = body + s.crypto_sign_ed25519ph_final_create(state, KEY.signing_key)
    enc = s.crypto_secretstream_xchacha20poly1305_state()
    out = [s.crypto_secretstream_xchacha20poly1305_init_push(enc, KEY.stream_key)]
    for offset in range(0, len(plain), ENC_CHUNK_PLAIN):
        end = min(offset + ENC_CHUNK_PLAIN, len(plain))
        tag = TAG_FINAL if end >= len(plain) else TAG_MESSAGE
        cipher = s.crypto_secretstream_xchacha20poly1305_push(enc, plain[offset:end], None, tag)
        out += [struct.pack("<H", len(cipher) - 1), cipher]
    return b"".join(out)


def raw_decode(data: bytes) -> None:
    state = s.crypto_secretstream_xchacha20poly1305_state()
    s.crypto_secretstream_xchacha20poly1305_init_pull(state, data[:24], KEY.stream_key)
    sig = s.crypto_sign_ed25519ph_state()
    offset, plain_parts = 24, []
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 2], "little") + 1
        plain, _ = s.crypto_secretstream_xchacha20poly1305_pull(state, data[offset + 2 : offset + 2 + size])
        plain_parts.append(plain)
        offset += 2 + size
    plain = b"".join(plain_parts)
    s.crypto_sign_ed25519ph_update(sig, plain[:-64])
    s.crypto_sign_ed25519ph_final_verify(sig, plain[-64:], KEY.verify_key)


def otalib_decode(data: bytes, feed: int = FEED) -> None:
    decoder = OtaDecoder(verify_key=KEY.verify_key, decrypt_key=KEY.decrypt_key, target_address=0x8000)
    view = memoryview(data)
    for offset in range(0, len(data), feed):
        decoder.feed(view[offset : offset + feed])
    decoder.close()


def build_encrypted(roms: list[Rom]) -> bytes:
    return build_ota(roms, KEY, signed=True, encrypted=True, timestamp=1)


def best(fn, *args, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    print(f"{'size':>6} {'op (feed B)':<12} {'raw MB/s':>9} {'otalib MB/s':>12} {'ratio':>6}  (target >= 0.80)")
    for mb in (1, 4):
        rom = os.urandom(mb * 1024 * 1024)
        roms = [Rom(0x8000, rom)]
        body = build_ota(roms, KEY, signed=True, timestamp=1)[:-64]
        t_raw = best(raw_build, body)
        t_lib = best(lambda r=roms: build_ota(r, KEY, signed=True, encrypted=True, timestamp=1))
        print(f"{mb:>4}MB {'build':<12} {mb / t_raw:>9.1f} {mb / t_lib:>12.1f} {t_raw / t_lib:>6.2f}")
        data = build_ota(roms, KEY, signed=True, encrypted=True, timestamp=1)
        for feed in (FEED, FEED_BOARD):
            t_raw = best(raw_decode, data)
            t_lib = best(otalib_decode, data, feed)
            label = f"decode/{feed}"
            print(f"{mb:>4}MB {label:<12} {mb / t_raw:>9.1f} {mb / t_lib:>12.1f} {t_raw / t_lib:>6.2f}")
    for mb in (1, 16):
        data = build_ota([Rom(0x8000, os.urandom(mb * 1024 * 1024))], KEY, signed=True, encrypted=True, timestamp=1)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        otalib_decode(data)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        print(f"streaming decode of {mb:>2} MB: peak memory growth {peak / 1024:.0f} KiB (target < 2048 KiB)")


if __name__ == "__main__":
    main()
