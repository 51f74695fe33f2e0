"""Benchmark: .ota build and streaming decode against the fastest honest pipeline on the same bytes.

The baseline calls the same libsodium functions through the same binding as otalib (PyNaCl's
cffi ``lib``), with no argument-checking wrappers and no copies: it hashes and encrypts the
image in place into one preallocated output, and decrypts every chunk into one reused buffer
that it hashes from directly. Whatever otalib adds (framing, events, copies) shows in the ratio.

Targets (issue #2): build and decode >= 0.8x the baseline's throughput; a streaming decode of a
16 MB image grows memory by < 2 MB (traced Python allocations, and the process's peak RSS
measured in a fresh child process). Prints ratios; asserts nothing.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from nacl import bindings as s
from nacl._sodium import ffi, lib

from otalib.formats.ota import OtaDecoder, Rom, build_ota
from otalib.formats.secretstream import CHUNK_PLAIN as ENC_CHUNK_PLAIN
from otalib.formats.secretstream import HEADER_BYTES as ENC_HEADER_BYTES
from otalib.formats.secretstream import TAG_FINAL, TAG_MESSAGE
from otalib.keys import LabKey

KEY = LabKey.from_bytes(bytes(range(64)))
FEED = 1460  # a TCP segment's worth, as the real device receives it
FEED_BOARD = 16 * 1024  # what the virtual board's socket reads hand over (up to 64 KiB)
SIG = s.crypto_sign_BYTES
ABYTES = s.crypto_secretstream_xchacha20poly1305_ABYTES
STATE_BYTES = s.crypto_secretstream_xchacha20poly1305_STATEBYTES
LENGTH = struct.Struct("<H")


def _ph_state():
    return s.crypto_sign_ed25519ph_state()  # the state object (a cffi buffer inside) PyNaCl allocates


def baseline_build(body: bytes) -> bytearray:
    """Sign ``body`` (Ed25519ph) and encrypt body + signature into one preallocated buffer."""
    ph = _ph_state()
    lib.crypto_sign_ed25519ph_update(ph.state, body, len(body))
    sig = ffi.new("unsigned char[]", SIG)
    lib.crypto_sign_ed25519ph_final_create(ph.state, sig, ffi.NULL, KEY.signing_key)
    total = len(body) + SIG
    chunks = -(-total // ENC_CHUNK_PLAIN)
    out = bytearray(ENC_HEADER_BYTES + total + chunks * (2 + ABYTES))
    out_ptr = ffi.from_buffer(out)
    state = ffi.new("unsigned char[]", STATE_BYTES)
    lib.crypto_secretstream_xchacha20poly1305_init_push(state, out_ptr, KEY.stream_key)
    src = ffi.from_buffer(body)
    tail = bytes(body[(chunks - 1) * ENC_CHUNK_PLAIN :]) + bytes(ffi.buffer(sig, SIG))  # the last chunk only
    at = ENC_HEADER_BYTES
    for index in range(chunks):
        last = index == chunks - 1
        start = index * ENC_CHUNK_PLAIN
        n = (total - start) if last else ENC_CHUNK_PLAIN
        LENGTH.pack_into(out, at, n + ABYTES - 1)
        plain = ffi.from_buffer(tail) if last else src + start
        tag = TAG_FINAL if last else TAG_MESSAGE
        lib.crypto_secretstream_xchacha20poly1305_push(state, out_ptr + at + 2, ffi.NULL, plain, n, ffi.NULL, 0, tag)
        at += 2 + n + ABYTES
    assert at == len(out)
    return out


def baseline_decode(data: bytes) -> bool:
    """Decrypt chunk by chunk into one reused buffer, hashing from it; verify the signature at the end."""
    src = ffi.from_buffer(data)
    state = ffi.new("unsigned char[]", STATE_BYTES)
    if lib.crypto_secretstream_xchacha20poly1305_init_pull(state, src, KEY.stream_key) != 0:
        return False
    # the plaintext's length, from the chunk lengths, tells where the signature starts
    at, plain_total = ENC_HEADER_BYTES, 0
    while at < len(data):
        size = LENGTH.unpack_from(data, at)[0] + 1
        plain_total += size - ABYTES
        at += 2 + size
    sig_at = plain_total - SIG
    ph = _ph_state()
    out = ffi.new("unsigned char[]", 0x10000)
    out_len = ffi.new("unsigned long long *")
    tag = ffi.new("unsigned char *")
    sig = bytearray()
    at, done = ENC_HEADER_BYTES, 0
    while at < len(data):
        size = LENGTH.unpack_from(data, at)[0] + 1
        rc = lib.crypto_secretstream_xchacha20poly1305_pull(state, out, out_len, tag, src + at + 2, size, ffi.NULL, 0)
        if rc != 0:
            return False
        n = out_len[0]
        hashed = max(0, min(n, sig_at - done))
        if hashed:
            lib.crypto_sign_ed25519ph_update(ph.state, out, hashed)
        if hashed < n:
            sig += ffi.buffer(out + hashed, n - hashed)
        done += n
        at += 2 + size
    return lib.crypto_sign_ed25519ph_final_verify(ph.state, bytes(sig), KEY.verify_key) == 0


def otalib_decode(data: bytes, feed: int = FEED) -> None:
    decoder = OtaDecoder(verify_key=KEY.verify_key, decrypt_key=KEY.decrypt_key, target_address=0x8000)
    view = memoryview(data)
    for offset in range(0, len(data), feed):
        decoder.feed(view[offset : offset + feed])
    decoder.end_of_input()


def best(fn, *args, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def _status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def rss_child(path: str) -> None:
    """(In a fresh process) decode the file at ``path``; print RSS before and the peak RSS during, in KiB."""
    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    otalib_decode(data)
    print(before, _status_kib("VmHWM"))


def rss_growth(data: bytes) -> int:
    """Peak RSS growth (KiB) of a streaming decode of ``data`` in a fresh Python process."""
    with tempfile.NamedTemporaryFile(suffix=".ota") as file:
        file.write(data)
        file.flush()
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", file.name], capture_output=True, text=True, check=True
        ).stdout
    before, peak = map(int, out.split())
    return peak - before


def main() -> None:
    print("baseline: the same libsodium calls through the same cffi binding, no wrappers, no copies")
    print(f"{'size':>6} {'op (feed B)':<12} {'base MB/s':>9} {'otalib MB/s':>12} {'ratio':>6}  (target >= 0.80)")
    for mb in (1, 4):
        roms = [Rom(0x8000, os.urandom(mb * 1024 * 1024))]
        data = build_ota(roms, KEY, signed=True, encrypted=True, timestamp=1)
        body = build_ota(roms, KEY, signed=True, timestamp=1)[:-SIG]
        assert baseline_decode(bytes(baseline_build(body))) and baseline_decode(data)  # the baseline is real
        t_base = best(baseline_build, body)
        t_lib = best(lambda r=roms: build_ota(r, KEY, signed=True, encrypted=True, timestamp=1))
        print(f"{mb:>4}MB {'build':<12} {mb / t_base:>9.1f} {mb / t_lib:>12.1f} {t_base / t_lib:>6.2f}")
        t_base = best(baseline_decode, data)
        for feed in (FEED, FEED_BOARD):
            t_lib = best(otalib_decode, data, feed)
            label = f"decode/{feed}"
            print(f"{mb:>4}MB {label:<12} {mb / t_base:>9.1f} {mb / t_lib:>12.1f} {t_base / t_lib:>6.2f}")
    for mb in (1, 16):
        data = build_ota([Rom(0x8000, os.urandom(mb * 1024 * 1024))], KEY, signed=True, encrypted=True, timestamp=1)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        otalib_decode(data)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        rss = rss_growth(data)
        print(
            f"streaming decode of {mb:>2} MB: traced peak growth {peak / 1024:.0f} KiB, "
            f"peak RSS growth {rss} KiB (fresh process; target < 2048 KiB)"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2])
    else:
        main()
