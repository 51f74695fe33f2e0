"""The device's TCP segments and MQTT evidence, against a scripted MQTT server (the test decides what goes out when).

- the streaming client hands a message over in the segments a device's TCP stack would
  (at most ``tcp_mss`` bytes, counted from each packet's start), whatever pieces the socket
  returns, each segment reported after its data was processed;
- the virtual board prints ``subscription '…' registered`` when the SUBACK arrives, not before.
"""

from __future__ import annotations

import random
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from otalib.board.sim.build import DeviceBuild
from otalib.board.virtual import VirtualBoard
from otalib.mqtt.streaming import StreamingClient

WAIT = 10.0
TOPIC = "a/test/u/4.3"


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH (retained)."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload
    return b"\x31" + remaining_length(len(body)) + body


class ScriptedServer:
    """One MQTT client connection on 127.0.0.1; the test reads its packets and sends replies."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(WAIT)

    def _read(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            assert chunk, "the client closed the connection"
            data += chunk
        return data

    def read_packet(self) -> tuple[int, bytes]:
        """(packet type, body) of the client's next packet."""
        command = self._read(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return command >> 4, self._read(length)

    def send(self, data: bytes, *, pieces: random.Random | None = None) -> None:
        """Send ``data``; with ``pieces``, in random small writes with pauses (the client reads partial data)."""
        assert self.conn is not None
        if pieces is None:
            self.conn.sendall(data)
            return
        offset = 0
        while offset < len(data):
            size = pieces.choice([1, 7, 300, 999, 1000, 1001, 2500])
            self.conn.sendall(data[offset : offset + size])
            offset += size
            time.sleep(pieces.choice([0, 0, 0.002]))

    def close(self) -> None:
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def connack_then_subscribe(server: ScriptedServer) -> int:
    """Accept, read CONNECT, send CONNACK, read SUBSCRIBE; return its packet id."""
    server.accept()
    kind, _ = server.read_packet()
    assert kind == 1  # CONNECT
    server.send(b"\x20\x02\x00\x00")
    kind, body = server.read_packet()
    assert kind == 8  # SUBSCRIBE
    return int.from_bytes(body[:2], "big")


@pytest.mark.parametrize(
    ("bulk", "size", "pieces"),
    [
        (False, 10_000, 5),
        (True, 10_000, 5),  # small reads: segments completed one at a time or none
        (True, 10_000, None),  # one write: reads of many segments
        (True, 3 * 1000 - 17, None),  # the packet ends with a whole segment (17: its header)
        (True, 500, None),  # the packet ends inside its first segment
    ],
)
def test_message_reaches_the_sink_in_device_segments_whatever_the_socket_returns(server, bulk, size, pieces):
    """Also with ``bulk`` (reads of several segments handed over at once): the same segments, in the same
    order with the same reports, as the data the sink's ``message_segments`` gets, cut by its sizes."""
    mss = 1000
    log: list[tuple[str, int]] = []
    ended = threading.Event()
    bulk_calls: list[int] = []

    class Sink:
        def message_start(self, topic, length, retain, qos):
            log.append(("start", length))

        def message_data(self, chunk):
            log.append(("data", len(chunk)))

        def message_segments(self, data, sizes, wires):
            assert sum(sizes) == len(data) and len(sizes) - 1 <= len(wires) <= len(sizes)
            bulk_calls.append(len(sizes))
            for i, n in enumerate(sizes):
                log.append(("data", n))
                if i < len(wires):
                    log.append(("segment", wires[i]))

        def message_end(self):
            log.append(("end", 0))
            ended.set()

        def message_abort(self):
            log.append(("abort", 0))

    client = StreamingClient(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="seg-test",
        protocol=mqtt.MQTTv311,
        stream_sink=Sink(),
        tcp_mss=mss,
        on_segment=lambda size: log.append(("segment", size)),
        bulk=bulk,
    )
    client.on_connect = lambda c, *_: c.subscribe(TOPIC, 0)
    client.connect_async("127.0.0.1", server.port)
    client.loop_start()
    try:
        mid = connack_then_subscribe(server)
        payload = bytes(random.Random(3).randbytes(size))
        packet = publish_packet(TOPIC, payload)
        suback = b"\x90\x03" + mid.to_bytes(2, "big") + b"\x00"
        server.send(suback + packet, pieces=random.Random(pieces) if pieces is not None else None)
        assert ended.wait(WAIT), f"the message did not end: {log[-5:]}"
        deadline = time.monotonic() + WAIT
        while log[-1][0] != "segment" and time.monotonic() < deadline:
            time.sleep(0.01)  # the packet's last segment is reported just after its handling
    finally:
        client.disconnect()
        client.loop_stop()
    header = len(packet) - len(payload)
    sizes = [min(mss, len(packet) - start) for start in range(0, len(packet), mss)]
    expected: list[tuple[str, int]] = [("segment", 4), ("segment", 5), ("start", len(payload))]
    for i, size in enumerate(sizes):
        expected.append(("data", size - (header if i == 0 else 0)))
        expected += [("end", 0), ("segment", size)] if i == len(sizes) - 1 else [("segment", size)]
    assert log == expected
    if bulk and pieces is None and size > 2 * mss:
        assert max(bulk_calls) > 1  # segments were handed over together


def test_board_prints_the_mqtt_lines_in_the_devices_order_and_reports_the_suback(server, tmp_path):
    """As the sample does (oracle A1): `subscription … registered` when the request is queued, before
    the TCP connection is up; the broker's SUBACK shows only as a received segment (and `board.suback`)."""
    board = VirtualBoard(tmp_path / "flash.bin", f"mqtt://127.0.0.1:{server.port}", DeviceBuild(version="4.3.1"))
    board.start()
    try:
        board.expect("subscribed", WAIT)
        mid = connack_then_subscribe(server)
        assert board.expect("tcp_received", WAIT).fields["length"] == 4  # the CONNACK was handled
        order = [cl.event for cl in board.history() if cl.event]
        wanted = ["connecting", "tcp_connect", "subscribing", "subscribed", "tcp_connected"]
        assert [e for e in order if e in wanted] == wanted
        assert not board.suback.is_set()  # the SUBSCRIBE has been sent, but no SUBACK came
        server.send(b"\x90\x03" + mid.to_bytes(2, "big") + b"\x00")
        assert board.suback.wait(WAIT)
        assert board.expect("tcp_received", WAIT).fields["length"] == 5
    finally:
        board.stop()
