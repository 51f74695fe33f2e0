"""MQTT wire parsing (otalib.mqtt.wire): remaining length, the PUBLISH header split at every byte,
the link's frame tracker on top of it; the one HOST:PORT parser; paho's internals still there."""

from __future__ import annotations

import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from otalib.errors import UsageError
from otalib.mqtt import paho_compat
from otalib.mqtt.wire import (
    MAX_REMAINING_LENGTH,
    MalformedPacket,
    PublishHeader,
    connect_level,
    decode_varint,
    encode_varint,
    parse_fixed_header,
    parse_publish_header,
)
from otalib.net.address import parse_hostport
from otalib.net.link import MqttFrameTracker

BOUNDARIES = [(0, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (2097151, 3), (2097152, 4), (268435455, 4)]


@pytest.mark.parametrize(("value", "size"), BOUNDARIES)
def test_remaining_length_round_trip_at_the_boundaries(value: int, size: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == size
    paho_encoder = mqtt.Client(CallbackAPIVersion.VERSION2)._pack_remaining_length
    assert encoded == bytes(paho_encoder(bytearray(), value))  # the same bytes as paho writes
    assert decode_varint(b"\x30" + encoded + b"tail", 1) == (value, size)
    for cut in range(size):  # every strict prefix asks for more
        assert decode_varint(encoded[:cut]) is None


def test_remaining_length_out_of_range_and_malformed() -> None:
    with pytest.raises(ValueError):
        encode_varint(MAX_REMAINING_LENGTH + 1)
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(MalformedPacket):
        decode_varint(b"\xff\xff\xff\xff\x01")


def publish(topic: bytes, payload: bytes, *, qos: int = 0, mqtt5: bool = False, props: bytes = b"") -> bytes:
    var = struct.pack(">H", len(topic)) + topic + (b"\x12\x34" if qos else b"")
    if mqtt5:
        var += encode_varint(len(props)) + props
    body = var + payload
    return bytes([0x30 | qos << 1]) + encode_varint(len(body)) + body


CASES = [
    {"qos": 0, "mqtt5": False},
    {"qos": 1, "mqtt5": False},
    {"qos": 2, "mqtt5": True},
    {"qos": 0, "mqtt5": True, "props": b"\x01\x01" + b"\x26" + b"\x00\x01k\x00\x01v" * 30},  # > 127: 2-byte length
]


@pytest.mark.parametrize("case", CASES)
def test_publish_header_split_at_every_byte(case: dict) -> None:
    topic, payload = b"a/test/u/4.3", b"\xe9payload"
    packet = publish(topic, payload, **case)
    fixed = parse_fixed_header(packet)
    assert fixed is not None and fixed.total == len(packet)
    body = packet[fixed.size :]
    header_size = len(body) - len(payload)
    whole = parse_publish_header(body, case["qos"], mqtt5=case["mqtt5"], remaining=fixed.remaining)
    assert whole == PublishHeader(topic, 0x1234 if case["qos"] else None, header_size)
    for cut in range(header_size):
        assert parse_publish_header(body[:cut], case["qos"], mqtt5=case["mqtt5"], remaining=fixed.remaining) is None
    for cut in range(len(packet) + 1):  # the frame tracker, two reads split anywhere
        tracker = MqttFrameTracker(5 if case["mqtt5"] else 4)
        tracker.feed(b"\x20\x02\x00\x00" + packet[:cut])  # a CONNACK first
        tracker.feed(packet[cut:] + b"\xd0\x00")  # then a PINGRESP
        assert tracker.publishes == [(4, 4 + fixed.size + header_size, len(payload))]
        assert tracker.pos == 4 + len(packet) + 2


def test_publish_header_that_cannot_fit_is_malformed_not_awaited() -> None:
    with pytest.raises(MalformedPacket):
        parse_publish_header(b"\x00\x20ab", 0, mqtt5=False, remaining=10)  # 34-byte topic in 10 bytes
    with pytest.raises(MalformedPacket):
        parse_publish_header(b"\x00\x01a\x80", 0, mqtt5=True, remaining=4)  # property length runs past the end
    tracker = MqttFrameTracker(4)
    tracker.feed(b"\x30\x03\x00\x20a" + publish(b"t", b"x"))  # the bad one is skipped, the next one found
    assert tracker.publishes == [(5, 5 + 2 + 3, 1)]
    tracker.feed(b"\x30\xff\xff\xff\xff\x01" + publish(b"t", b"x"))  # framing lost: nothing more is recorded
    assert tracker.lost and len(tracker.publishes) == 1


def test_connect_level() -> None:
    connect = b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00\x03abc"
    assert connect_level(connect) == 5
    assert connect_level(connect.replace(b"\x05\x02", b"\x04\x02")) == 4
    assert connect_level(connect[:7]) is None
    assert connect_level(b"\x30\x00") is None
    assert connect_level(b"\x10\xff\xff\xff\xff\xff") is None


def test_hostport() -> None:
    assert parse_hostport("broker:1883") == ("broker", 1883)
    assert parse_hostport("[::1]:8883") == ("::1", 8883)
    assert parse_hostport("1883") == ("127.0.0.1", 1883)
    assert parse_hostport(":0") == ("127.0.0.1", 0)
    assert parse_hostport("h:65535", None, port_zero=False) == ("h", 65535)
    for bad, kwargs in [
        ("host:x", {}),
        ("host:", {}),
        ("host:+1", {}),
        ("host: 1", {}),
        ("host:65536", {}),
        ("1883", {"default_host": None}),
        ("host:0", {"port_zero": False}),
    ]:
        with pytest.raises(UsageError, match="--link"):
            parse_hostport(bad, **kwargs, what="--link")


def test_the_paho_internals_otalab_uses_are_there() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    assert paho_compat.missing_internals(client) == []
    assert paho_compat.protocol(client) == mqtt.MQTTv311
    assert paho_compat.socket_of(client) is None and paho_compat.network_thread(client) is None
