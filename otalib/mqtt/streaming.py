"""A paho client that streams PUBLISH payloads in chunks instead of buffering whole messages.

paho reads a packet's body in ``Client._packet_read`` with
``self._in_packet["packet"] += self._sock_recv(to_process)`` and only then calls
``_handle_publish``, which decodes the complete packet and hands one ``bytes`` payload to
``on_message``: a 16 MB firmware would sit in memory (twice). :class:`StreamingClient`
keeps paho for everything else (connect, TLS, auth, subscribe, keepalive, reconnect) and
changes two hooks (paho internals, listed in :mod:`otalib.mqtt.paho_compat`):

- ``_sock_recv``: when the body of a PUBLISH starts, the ``packet`` buffer is replaced by a
  :class:`_PublishStream` whose ``+=`` parses the variable header (topic, packet id,
  v5 properties) and passes every payload byte to the :class:`MessageSink` as it arrives;
  reads are cut into the segments a device's TCP stack hands over (at most ``tcp_mss``
  bytes, counted from the start of each MQTT packet), and ``on_segment(size)`` is called
  once a segment's data has been processed (after the packet's handling for its last one);
- ``_handle_publish``: for a streamed packet, ends the message and sends the QoS
  acknowledgement paho would have sent.

- ``_create_socket_connection``: with ``rcvbuf``, the socket's receive buffer (SO_RCVBUF) is set
  before it connects, to the device's TCP window, and its MSS (TCP_MAXSEG) to ``tcp_mss``: a board
  that reads slowly (a device timing model, :mod:`otalib.board.sim.timing`) then holds the sender
  back as a device's stack does (on loopback, without the MSS, the sender's 64 KiB segments grow its
  send buffer enough to take a whole update at once).

With ``bulk``, a read past the first segment of a PUBLISH is not cut: the sink's
``message_segments`` gets the payload of all the segments it completes at once, with each one's
size, so a receiver whose work per segment prints nothing can do it in one step (the fleet's boards:
:meth:`~otalib.board.sim.device.Device.on_segments` gives what the segment-by-segment calls give).

A connection lost mid-message calls ``message_abort`` (from :meth:`StreamingClient.abort_stream`,
which the owner calls in ``on_disconnect``), as the device drops its stream.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Protocol

import paho.mqtt.client as mqtt

from otalib.mqtt import paho_compat
from otalib.mqtt.wire import (
    MalformedPacket,
    PacketType,
    packet_type,
    parse_publish_header,
    publish_qos,
    publish_retain,
)

#: Most bytes read from the socket at once (bounds the memory of one read).
RECV_CHUNK = 64 * 1024
#: TCP maximum segment size of an ESP8266's lwIP (the Host emulator's recordings show 1390).
ESP_TCP_MSS = 1460


class MessageSink(Protocol):
    """Receives one message at a time, in pieces."""

    def message_start(self, topic: str, length: int, retain: bool, qos: int) -> None: ...

    def message_data(self, chunk: bytes) -> None: ...

    def message_end(self) -> None: ...

    def message_abort(self) -> None: ...


class SegmentSink(MessageSink, Protocol):
    """A sink that takes several TCP segments in one call (a :class:`StreamingClient` with ``bulk``)."""

    def message_segments(self, data: bytes, sizes: list[int], wires: list[int]) -> None:
        """``data``: the payload of consecutive segments, ``sizes[i]`` bytes of it the i-th one's;
        ``wires[i]``: the i-th segment's size on the wire, for those reported now (the same as
        ``message_data`` of each one's bytes, each followed by ``on_segment(wires[i])`` while there is one:
        the packet's last segment is reported after the packet's handling, as without ``bulk``)."""
        ...


class _PublishStream:
    """Stands in for paho's packet buffer during one PUBLISH body (``+=`` streams to the sink)."""

    def __init__(self, client: StreamingClient, command: int, remaining: int) -> None:
        self.client = client
        self.qos = publish_qos(command)
        self.retain = publish_retain(command)
        self.remaining = remaining
        self.consumed = 0
        self.header = bytearray()
        self.header_len: int | None = None
        self.pending = bytearray()  # payload bytes of the current segment (at most one segment)
        self.topic = ""
        self.mid = 0
        self.started = False

    def __iadd__(self, data: bytes) -> _PublishStream:
        self.consumed += len(data)
        client = self.client
        if client.bulk and self.started:
            self._take_segments(data)
            return self
        pending = self.pending
        if self.header_len is None:
            self.header += data
            if not self._parse_header():
                client._segment_maybe_full()
                return self
            pending += self.header[self.header_len :]
            self.header = bytearray()
            self.started = True
            client.stream_sink.message_start(self.topic, self.remaining - self.header_len, self.retain, self.qos)
            data = b""
        ended = self.consumed >= self.remaining
        if ended or client._segment >= client.tcp_mss:  # a whole segment: the device gets it in one piece
            if pending:
                pending += data
                chunk = bytes(pending)
                pending.clear()
            else:  # the segment came in one read (the usual case): no copy
                chunk = data
            if chunk:
                client.stream_sink.message_data(chunk)
            if not ended:  # the packet's last segment is reported after the packet's handling
                client._segment_done()
        elif data:
            pending += data
        return self

    def _take_segments(self, data: bytes) -> None:
        """``bulk``: ``data`` (any length) cut into the segments it completes, handed over in one call."""
        client = self.client
        mss, n, pending = client.tcp_mss, len(data), self.pending
        room = mss - client._segment  # bytes that complete the current segment
        ended = self.consumed >= self.remaining
        if n < room and not ended:
            pending += data
            client._segment += n
            return
        if n < room:  # the packet ends inside the current segment
            sizes, wires, rest = [len(pending) + n], [], 0
            client._segment += n
        else:
            full, rest = divmod(n - room, mss)
            sizes, wires = [len(pending) + room] + [mss] * full, [mss] * (full + 1)
            if ended and rest:
                sizes.append(rest)
            elif ended:  # the packet ends with a whole segment: reported after the packet's handling
                wires.pop()
            client._segment = rest or (mss if ended else 0)
        cut = n if ended else n - rest
        if pending:
            pending += data[:cut]
            chunk = bytes(pending)
            pending.clear()
        else:
            chunk = data if cut == n else data[:cut]
        if not ended and rest:
            pending += data[cut:]
        client.stream_sink.message_segments(chunk, sizes, wires)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self.consumed

    def _parse_header(self) -> bool:
        try:
            header = parse_publish_header(
                self.header, self.qos, mqtt5=paho_compat.protocol(self.client) == mqtt.MQTTv5, remaining=self.remaining
            )
        except MalformedPacket:
            return False  # never starts: the packet ends as a protocol error
        if header is None:
            return False
        self.topic = header.topic.decode("utf-8", errors="replace")
        self.mid = header.packet_id or 0
        self.header_len = header.size
        return True


class StreamingClient(mqtt.Client):
    """paho ``Client`` whose PUBLISH payloads go to ``stream_sink`` segment by segment.

    ``tcp_mss``: the largest segment handed over at once. ``on_segment(size)``, if set, is
    called (on paho's thread) after each segment's data was processed. ``rcvbuf``: the socket's
    receive buffer in bytes (None: the system's), e.g. the device's TCP window. ``bulk``: past a
    PUBLISH's first segment, reads are not cut into segments: ``stream_sink`` (a :class:`SegmentSink`)
    gets the segments each read completes in one ``message_segments`` call.
    """

    def __init__(
        self,
        *args,
        stream_sink: MessageSink,
        tcp_mss: int = ESP_TCP_MSS,
        on_segment: Callable[[int], None] | None = None,
        rcvbuf: int | None = None,
        bulk: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not 0 < tcp_mss <= RECV_CHUNK:
            raise ValueError(f"tcp_mss must be in 1..{RECV_CHUNK}")
        self.stream_sink = stream_sink
        self.tcp_mss = tcp_mss
        self.on_segment = on_segment
        self.rcvbuf = rcvbuf
        if bulk and not callable(getattr(stream_sink, "message_segments", None)):
            raise TypeError("bulk needs a sink with message_segments")
        self.bulk = bulk
        self._stream: _PublishStream | None = None
        self._segment = 0  # bytes of the current segment read so far

    def _create_socket_connection(self) -> socket.socket:
        if self.rcvbuf is None:
            return super()._create_socket_connection()
        host, port, timeout = paho_compat.connect_target(self)
        error: OSError | None = None
        for family, kind, proto, _name, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)  # before connect: the window
                with contextlib.suppress(OSError, AttributeError):  # the MSS the device's stack advertises
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.tcp_mss)
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"cannot resolve {host}")

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = paho_compat.in_packet(self)
        streaming = packet["packet"].__class__ is _PublishStream  # the body of a PUBLISH (the usual case)
        if not streaming:
            if packet["command"] == 0:  # a new packet: a new segment
                self._segment = 0
            elif packet["have_remaining"] and packet_type(packet["command"]) == PacketType.PUBLISH:
                self._stream = _PublishStream(self, packet["command"], packet["remaining_length"])
                packet["packet"] = self._stream  # type: ignore[typeddict-item]
                streaming = True
        if streaming and self.bulk and self._stream is not None and self._stream.started:
            return super()._sock_recv(min(bufsize, RECV_CHUNK))  # the stream cuts it into segments
        data = super()._sock_recv(min(bufsize, self.tcp_mss - self._segment))
        self._segment += len(data)
        if not streaming and self._segment >= self.tcp_mss:
            self._segment_maybe_full()  # a large non-PUBLISH packet: its data is handled at its end
        return data

    def _segment_maybe_full(self) -> None:
        if self._segment >= self.tcp_mss:
            self._segment_done()

    def _segment_done(self) -> None:
        size, self._segment = self._segment, 0
        if size and self.on_segment is not None:
            self.on_segment(size)

    def _packet_handle(self) -> mqtt.MQTTErrorCode:
        rc = super()._packet_handle()
        self._segment_done()  # the packet's last segment, after its handling (e.g. the switch)
        return rc

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        stream = paho_compat.in_packet(self)["packet"]
        if not isinstance(stream, _PublishStream):
            return super()._handle_publish()
        self._stream = None
        if not stream.started:
            return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        self.stream_sink.message_end()
        if stream.qos == 1:
            return paho_compat.send_puback(self, stream.mid)
        if stream.qos == 2:
            return paho_compat.send_pubrec(self, stream.mid, stream.topic.encode())
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def abort_stream(self) -> bool:
        """Drop a message cut by a lost connection; True if one was in progress.

        The bytes of the segment in progress had arrived (as a short segment, on a real
        link that stopped there): the sink gets them before the abort.
        """
        stream, self._stream = self._stream, None
        if stream is not None and stream.started:
            if stream.pending:
                chunk = bytes(stream.pending)
                stream.pending.clear()
                self.stream_sink.message_data(chunk)
            self.stream_sink.message_abort()
            return True
        return False
