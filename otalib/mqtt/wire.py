"""MQTT wire format, the parts otalab reads itself: remaining length and the PUBLISH header.

Sans-IO, for the link proxy (which follows the framing to find payloads) and the streaming
client (which parses a PUBLISH header as its bytes arrive). MQTT 3.1.1 section 2.2.3 and
3.3.2; MQTT 5 section 1.5.5 (variable byte integer) and 3.3.2.3 (properties).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Largest remaining length (4 bytes of 7 bits each).
MAX_REMAINING_LENGTH = 268_435_455
#: Bytes of the longest variable byte integer.
MAX_VARINT_BYTES = 4
#: MQTT protocol level of MQTT 5 in CONNECT.
MQTT5_LEVEL = 5


class PacketType(enum.IntEnum):
    """The packet types otalab looks for (the high nibble of the first byte)."""

    CONNECT = 1
    PUBLISH = 3


class MalformedPacket(ValueError):
    """The bytes cannot be the packet they claim to be."""


def packet_type(first_byte: int) -> int:
    """The packet type of a fixed header's first byte."""
    return first_byte >> 4


def publish_qos(first_byte: int) -> int:
    """The QoS of a PUBLISH from its first byte."""
    return (first_byte >> 1) & 0x03


def publish_retain(first_byte: int) -> bool:
    """The RETAIN flag of a PUBLISH from its first byte."""
    return bool(first_byte & 0x01)


def encode_varint(value: int) -> bytes:
    """A variable byte integer (the remaining length, an MQTT 5 property length)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_varint(buf: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """The variable byte integer at ``start``: (value, bytes used), or None if more bytes are needed.

    A fifth continuation byte is malformed: :class:`MalformedPacket`.
    """
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if start + i >= len(buf):
            return None
        byte = buf[start + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise MalformedPacket("variable byte integer longer than 4 bytes")


@dataclass(frozen=True)
class FixedHeader:
    """A packet's first byte and remaining length; ``size`` is the fixed header's own length."""

    first_byte: int
    remaining: int
    size: int

    @property
    def type(self) -> int:
        return packet_type(self.first_byte)

    @property
    def total(self) -> int:
        """The whole packet's length."""
        return self.size + self.remaining


def parse_fixed_header(buf: bytes | bytearray, start: int = 0) -> FixedHeader | None:
    """The fixed header at ``start``, or None if more bytes are needed."""
    if start >= len(buf):
        return None
    rl = decode_varint(buf, start + 1)
    if rl is None:
        return None
    return FixedHeader(buf[start], rl[0], 1 + rl[1])


@dataclass(frozen=True)
class PublishHeader:
    """The variable header of a PUBLISH: topic, packet id (QoS 1 and 2) and its length ``size``."""

    topic: bytes
    packet_id: int | None
    size: int


def parse_publish_header(
    buf: bytes | bytearray, qos: int, *, mqtt5: bool, remaining: int | None = None, start: int = 0
) -> PublishHeader | None:
    """The PUBLISH variable header at ``start`` (just after the fixed header), or None if incomplete.

    ``remaining`` is the packet's remaining length: a header that cannot fit in it is
    :class:`MalformedPacket` at once (instead of waiting for bytes of the next packet).
    """
    limit = MAX_REMAINING_LENGTH if remaining is None else remaining
    avail = len(buf) - start

    def need(n: int) -> bool:
        if n > limit:
            raise MalformedPacket(f"PUBLISH header of at least {n} bytes in a packet of {limit}")
        return avail >= n

    if not need(2):
        return None
    topic_len = int.from_bytes(buf[start : start + 2], "big")
    pos = 2 + topic_len + (2 if qos else 0)
    if not need(pos):
        return None
    if mqtt5:
        props = decode_varint(buf, start + pos)
        if props is None:
            need(avail + 1)  # one more byte of the property length must fit
            return None
        pos += props[1] + props[0]
        if not need(pos):
            return None
    topic = bytes(buf[start + 2 : start + 2 + topic_len])
    packet_id = int.from_bytes(buf[start + 2 + topic_len : start + 4 + topic_len], "big") if qos else None
    return PublishHeader(topic, packet_id, pos)


def connect_level(buf: bytes | bytearray) -> int | None:
    """The protocol level of the CONNECT at the start of ``buf`` (None: not a CONNECT, or not known yet)."""
    if not buf or packet_type(buf[0]) != PacketType.CONNECT:
        return None
    try:
        head = parse_fixed_header(buf)
    except MalformedPacket:
        return None
    if head is None:
        return None
    at = head.size
    if len(buf) < at + 2:
        return None
    level_at = at + 2 + int.from_bytes(buf[at : at + 2], "big")
    return buf[level_at] if len(buf) > level_at else None
