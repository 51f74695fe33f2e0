"""Fuzzing as a property: mutated conformance vectors raise only otalib's errors, and a signing
device never applies a mutated file (no forgery) — through inspect, explain and the pre-publish check."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otalib.errors import OtaLabError
from otalib.explain import layout
from otalib.formats.package import check_package
from otalib.inspect import DeviceBuild, Report, inspect_bytes
from otalib.keys import DeviceKeys, load_key
from otalib.vocabulary import Decision

VECTORS = Path(__file__).parent / "vectors"
KEY = load_key(VECTORS / "demo.key")
KEYS = DeviceKeys(KEY.verify_key, KEY.decrypt_key)
#: A device built with signing (and the vectors' keys), in advanced mode: applies only authentic files.
SIGNING_DEVICE = DeviceBuild(KEYS, signing=True, advanced=True)
#: A device known only by its keys (signed or not, plain or encrypted, any mode).
ANY_DEVICE = DeviceBuild(KEYS)
FILES = {path.name: path.read_bytes() for path in sorted(VECTORS.glob("*.ota")) + sorted(VECTORS.glob("*.sdp"))}
assert len(FILES) >= 10, "the conformance vectors are missing"


def _mutate(data: bytes, kind: str, at: int, span: int, value: int, blob: bytes) -> bytes:
    """One mutation, the kinds the adversarial review used."""
    at = at % (len(data) + 1)
    if kind == "flip" and at < len(data):
        return data[:at] + bytes([data[at] ^ (1 << (value % 8))]) + data[at + 1 :]
    if kind == "set" and at < len(data):
        return data[:at] + bytes([value]) + data[at + 1 :]
    if kind == "insert":
        return data[:at] + blob + data[at:]
    if kind == "delete":
        return data[:at] + data[at + span :]
    if kind == "truncate":
        return data[:at]
    if kind == "append":
        return data + blob
    return data[:at] + blob + data[at + len(blob) :]  # overwrite


mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append", "overwrite"]),
    st.integers(0, 2**16),
    st.integers(1, 64),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=40),
)


def _mutated(name: str, mutations: list) -> bytes:
    data = FILES[name]
    for step in mutations:
        data = _mutate(data, *step)
    return data


def _firmware(data: bytes, report: Report) -> bytes:
    """The part of ``data`` a signature covers: all of it, or what follows a package's (unsigned) patch prefix."""
    return data[report.data["version_bytes"] :] if report.kind == "sdp" else data


def _judge(data: bytes, build: DeviceBuild, hint: str) -> Report | None:
    try:
        return inspect_bytes(data, hint=hint, build=build)
    except OtaLabError:
        return None


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(name=st.sampled_from(sorted(FILES)), mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_vectors_raise_only_project_errors_and_are_never_forged(name, mutations):
    data = _mutated(name, mutations)
    original = FILES[name]
    hint = Path(name).suffix
    for build in (SIGNING_DEVICE, ANY_DEVICE):
        report = _judge(data, build, hint)
        if report is not None:
            report.to_dict()  # every field renders
    signed = _judge(data, SIGNING_DEVICE, hint)
    if signed is not None and signed.verdict is not None and signed.verdict.outcome is Decision.APPLIED:
        assert signed.data.get("verified")
        reference = inspect_bytes(original, hint=hint, build=ANY_DEVICE)
        assert _firmware(data, signed) == _firmware(original, reference), f"forgery accepted: {name} {mutations}"
    with contextlib.suppress(OtaLabError):
        layout(data, KEY)
    for varint in (True, False):
        with contextlib.suppress(OtaLabError):
            check_package(data, varint)


@FUZZ
@given(data=st.binary(max_size=600), hint=st.sampled_from(["", ".sdp", ".ota"]))
def test_random_bytes_raise_only_project_errors(data, hint):
    for build in (SIGNING_DEVICE, ANY_DEVICE):
        report = _judge(data, build, hint)
        if report is not None:
            assert not (report.verdict and report.verdict.outcome is Decision.APPLIED and build is SIGNING_DEVICE)
    with contextlib.suppress(OtaLabError):
        layout(data, KEY)
