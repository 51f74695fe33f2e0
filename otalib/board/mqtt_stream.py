"""A paho client that streams PUBLISH payloads in chunks instead of buffering whole messages.

paho reads a packet's body in ``Client._packet_read`` with
``self._in_packet["packet"] += self._sock_recv(to_process)`` and only then calls
``_handle_publish``, which decodes the complete packet and hands one ``bytes`` payload to
``on_message``: a 16 MB firmware would sit in memory (twice). :class:`StreamingClient`
keeps paho for everything else (connect, TLS, auth, subscribe, keepalive, reconnect) and
changes two hooks:

- ``_sock_recv``: when the body of a PUBLISH starts, the ``packet`` buffer is replaced by a
  :class:`_PublishStream` whose ``+=`` parses the variable header (topic, packet id,
  v5 properties) and passes every payload byte to the :class:`MessageSink` as it arrives
  (reads are capped at :data:`RECV_CHUNK` bytes);
- ``_handle_publish``: for a streamed packet, ends the message and sends the QoS
  acknowledgement paho would have sent.

A connection lost mid-message calls ``message_abort`` (from :meth:`StreamingClient.abort_stream`,
which the owner calls in ``on_disconnect``), as the device drops its stream.
"""

from __future__ import annotations

from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTMessage

#: Most bytes read from the socket at once (bounds the memory of one read).
RECV_CHUNK = 64 * 1024
_PUBLISH = 0x30


class MessageSink(Protocol):
    """Receives one message at a time, in pieces."""

    def message_start(self, topic: str, length: int, retain: bool, qos: int) -> None: ...

    def message_data(self, chunk: bytes) -> None: ...

    def message_end(self) -> None: ...

    def message_abort(self) -> None: ...


class _PublishStream:
    """Stands in for paho's packet buffer during one PUBLISH body (``+=`` streams to the sink)."""

    def __init__(self, client: StreamingClient, command: int, remaining: int) -> None:
        self.client = client
        self.qos = (command >> 1) & 0x03
        self.retain = bool(command & 0x01)
        self.remaining = remaining
        self.consumed = 0
        self.header = bytearray()
        self.header_len: int | None = None
        self.topic = ""
        self.mid = 0
        self.started = False

    def __iadd__(self, data: bytes) -> _PublishStream:
        self.consumed += len(data)
        if self.header_len is None:
            self.header += data
            if not self._parse_header():
                return self
            payload = bytes(self.header[self.header_len :])
            self.header = bytearray()
            self.started = True
            self.client.stream_sink.message_start(self.topic, self.remaining - self.header_len, self.retain, self.qos)
            if payload:
                self.client.stream_sink.message_data(payload)
            return self
        if data:
            self.client.stream_sink.message_data(bytes(data))
        return self

    def __len__(self) -> int:
        return self.consumed

    def _parse_header(self) -> bool:
        buf = self.header
        if len(buf) < 2:
            return False
        topic_len = int.from_bytes(buf[:2], "big")
        pos = 2 + topic_len
        if self.qos:
            pos += 2
        if len(buf) < pos:
            return False
        if self.client._protocol == mqtt.MQTTv5:
            length, shift, used = 0, 0, 0
            while True:
                if len(buf) < pos + used + 1:
                    return False
                byte = buf[pos + used]
                length |= (byte & 0x7F) << shift
                used += 1
                shift += 7
                if not byte & 0x80:
                    break
            pos += used + length
            if len(buf) < pos:
                return False
        self.topic = bytes(buf[2 : 2 + topic_len]).decode("utf-8", errors="replace")
        if self.qos:
            self.mid = int.from_bytes(buf[2 + topic_len : 4 + topic_len], "big")
        self.header_len = pos
        return True


class StreamingClient(mqtt.Client):
    """paho ``Client`` whose PUBLISH payloads go to ``stream_sink`` chunk by chunk."""

    def __init__(self, *args, stream_sink: MessageSink, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stream_sink = stream_sink
        self._stream: _PublishStream | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = self._in_packet
        if (
            packet["have_remaining"]
            and (packet["command"] & 0xF0) == _PUBLISH
            and not isinstance(packet["packet"], _PublishStream)
        ):
            self._stream = _PublishStream(self, packet["command"], packet["remaining_length"])
            packet["packet"] = self._stream  # type: ignore[typeddict-item]
        return super()._sock_recv(min(bufsize, RECV_CHUNK))

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        stream = self._in_packet["packet"]
        if not isinstance(stream, _PublishStream):
            return super()._handle_publish()
        self._stream = None
        if not stream.started:
            return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        self.stream_sink.message_end()
        if stream.qos == 1:
            return self._send_puback(stream.mid)
        if stream.qos == 2:
            rc = self._send_pubrec(stream.mid)
            message = MQTTMessage(mid=stream.mid, topic=stream.topic.encode())
            message.qos = 2
            message.state = mqtt.mqtt_ms_wait_for_pubrel
            with self._in_message_mutex:
                self._in_messages[stream.mid] = message
            return rc
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def abort_stream(self) -> bool:
        """Drop a message cut by a lost connection; True if one was in progress."""
        stream, self._stream = self._stream, None
        if stream is not None and stream.started:
            self.stream_sink.message_abort()
            return True
        return False
