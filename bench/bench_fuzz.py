"""Benchmark: bounded fuzzing of the decoders through ``inspect`` (inputs per second).

Mutates the conformance vectors (flip, set, insert, delete, truncate, append) and
judges each input as a signing device and as a device known only by its keys, as
``otalab inspect`` does. Bounded by a count and by seconds (``--count``, ``--seconds``).
Fails (exit 1) on an error outside otalib's hierarchy or on a mutated file a
signing device would apply; prints inputs/s and the outcomes seen.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

from otalib.errors import OtaLabError
from otalib.inspect import DeviceBuild, Report, inspect_bytes
from otalib.keys import DeviceKeys, load_key
from otalib.vocabulary import Decision

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random mutations of ``data``."""
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        kind = rng.choice(("flip", "set", "insert", "delete", "truncate", "append"))
        if kind in ("flip", "set") and at < len(data):
            value = data[at] ^ (1 << rng.randrange(8)) if kind == "flip" else rng.randrange(256)
            data = data[:at] + bytes([value]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + rng.randbytes(rng.randint(1, 32)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + rng.randint(1, 64) :]
        elif kind == "truncate":
            data = data[:at]
        else:
            data = data + rng.randbytes(rng.randint(1, 32))
    return data


def firmware(data: bytes, report: Report) -> bytes:
    """What the signature covers: the whole file, or what follows a package's patch prefix."""
    return data[report.data["version_bytes"] :] if report.kind == "sdp" else data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="at most this many inputs")
    parser.add_argument("--seconds", type=float, default=10.0, help="at most this long")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    key = load_key(VECTORS / "demo.key")
    keys = DeviceKeys(key.verify_key, key.decrypt_key)
    signing, anyone = DeviceBuild(keys, signing=True, advanced=True), DeviceBuild(keys)
    files = []
    for path in sorted(VECTORS.glob("*.ota")) + sorted(VECTORS.glob("*.sdp")):
        data = path.read_bytes()
        files.append((path.suffix, data, firmware(data, inspect_bytes(data, hint=path.suffix, build=anyone))))
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    start = time.perf_counter()
    done = 0
    while done < args.count and time.perf_counter() - start < args.seconds:
        hint, original, signed_part = rng.choice(files)
        data = mutate(original, rng)
        for build in (signing, anyone):
            try:
                report = inspect_bytes(data, hint=hint, build=build)
            except OtaLabError:
                outcomes["error"] += 1
                continue
            except Exception as exc:  # a bug: not one of otalib's errors
                print(f"FAIL: {type(exc).__name__}: {exc} on a mutation of a {hint} vector", file=sys.stderr)
                return 1
            outcome = report.verdict.outcome.value if report.verdict else report.kind
            outcomes[outcome] += 1
            applied = report.verdict is not None and report.verdict.outcome is Decision.APPLIED
            if build is signing and applied and firmware(data, report) != signed_part:
                print(f"FAIL: a signing device would apply a mutated {hint} file", file=sys.stderr)
                return 1
        done += 1
    elapsed = time.perf_counter() - start
    seen = ", ".join(f"{name} {n}" for name, n in outcomes.most_common())
    print(f"fuzz: {done} mutated inputs in {elapsed:.1f} s = {done / elapsed:,.0f} inputs/s (x2 device builds)")
    print(f"  outcomes: {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
