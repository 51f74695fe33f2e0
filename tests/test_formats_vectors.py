"""Conformance: the framework's own reference vectors decode, verify and rebuild byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otalib.errors import UsageError
from otalib.formats.ota import OtaDecoder, Rom, Verified, build_ota, iter_chunks
from otalib.formats.package import PackageParser, PatchRead, check_package, pack, unpack
from otalib.formats.version import decode_patch, device_patch, encode_patch
from otalib.inspect import inspect_file
from otalib.keys import DeviceKeys, load_key

VECTORS = Path(__file__).parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
OTA_FILES = sorted(MANIFEST["ota_files"])
SDP_FILES = sorted(MANIFEST["sdp_files"])


@pytest.fixture(scope="module")
def demo_key():
    return load_key(VECTORS / "demo.key")


@pytest.fixture(scope="module")
def other_key():
    return load_key(VECTORS / "other.key")


def roms_of(made_with: str) -> list[Rom]:
    words = made_with.split()
    roms = []
    for index, word in enumerate(words):
        if word == "--rom":
            name, address = words[index + 1].split("@")
            roms.append(Rom(int(address, 16), (VECTORS / name).read_bytes()))
    return roms


def test_binary_keys_match_the_reference_mkbinkeys(demo_key):
    assert demo_key.verify_key == (VECTORS / "verify.key.bin").read_bytes()
    assert demo_key.decrypt_key == (VECTORS / "decrypt.key.bin").read_bytes()


@pytest.mark.parametrize("name", OTA_FILES)
def test_every_ota_vector_decodes_and_verifies_with_the_right_key(name, demo_key):
    expected = MANIFEST["ota_files"][name]
    report = inspect_file(VECTORS / name, demo_key)
    assert report.kind == "ota"
    assert report.ok, report.data
    assert report.data["error"] is None
    assert report.data["signed"] is expected["signed"]
    assert report.data["encrypted"] is expected["encrypted"]
    assert report.data["timestamp"] == expected["timestamp"]
    assert report.data["roms"] == expected["roms"]


@pytest.mark.parametrize("name", OTA_FILES)
def test_every_protected_vector_fails_with_the_other_key(name, other_key):
    expected = MANIFEST["ota_files"][name]
    report = inspect_file(VECTORS / name, other_key)
    if not (expected["signed"] or expected["encrypted"]):
        assert report.ok  # MD5 only: any key, or none, verifies
        return
    assert not report.ok
    wanted = "DecryptionFailed" if expected["encrypted"] else "VerificationFailed"
    assert report.data["error"] == wanted


@pytest.mark.parametrize("name", OTA_FILES)
def test_otalab_builds_are_byte_identical_to_the_reference(name, demo_key):
    expected = MANIFEST["ota_files"][name]
    reference = (VECTORS / name).read_bytes()
    key = demo_key if (expected["signed"] or expected["encrypted"]) else None
    built = build_ota(
        roms_of(expected["made_with"]),
        key,
        signed=expected["signed"],
        encrypted=expected["encrypted"],
        timestamp=expected["timestamp"],
    )
    assert len(built) == len(reference)
    if not expected["encrypted"]:
        assert built == reference
        return
    # Encryption draws a random header: compare what both decrypt to, and the chunk framing.
    plain_ref = _decrypt(reference, demo_key)
    plain_new = _decrypt(built, demo_key)
    assert plain_new == plain_ref
    assert _chunk_sizes(built) == _chunk_sizes(reference)


def _decrypt(data: bytes, key) -> bytes:
    from nacl import bindings as s

    state = s.crypto_secretstream_xchacha20poly1305_state()
    s.crypto_secretstream_xchacha20poly1305_init_pull(state, data[:24], key.decrypt_key)
    out, offset = [], 24
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 2], "little") + 1
        plain, _ = s.crypto_secretstream_xchacha20poly1305_pull(state, data[offset + 2 : offset + 2 + size])
        out.append(plain)
        offset += 2 + size
    return b"".join(out)


def _chunk_sizes(data: bytes) -> list[int]:
    sizes, offset = [], 24
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 2], "little") + 1
        sizes.append(size)
        offset += 2 + size
    return sizes


@pytest.mark.parametrize("name", SDP_FILES)
def test_package_vectors(name, demo_key):
    expected = MANIFEST["sdp_files"][name]
    data = (VECTORS / name).read_bytes()
    payload = (VECTORS / expected["payload"]).read_bytes()
    prefix = bytes.fromhex(expected["prefix_hex"])
    assert encode_patch(expected["patch"], expected["varint"]) == prefix
    assert pack(payload, expected["patch"], expected["varint"]) == data
    assert unpack(data, expected["varint"]) == (expected["patch"], payload)
    report = check_package(data, expected["varint"])
    assert report.patch == expected["patch"]
    assert report.kind == "ota"
    inspected = inspect_file(VECTORS / name, demo_key)
    assert inspected.kind == "sdp"
    assert inspected.data["patch"] == expected["patch"]
    assert inspected.ok


@pytest.mark.parametrize(
    ("prefix", "reference", "sming"),
    [
        ("05", 5, 5),
        ("7f", 127, 127),
        ("8001", 128, 1),
        ("ac02", 300, 46),
        ("8101", 129, 2),
        ("c08da3c906", 1764280000, 191),
    ],
)
def test_sming_61_additive_varint_decode(prefix, reference, sming):
    data = bytes.fromhex(prefix) + b"payload"
    assert decode_patch(data, True, "reference") == (reference, len(prefix) // 2)
    assert decode_patch(data, True, "sming-6.1") == (sming, len(prefix) // 2)
    assert device_patch(reference) == sming


def test_device_parser_applies_300_at_46_and_skips_it_at_47():
    data = (VECTORS / "pack_300_varint.sdp").read_bytes()
    for current, accepted in ((45, True), (46, True), (47, False), (100, False)):
        parser = PackageParser(current, True, "sming-6.1")
        events = parser.feed(data)
        read = next(e for e in events if isinstance(e, PatchRead))
        assert read.patch == 46
        assert read.accepted is accepted
        assert parser.end_of_input().payload_bytes == (len(data) - 2 if accepted else 0)
    reference = PackageParser(299, True, "reference")
    assert next(e for e in reference.feed(data) if isinstance(e, PatchRead)).accepted


def test_equal_patch_reinstalls_on_sming_61_only():
    data = pack(b"\xe9firmware", 5)
    assert PackageParser(5, True, "sming-6.1").feed(data)[0].accepted is True
    assert PackageParser(5, True, "reference").feed(data)[0].accepted is False


def test_decoder_selects_the_rom_by_the_low_20_bits(demo_key):
    data = (VECTORS / "signed.ota").read_bytes()
    keys = DeviceKeys.of(demo_key)
    # rom0 at 0x2000, rom1 at 0x108000: a slot at 0x102000 matches rom0 (0x2000 & 0xFFFFF)
    for target, selected in ((0x2000, 0), (0x102000, 0), (0x108000, 1), (0x8000, 1)):
        decoder = OtaDecoder(target_address=target, slot_size=0xF8000, verify_key=keys.verify)
        events = [e for chunk in iter_chunks(data, 333) for e in decoder.feed(chunk)]
        decoder.end_of_input()
        assert any(isinstance(e, Verified) for e in events)
        assert decoder.selected_rom == selected


def test_payload_taken_past_the_version_counts_as_fed_payload():
    """A device hands payload on itself once the version is accepted (no event per chunk); the count matches."""
    data = encode_patch(300, True) + bytes(range(200))
    fed, taken = PackageParser(5, True, "reference"), PackageParser(5, True, "reference")
    with pytest.raises(UsageError, match="not read"):
        taken.take_payload(10)
    fed.feed(data[:50]), fed.feed(data[50:])
    events = taken.feed(data[:50])
    assert isinstance(events[0], PatchRead) and taken.streaming_payload
    taken.take_payload(len(data) - 50)
    assert taken.end_of_input() == fed.end_of_input()
    assert not taken.streaming_payload  # ended
    skipped = PackageParser(400, True, "reference")
    skipped.feed(data[:10])
    assert not skipped.streaming_payload  # a rejected version streams nothing
    with pytest.raises(UsageError):
        skipped.take_payload(10)
