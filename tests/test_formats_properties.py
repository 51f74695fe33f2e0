"""Property tests: round trips, chunking independence, tamper rejection, robustness to garbage."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otalib.errors import DeviceError, InputError
from otalib.formats.ota import (
    HEADER,
    ROM_HEADER,
    DigestRead,
    OtaDecoder,
    OtaDone,
    OtaHeader,
    Rom,
    RomData,
    RomEnd,
    RomStart,
    Verified,
    build_ota,
    build_plain,
)
from otalib.formats.package import PackageParser, PatchRead, PayloadData, pack
from otalib.formats.secretstream import HEADER_BYTES as ENC_HEADER_BYTES
from otalib.formats.secretstream import ContainerChunk, ContainerHeader
from otalib.formats.version import decode_patch, encode_patch
from otalib.keys import load_key

VECTORS = Path(__file__).parent / "vectors"
KEY = load_key(VECTORS / "demo.key")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

roms_st = st.lists(
    st.builds(Rom, st.integers(0, 2**32 - 1), st.binary(min_size=0, max_size=3000)), min_size=1, max_size=3
)
modes_st = st.sampled_from([(False, False), (True, False), (False, True), (True, True)])


def decode_all(data: bytes, cuts: list[int] | None = None, **options) -> list:
    """Feed ``data`` cut at ``cuts``; merge ROM data so chunkings compare equal."""
    decoder = OtaDecoder(verify_key=KEY.verify_key, decrypt_key=KEY.decrypt_key, **options)
    bounds = sorted({0, len(data), *(c for c in (cuts or []) if 0 < c < len(data))})
    events = []
    for start, end in itertools.pairwise(bounds):
        events += decoder.feed(data[start:end])
    decoder.end_of_input()
    merged: list = []
    for event in events:
        if isinstance(event, RomData):
            if merged and isinstance(merged[-1], RomData) and merged[-1].index == event.index:
                last = merged.pop()
                event = RomData(last.index, last.offset, last.data + event.data, last.selected)
            elif not event.data:
                continue
        merged.append(event)
    return merged


@SETTINGS
@given(roms=roms_st, mode=modes_st, cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_event_offsets_point_at_their_bytes(roms, mode, cuts):
    """Each header, ROM, signature and container chunk is where its event says, however the file is cut."""
    signed, encrypted = mode
    data = build_ota(roms, KEY, signed=signed, encrypted=encrypted, timestamp=7)
    events = decode_all(data, cuts, frames=True)
    plain = build_plain(roms, KEY, signed=signed, timestamp=7)  # deterministic: the decrypted file
    header = next(e for e in events if isinstance(e, OtaHeader))
    assert (header.offset, header.length, header.reserved) == (0, HEADER.size, plain[13:16])
    for event in events:
        if isinstance(event, RomStart):
            assert plain[event.offset : event.data_offset] == ROM_HEADER.pack(event.address, event.size)
            assert plain[event.data_offset : event.data_offset + event.size] == roms[event.index].data
        elif isinstance(event, DigestRead):
            assert event.offset + event.length == len(plain)
            assert plain[event.offset :] == event.digest
    frames = [e for e in events if isinstance(e, (ContainerHeader, ContainerChunk))]
    if not encrypted:
        assert not frames
        return
    assert (frames[0].offset, frames[0].length) == (0, ENC_HEADER_BYTES)
    end = ENC_HEADER_BYTES
    for index, chunk in enumerate(frames[1:]):
        assert (chunk.index, chunk.offset) == (index, end)
        assert int.from_bytes(data[chunk.offset : chunk.cipher_offset], "little") + 1 == chunk.cipher_length
        end = chunk.cipher_offset + chunk.cipher_length
    assert end == len(data)


@SETTINGS
@given(roms=roms_st, mode=modes_st, timestamp=st.integers(0, 2**63))
def test_build_then_decode_round_trips(roms, mode, timestamp):
    signed, encrypted = mode
    data = build_ota(roms, KEY, signed=signed, encrypted=encrypted, timestamp=timestamp)
    events = decode_all(data, frames=True)
    header = next(e for e in events if isinstance(e, OtaHeader))
    assert header == OtaHeader(signed, timestamp, len(roms), encrypted)
    assert not encrypted or isinstance(events[0], ContainerHeader)
    starts = [e for e in events if isinstance(e, RomStart)]
    assert [(s.address, s.size) for s in starts] == [(r.address, len(r.data)) for r in roms]
    contents = {e.index: e.data for e in events if isinstance(e, RomData)}
    assert [contents.get(i, b"") for i in range(len(roms))] == [r.data for r in roms]
    assert isinstance(events[-2], Verified) and isinstance(events[-1], OtaDone)


@SETTINGS
@given(mode=modes_st, data=st.data())
def test_any_chunking_gives_the_same_events(mode, data):
    roms = [Rom(0x2000, bytes(range(256)) * 9), Rom(0x108000, b"\xe9" * 700)]
    file = build_ota(roms, KEY, signed=mode[0], encrypted=mode[1], timestamp=1)
    cuts = data.draw(st.lists(st.integers(1, len(file) - 1), max_size=40))
    assert decode_all(file, cuts, frames=True) == decode_all(file, frames=True)


@pytest.mark.parametrize("mode", [(True, False), (False, True), (True, True), (False, False)])
def test_one_byte_chunks_give_the_same_events(mode):
    file = build_ota([Rom(0x8000, b"\xe9abc" * 300)], KEY, signed=mode[0], encrypted=mode[1], timestamp=7)
    whole = decode_all(file, frames=True)
    assert decode_all(file, list(range(1, len(file))), frames=True) == whole
    assert any(isinstance(e, DigestRead) for e in whole)
    assert mode[1] == any(isinstance(e, ContainerChunk) for e in whole)  # frames, with their offsets


@SETTINGS
@given(mode=st.sampled_from([(True, False), (False, True), (True, True)]), data=st.data())
def test_any_flipped_byte_in_a_protected_file_is_rejected(mode, data):
    file = bytearray(build_ota([Rom(0x2000, b"\xe9" + bytes(1500))], KEY, signed=mode[0], encrypted=mode[1]))
    index = data.draw(st.integers(0, len(file) - 1))
    file[index] ^= data.draw(st.integers(1, 255))
    decoder = OtaDecoder(verify_key=KEY.verify_key, decrypt_key=KEY.decrypt_key, target_address=0x2000)
    verified = False
    with pytest.raises(DeviceError):
        for event in decoder.feed(bytes(file)):
            verified |= isinstance(event, Verified)
        decoder.end_of_input()
    assert not verified


@SETTINGS
@given(garbage=st.binary(max_size=400), encrypted=st.sampled_from([None, True, False]))
def test_random_bytes_raise_only_documented_errors(garbage, encrypted):
    decoder = OtaDecoder(verify_key=KEY.verify_key, decrypt_key=KEY.decrypt_key, encrypted=encrypted)
    try:
        decoder.feed(garbage)
        decoder.end_of_input()
    except DeviceError:
        pass


@SETTINGS
@given(garbage=st.binary(max_size=64), varint=st.booleans())
def test_random_package_prefixes_raise_only_input_errors(garbage, varint):
    with contextlib.suppress(InputError):
        decode_patch(garbage, varint)


@SETTINGS
@given(patch=st.integers(0, 2**64), varint=st.booleans(), payload=st.binary(min_size=1, max_size=50), data=st.data())
def test_package_round_trip_with_any_chunking(patch, varint, payload, data):
    if not varint:
        patch %= 256
    package = pack(payload, patch, varint)
    parser = PackageParser(None, varint)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(package)), max_size=10))))
    events = []
    start = 0
    for cut in [*cuts, len(package)]:
        events += parser.feed(package[start:cut])
        start = cut
    end = parser.end_of_input()
    read = [e for e in events if isinstance(e, PatchRead)]
    assert read[0].patch == patch and read[0].version_bytes == len(encode_patch(patch, varint))
    assert b"".join(e.data for e in events if isinstance(e, PayloadData)) == payload
    assert end.payload_bytes == len(payload)


def _two_faults(case: str) -> tuple[bytes, dict]:
    """A file with TWO faults and the decoder options of the device that reads it (see the table below)."""
    good = dict(timestamp=1000, signed=True)
    rom = Rom(0x8000, b"\xe9" * 100)
    if case == "format+downgrade":  # a signed file on an unsigned-only build, and older than the firmware
        return build_ota([rom], KEY, **good), dict(expect_signed=False, current_timestamp=2000)
    if case == "downgrade+too-large":
        return build_ota([rom], KEY, **good), dict(current_timestamp=2000, target_address=0x8000, slot_size=50)
    if case == "too-large+signature":
        file = bytearray(build_ota([rom], KEY, **good))
        file[-1] ^= 1
        return bytes(file), dict(target_address=0x8000, slot_size=50)
    if case == "signature+no-rom":
        file = bytearray(build_ota([rom], KEY, **good))
        file[-1] ^= 1
        return bytes(file), dict(target_address=0x20000, slot_size=0xF8000)
    if case == "no-rom+trailing":
        return build_ota([rom], KEY, **good) + b"\x00", dict(target_address=0x20000, slot_size=0xF8000)
    raise AssertionError(case)


#: Sming's order of checks (protocol.md, "What the device checks, in order"): each file has two
#: faults, and the device must report the one it checks first.
@pytest.mark.parametrize(
    ("case", "first"),
    [
        ("format+downgrade", "InvalidFormat"),
        ("downgrade+too-large", "DowngradeNotAllowed"),
        ("too-large+signature", "RomTooLarge"),
        ("signature+no-rom", "VerificationFailed"),
        ("no-rom+trailing", "NoRomFound"),
    ],
)
@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "bytewise"])
def test_device_checks_in_order(case, first, chunk):
    file, options = _two_faults(case)
    decoder = OtaDecoder(verify_key=KEY.verify_key, **options)
    pieces = [file] if chunk is None else [file[i : i + chunk] for i in range(len(file))]
    with pytest.raises(DeviceError) as err:
        for piece in pieces:
            decoder.feed(piece)
        decoder.end_of_input()
    assert err.value.code.value == first


def test_each_check_alone():
    good = build_ota([Rom(0x8000, b"\xe9" * 100)], KEY, signed=True, timestamp=1000)
    with pytest.raises(DeviceError) as err:
        list(OtaDecoder(verify_key=KEY.verify_key).feed(good + b"\x00"))
    assert err.value.code.value == "UnsupportedData"
    decoder = OtaDecoder(verify_key=KEY.verify_key)
    decoder.feed(good[:-1])
    with pytest.raises(DeviceError) as err:
        decoder.end_of_input()
    assert err.value.code.value == "InvalidFormat" and "truncated" in err.value.detail
    with pytest.raises(DeviceError) as again:  # errors are sticky
        decoder.feed(b"")
    assert again.value is err.value


def test_data_after_the_final_encrypted_chunk_is_invalid_format():
    file = build_ota([Rom(0x8000, b"\xe9" * 10)], KEY, encrypted=True)
    with pytest.raises(DeviceError) as err:
        list(OtaDecoder(decrypt_key=KEY.decrypt_key).feed(file + b"\x01\x02"))
    assert err.value.code.value == "InvalidFormat"


def test_failed_verification_still_reports_the_written_rom():
    file = bytearray(build_ota([Rom(0x8000, b"\xe9" * 5000)], KEY, signed=True))
    file[-1] ^= 1
    decoder = OtaDecoder(verify_key=KEY.verify_key, target_address=0x8000, slot_size=0xF8000)
    events = []
    with pytest.raises(DeviceError) as err:
        for event in decoder.feed(bytes(file)):  # the events before the error come first, then the error
            events.append(event)
    assert err.value.code.value == "VerificationFailed"
    assert any(isinstance(e, RomEnd) and e.selected for e in events)
    assert isinstance(events[-1], DigestRead) and events[-1].digest == bytes(file[-64:])
    assert decoder.selected_rom == 0
