"""Test helpers for the MQTT client side: independent paho subscribers and a cutting TCP proxy."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from otalib.mqtt.url import MqttUrl, parse_url

WAIT = 10.0


def esp_package(size: int, patch: int = 5) -> bytes:
    """A valid .sdp: one-byte varint patch + an ESP image header start (0xE9, 1 segment) + random bytes."""
    return bytes([patch]) + b"\xe9\x01" + os.urandom(size - 3)


class Subscriber:
    """An independent paho (v3.1.1) subscriber on a plain listener; messages land in ``messages``."""

    def __init__(self, url: str | MqttUrl, topic: str) -> None:
        self.url = url if isinstance(url, MqttUrl) else parse_url(url)
        self.topic = topic
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        #: (topic, qos, retain) of every message as the broker delivered it, in order
        self.delivered: list[tuple[str, int, bool]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if self.url.username:
            self.client.username_pw_set(self.url.username, self.url.password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage) -> None:
        self.delivered.append((msg.topic, msg.qos, bool(msg.retain)))
        self.messages.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def __enter__(self) -> Subscriber:
        self.client.connect(self.url.host, self.url.port, 30)
        self.client.loop_start()
        self._subscribed.clear()
        self.client.subscribe(self.topic, qos=2)
        assert self._subscribed.wait(WAIT), "no SUBACK"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def get(self, timeout: float = WAIT) -> tuple[str, bytes, bool]:
        """The next message (topic, payload, retain flag); fails the test after ``timeout``."""
        return self.messages.get(timeout=timeout)

    def settle(self) -> list[tuple[str, bytes, bool]]:
        """Every message on the topic that arrived before a sentinel round trip (deterministic "nothing came")."""
        sentinel = f"a/sentinel/{uuid.uuid4().hex}"
        self._subscribed.clear()
        self.client.subscribe(sentinel, qos=1)
        assert self._subscribed.wait(WAIT), "no SUBACK for the sentinel"
        self.client.publish(sentinel, b"s", qos=1)
        seen = []
        deadline = time.monotonic() + WAIT
        while True:
            try:
                item = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the sentinel never came back (after {len(seen)} messages)") from None
            if item[0] == sentinel:
                return seen
            seen.append(item)


def retained(url: str | MqttUrl, topic: str) -> bytes | None:
    """The retained message on ``topic`` (None if there is none), read by a fresh subscriber."""
    with Subscriber(url, topic) as sub:
        got = [payload for t, payload, retain in sub.settle() if t == topic and retain]
    return got[0] if got else None


def plain(url: str, broker) -> str:
    """``url`` moved to the broker's plain listener (for subscribers beside a TLS listener)."""
    parsed = parse_url(url)
    plain_port = int(broker.plain_url.rsplit(":", 1)[1])
    cred = f"{parsed.username}:{parsed.password}@" if parsed.username else ""
    return f"mqtt://{cred}{parsed.host}:{plain_port}/{parsed.topic}"


class CuttingProxy:
    """A one-connection TCP relay to ``port`` that cuts both sides once ``limit`` client bytes went through.

    With ``stall=True`` it stops forwarding at the limit but keeps both connections open (a hung broker).
    """

    def __init__(self, port: int, limit: int, stall: bool = False) -> None:
        self.target = port
        self.limit = limit
        self.stall = stall
        self._closing = threading.Event()
        self.forwarded = 0
        self.cut = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(WAIT)
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = [self._server]

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    room = self.limit - self.forwarded
                    if len(data) >= room:
                        dst.sendall(data[: max(room, 0)])
                        self.forwarded += max(room, 0)
                        if self.stall:
                            self.cut.set()
                            self._closing.wait(WAIT)
                        break
                    self.forwarded += len(data)
                dst.sendall(data)
        self.cut.set()
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self._server.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=WAIT)
            client.settimeout(WAIT)
            upstream.settimeout(WAIT)
            self._socks += [client, upstream]
            for src, dst, count in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, count), daemon=True)
                t.start()
                self._threads.append(t)

    def __enter__(self) -> CuttingProxy:
        t = threading.Thread(target=self._serve, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        for t in self._threads:
            t.join(WAIT)


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A local port with nothing listening (bound, not listening, so nobody takes it meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
