"""The fault-injecting link (otalib.net.link): forwarding, rate, latency, cut, corrupt, stall, stop; CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from broker_helpers import Probe, mosquitto_broker  # noqa: F401

from otalib.errors import UsageError
from otalib.net.address import parse_hostport
from otalib.net.link import PROFILES, Fault, LinkProfile, LinkProxy, MqttFrameTracker

WAIT = 10.0
DATA = bytes(range(256)) * 800  # 204,800 bytes
OTALAB = Path(sys.executable).with_name("otalab")


class Server:
    """A TCP server on 127.0.0.1: ``mode`` "send" sends ``data`` then closes; "echo" echoes; "sink" keeps all."""

    def __init__(self, mode: str, data: bytes = DATA) -> None:
        self.mode, self.data = mode, data
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.closed = threading.Event()  # the peer closed or reset the last connection
        self.reset = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._client, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            try:
                if self.mode == "send":
                    conn.settimeout(WAIT)
                    conn.sendall(self.data)
                    return
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    if self.mode == "echo":
                        conn.sendall(chunk)
                    else:
                        self.received.extend(chunk)
            except ConnectionResetError:
                self.reset.set()
            except OSError:
                pass
            finally:
                self.closed.set()

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(WAIT)


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(mode: str, data: bytes = DATA) -> Server:
        made.append(Server(mode, data))
        return made[-1]

    yield make
    for srv in made:
        srv.stop()


@pytest.fixture
def link() -> Iterator[Callable[..., LinkProxy]]:
    made: list[LinkProxy] = []

    def make(port: int, profile: LinkProfile | None = None, fault: Fault | None = None) -> LinkProxy:
        made.append(LinkProxy("127.0.0.1", port, profile, fault).start())
        return made[-1]

    yield make
    for proxy in made:
        proxy.stop()


def connect(proxy: LinkProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def read_all(sock: socket.socket) -> bytes:
    got = bytearray()
    with sock:
        while chunk := sock.recv(65536):
            got.extend(chunk)
    return bytes(got)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got.extend(chunk)
    return bytes(got)


def nothing_arrives(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return False
    except TimeoutError:
        return True
    finally:
        sock.settimeout(WAIT)


# --- values -----------------------------------------------------------------------------------------


def test_profiles_and_fault_validation() -> None:
    assert PROFILES["wifi"].rate_Bps == 50_000 and PROFILES["wifi"].latency_s == pytest.approx(0.02)
    assert PROFILES["lan"].rate_Bps is None
    with pytest.raises(UsageError):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Fault("cut", -1)
    with pytest.raises(UsageError):
        LinkProfile(rate_Bps=0)
    with pytest.raises(UsageError):
        LinkProfile(latency_s=-1)
    assert parse_hostport("broker:1883") == ("broker", 1883)
    assert parse_hostport("1883") == ("127.0.0.1", 1883)
    with pytest.raises(UsageError):
        parse_hostport("host:x")


def mqtt_publish(topic: str, payload: bytes, *, qos: int = 0, level: int = 4, props: bytes = b"") -> bytes:
    var = struct.pack(">H", len(topic)) + topic.encode() + (b"\x00\x01" if qos else b"")
    if level >= 5:
        var += bytes([len(props)]) + props
    body = var + payload
    rl, n = bytearray(), len(body)
    while True:
        byte, n = n & 0x7F, n >> 7
        rl.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | (qos << 1)]) + bytes(rl) + body


@pytest.mark.parametrize("level", [4, 5])
def test_frame_tracker_finds_publish_payloads_byte_by_byte(level: int) -> None:
    connack = b"\x20\x02\x00\x00"
    first = mqtt_publish("a/test/u/4.3", b"P" * 300, level=level, props=b"\x01\x01")
    second = mqtt_publish("a/t", b"Q" * 5, qos=1, level=level)
    stream = connack + first + b"\xd0\x00" + second
    tracker = MqttFrameTracker(level)
    for i in range(len(stream)):  # one byte at a time
        tracker.feed(stream[i : i + 1])
    (s1, p1, n1), (s2, p2, n2) = tracker.publishes
    assert (s1, n1, stream[p1 : p1 + n1]) == (4, 300, b"P" * 300)
    assert (n2, stream[p2 : p2 + n2]) == (5, b"Q" * 5)
    assert s2 == 4 + len(first) + 2
    assert tracker.pos == len(stream)


# --- forwarding -------------------------------------------------------------------------------------


def test_bytes_arrive_intact_both_ways(server, link) -> None:
    down = link(server("send").port)
    assert read_all(connect(down)) == DATA
    echo = link(server("echo").port)
    sock = connect(echo)
    with sock:
        sock.sendall(DATA)
        assert read_exactly(sock, len(DATA)) == DATA
    stats = down.stats
    assert stats["connections"] == 1 and stats["bytes_down"] == len(DATA)
    assert stats["first_byte_t"] <= stats["last_byte_t"]
    assert echo.stats["bytes_up"] == len(DATA)


def test_rate_limit_paces_the_transfer(server, link) -> None:
    proxy = link(server("send").port, LinkProfile(rate_Bps=100_000))
    start = time.monotonic()
    assert read_all(connect(proxy)) == DATA
    # 204,800 bytes at 100 KB/s need ~2 s; the limiter works if it takes well over 1.5 s.
    assert time.monotonic() - start >= 1.5
    stats = proxy.stats
    assert stats["last_byte_t"] - stats["first_byte_t"] >= 1.4


def test_latency_delays_each_round_trip(server, link) -> None:
    proxy = link(server("echo").port, LinkProfile(latency_s=0.1))
    with connect(proxy) as sock:
        for _ in range(3):
            start = time.monotonic()
            sock.sendall(b"x")
            assert read_exactly(sock, 1) == b"x"
            assert time.monotonic() - start >= 0.19  # one-way latency, both directions


def test_set_profile_at_run_time(server, link) -> None:
    proxy = link(server("echo").port)
    with connect(proxy) as sock:
        sock.sendall(b"a")
        assert read_exactly(sock, 1) == b"a"
        proxy.set_profile(LinkProfile(latency_s=0.15))
        start = time.monotonic()
        sock.sendall(b"b")
        assert read_exactly(sock, 1) == b"b"
        assert time.monotonic() - start >= 0.29


# --- faults -----------------------------------------------------------------------------------------


def test_cut_after_n_bytes_then_eof_and_broker_side_closed(server, link) -> None:
    srv = server("send")
    proxy = link(srv.port, fault=Fault("cut", at_byte=10_000))
    assert read_all(connect(proxy)) == DATA[:10_000]
    assert srv.closed.wait(WAIT)
    assert [(k, o) for k, o, _t in proxy.stats["faults_fired"]] == [("cut", 10_000)]
    # once=True: the reconnect gets a clean link
    assert read_all(connect(proxy)) == DATA


def test_corrupt_flips_exactly_one_byte(server, link) -> None:
    proxy = link(server("send").port, fault=Fault("corrupt", at_byte=123_457))
    got = read_all(connect(proxy))
    assert len(got) == len(DATA)
    assert [i for i in range(len(DATA)) if got[i] != DATA[i]] == [123_457]
    assert got[123_457] == DATA[123_457] ^ 0xFF


def test_fault_on_every_connection(server, link) -> None:
    proxy = link(server("send").port, fault=Fault("cut", at_byte=500, once=False))
    assert len(read_all(connect(proxy))) == 500
    assert len(read_all(connect(proxy))) == 500


def test_stall_holds_data_until_resume(server, link) -> None:
    proxy = link(server("send").port, fault=Fault("stall", at_byte=1000))
    sock = connect(proxy)
    assert read_exactly(sock, 1000) == DATA[:1000]
    assert nothing_arrives(sock, 0.4)
    proxy.resume()
    assert read_all(sock) == DATA[1000:]
    assert proxy.stats["faults_fired"][0][:2] == ("stall", 1000)


def test_stall_for_a_duration_then_delivers(server, link) -> None:
    proxy = link(server("send").port, fault=Fault("stall", at_byte=0, duration_s=0.5))
    sock = connect(proxy)
    start = time.monotonic()
    assert read_all(sock) == DATA
    assert time.monotonic() - start >= 0.45


def test_run_time_stall_cut_and_live_fault(server, link) -> None:
    srv = server("echo")
    proxy = link(srv.port)
    sock = connect(proxy)
    sock.sendall(b"hello")
    assert read_exactly(sock, 5) == b"hello"
    proxy.stall()
    sock.sendall(b"later")
    assert nothing_arrives(sock, 0.3)
    proxy.resume()
    assert read_exactly(sock, 5) == b"later"
    proxy.set_fault(Fault("corrupt", at_byte=1), live=True)  # offset from now
    sock.sendall(b"abc")
    assert read_exactly(sock, 3) == bytes([ord("a"), ord("b") ^ 0xFF, ord("c")])
    proxy.cut_all()
    assert read_all(sock) == b""
    assert srv.closed.wait(WAIT)


def test_stop_closes_everything_and_leaks_no_thread(server) -> None:
    srv = server("echo")
    baseline = threading.active_count()
    proxy = LinkProxy("127.0.0.1", srv.port, PROFILES["wifi"]).start()
    sock = connect(proxy)
    sock.sendall(b"ping")
    assert read_exactly(sock, 4) == b"ping"
    proxy.stop()
    proxy.stop()  # idempotent
    assert read_all(sock) == b""
    with pytest.raises(OSError):
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
    deadline = time.monotonic() + WAIT
    while threading.active_count() > baseline + 1 and time.monotonic() < deadline:  # +1: the server's client
        time.sleep(0.05)
    assert not any(t.name == "otalab-link" for t in threading.enumerate())


def test_upstream_refused_closes_the_board_side() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with LinkProxy("127.0.0.1", dead_port) as proxy:
        sock = connect(proxy)
        with contextlib.suppress(ConnectionResetError):
            assert read_all(sock) == b""


# --- through a real Mosquitto -------------------------------------------------------------------------

TOPIC = "a/test/u/4.3"
BIG = os.urandom(256 * 1024)


def test_retained_256k_message_through_the_link(mosquitto_broker) -> None:  # noqa: F811
    broker = mosquitto_broker()
    publisher = Probe(broker).connect_ok()
    try:
        publisher.publish(TOPIC, BIG)
    finally:
        publisher.close()
    with LinkProxy(broker.host, broker.port, LinkProfile(rate_Bps=1_000_000)) as proxy:
        sub = Probe(broker, port=proxy.port).connect_ok()
        try:
            sub.subscribe(TOPIC, qos=0)
            msg = sub.get(WAIT)
            assert msg is not None and msg.payload == BIG and msg.retain
        finally:
            sub.close()
        publishes = proxy.stats["per_connection"][0]["publishes"]
        assert publishes and publishes[0][2] == len(BIG)
        first, last = proxy.stats["per_connection"][0]["publish_times"][0]
        assert first is not None and last is not None and first <= last


def test_cut_mid_message_disconnects_then_reconnect_gets_it(mosquitto_broker) -> None:  # noqa: F811
    broker = mosquitto_broker()
    publisher = Probe(broker).connect_ok()
    try:
        publisher.publish(TOPIC, BIG)
    finally:
        publisher.close()
    cut = Fault("cut", at_byte=100_000, within="payload")
    with LinkProxy(broker.host, broker.port, fault=cut) as proxy:
        sub = Probe(broker, port=proxy.port)
        sub.client.reconnect_delay_set(0.1, 0.5)

        def subscribe_on_connect(client, _userdata, _flags, rc, _props) -> None:
            client.subscribe(TOPIC, 0)  # also after paho's own reconnect
            sub.connack.put(rc)

        sub.client.on_connect = subscribe_on_connect
        try:
            sub.connect_ok()
            assert sub.disconnected.wait(WAIT)  # the partial message is dropped with the connection
            assert sub.messages.empty()
            msg = sub.get(WAIT)
            assert msg is not None and msg.payload == BIG
        finally:
            sub.close()
        fired = proxy.stats["faults_fired"]
        assert len(fired) == 1 and fired[0][0] == "cut"
        assert proxy.stats["connections"] >= 2


def test_corrupt_payload_offset_through_mosquitto(mosquitto_broker) -> None:  # noqa: F811
    broker = mosquitto_broker()
    payload = bytes(range(256)) * 64
    with LinkProxy(broker.host, broker.port, fault=Fault("corrupt", at_byte=5000, within="payload")) as proxy:
        sub = Probe(broker, port=proxy.port).connect_ok()
        try:
            sub.subscribe(TOPIC, qos=0)
            publisher = Probe(broker).connect_ok()
            try:
                publisher.publish(TOPIC, payload, retain=False)
            finally:
                publisher.close()
            msg = sub.get(WAIT)
            assert msg is not None
            assert [i for i in range(len(payload)) if msg.payload[i] != payload[i]] == [5000]
        finally:
            sub.close()


# --- CLI ----------------------------------------------------------------------------------------------


def test_cli_link_runs_until_sigterm(server) -> None:
    srv = server("send", b"x" * 3000)
    proc = subprocess.Popen(
        [str(OTALAB), "link", "--upstream", f"127.0.0.1:{srv.port}", "--cut-after", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("link: 127.0.0.1:") and first.rstrip().endswith(f"-> 127.0.0.1:{srv.port}")
        port = int(first.split()[1].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.settimeout(WAIT)
            assert read_all(sock) == b"x" * 1000
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "cut@1000" in out


def test_cli_link_bad_options() -> None:
    result = subprocess.run(
        [str(OTALAB), "link", "--upstream", "127.0.0.1:1", "--stall-for", "2"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("otalab: error:") and "Traceback" not in result.stderr
