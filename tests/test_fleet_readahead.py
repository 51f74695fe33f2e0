"""Untimed fleet boards read their socket ahead (64 KiB a recv) yet hand the device 1460-byte segments."""

from __future__ import annotations

import re

import paho.mqtt.client as mqtt
import pytest

from otalib.errors import LabError
from otalib.fleet import FleetSession, FleetSpec
from otalib.fleet.board import FleetClient

SEGMENT = re.compile(r"TCP \S+ received: (\d+) bytes")


def test_untimed_boards_read_ahead_and_keep_the_devices_segments(broker, monkeypatch):
    owners: dict[str, int] = {"fleet": 0}
    recv = mqtt.Client._sock_recv

    def counted(self, bufsize):  # the system calls of the fleet's boards
        if isinstance(self, FleetClient):
            owners["fleet"] += 1
        return recv(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counted)
    spec = {"name": "ahead", "timeout_s": 60, "update": {"size": "96KiB", "mode": "signed"}, "groups": [{"count": 3}]}
    session = FleetSession(FleetSpec.from_dict(spec), broker=broker.url, keep_consoles=("g1-0001",), processes=1)
    result = session.run()
    assert set(result.boards["outcome"]) == {"updated"}
    package = next(iter(session.packages.values())).size
    console = result.consoles["g1-0001"]
    sizes = [int(n) for n in SEGMENT.findall(console.split("subscription '")[1])]
    # one console line per TCP segment of at most 1460 bytes, as a device's lwIP hands them over
    assert max(sizes) == 1460 and all(0 < n <= 1460 for n in sizes)
    assert sum(sizes) >= package and len(sizes) >= package // 1460
    # far fewer recv calls than segments: 3 boards, ~70 segments each
    assert owners["fleet"] < 3 * len(sizes) / 4


def test_shard_processes_give_the_in_process_results(broker):
    spec = {
        "name": "procs",
        "timeout_s": 60,
        "update": {"size": "24KiB", "mode": "signed"},
        "groups": [{"name": "ok", "count": 4}, {"name": "bad", "count": 2, "fault": "corrupt@0.5"}],
    }
    results = {}
    for processes in (1, 2):
        session = FleetSession(FleetSpec.from_dict(spec), broker=broker.url, processes=processes)
        result = session.run()
        assert result.complete
        results[processes] = result.boards.sort_values("board").set_index("board")
    threads, procs = results[1], results[2]
    assert set(threads["shard"]) == {0} and set(procs["shard"]) == {0, 1}  # two shards, one per process
    assert list(procs["outcome"]) == list(threads["outcome"]) == ["rejected"] * 2 + ["updated"] * 4
    assert (procs["bytes_received"] == threads["bytes_received"]).all()


def test_bad_process_counts_are_refused():
    spec = FleetSpec.from_dict({"name": "p", "update": {"size": "8KiB"}, "groups": [{"count": 2}]})
    with pytest.raises(LabError, match="bad processes 0"):
        FleetSession(spec, processes=0)
    with pytest.raises(LabError, match="pty"):
        FleetSession(spec, processes=2, pty_board="g1-0000")


def test_a_read_ahead_client_serves_what_its_buffer_holds_without_a_new_socket_event():
    """CONNACK and a PUBLISH in one TCP write, then silence: the PUBLISH sits in the client's
    buffer after the CONNACK is handled; the socket will not turn readable again."""
    import socket
    import threading
    import time

    from paho.mqtt.enums import CallbackAPIVersion

    from otalib.fleet.board import _ReadAheadClient
    from otalib.fleet.loop import FleetLoop

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    payload = bytes(range(256)) * 8
    topic = b"a/t/u/4.3"
    body = len(topic).to_bytes(2, "big") + topic + payload
    publish = bytes([0x31, (len(body) & 0x7F) | 0x80, len(body) >> 7]) + body
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)  # the CONNECT
            conn.sendall(b"\x20\x02\x00\x00" + publish)
            done.wait(15)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    class Client(_ReadAheadClient):
        read_ahead = 64 * 1024

    got: list[bytes] = []
    client = Client(CallbackAPIVersion.VERSION2, client_id="ahead", protocol=mqtt.MQTTv311)
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    loop = FleetLoop()
    loop.attach(client)
    try:
        client.connect("127.0.0.1", port, 60)
        assert loop.run(lambda: bool(got), time.monotonic() + 10)
    finally:
        done.set()
        loop.close()
        server.close()
        thread.join(5)
    assert got == [payload]
