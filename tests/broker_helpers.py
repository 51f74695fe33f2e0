"""Shared broker test helpers: broker factories (fixtures) and a small paho probe client.

Import in a test module with ``from broker_helpers import ...``; to use the fixtures,
import them by name too (``from broker_helpers import mosquitto_broker  # noqa: F401``).

- ``mosquitto_broker(**kw)`` / ``embedded_broker(**kw)`` / ``lab_broker(backend, **kw)``:
  start a broker with :func:`otalib.broker.start_broker`; every broker is stopped at teardown.
  ``mosquitto_broker`` skips the test only when no Mosquitto is installed.
- :class:`Probe`: a paho client (for a Broker or a URL) whose callbacks only fill queues; every wait is bounded.
  "Nothing arrives" is checked with :meth:`Probe.settle` (a sentinel round trip), never with a fixed wait.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest

from otalib.broker import Broker, BrokerUser, find_mosquitto, start_broker
from otalib.certs import CertPair

WAIT = 5.0
BIG_WAIT = 30.0
DEPLOYER = BrokerUser("deployer", "deploy-pw", "deployer")
DEVICE = BrokerUser("sming", "device-pw", "device", app_id="test")


class Probe:
    """A paho MQTT client for tests: connect, subscribe, publish, and read received messages."""

    def __init__(
        self,
        broker: Broker | str,
        *,
        user: BrokerUser | None = None,
        password: str | None = None,
        client_cert: CertPair | None = None,
        port: int | None = None,
        tls: bool | None = None,
        client_id: str | None = None,
    ) -> None:
        if isinstance(broker, str):  # a URL such as otalab broker prints
            parts = urlsplit(broker)
            self.host, self.port, self.ca_path = parts.hostname or "127.0.0.1", port or parts.port, None
            self.tls = parts.scheme == "mqtts" if tls is None else tls
        else:
            self.host, self.port, self.ca_path = broker.host, port or broker.port, broker.ca_path
            self.tls = broker.tls if tls is None else tls
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}"
        )
        if user is not None:
            self.client.username_pw_set(user.name, user.password if password is None else password)
        if self.tls:
            assert self.ca_path is not None
            self.client.tls_set(
                ca_certs=str(self.ca_path),
                certfile=str(client_cert.cert) if client_cert else None,
                keyfile=str(client_cert.key) if client_cert else None,
            )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(list(codes))
        self.client.on_disconnect = lambda *_a: (self.disconnected.set(), self.connack.put(None))
        self._looping = False
        self._sentinels: set[str] = set()

    def connect(self, timeout: float = WAIT) -> Any:
        """The CONNACK reason code, or None if the connection was refused/closed without one."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return None
        self.client.loop_start()
        self._looping = True
        try:
            return self.connack.get(timeout=timeout)
        except queue.Empty:
            return None

    def connect_ok(self, timeout: float = WAIT) -> Probe:
        """Connect and assert success; return self."""
        rc = self.connect(timeout)
        assert rc is not None and not rc.is_failure, f"connect failed: {rc}"
        return self

    def subscribe(self, topic: str, qos: int = 2, timeout: float = WAIT) -> list[Any]:
        """Subscribe and wait for the SUBACK; return its reason codes."""
        self.client.subscribe(topic, qos)
        return self.subacks.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, *, qos: int = 2, retain: bool = True, timeout: float = BIG_WAIT):
        """Publish and wait (bounded) until the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        return info

    def get(self, timeout: float = WAIT) -> mqtt.MQTTMessage | None:
        """The next received message (sentinels skipped), or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if message.topic not in self._sentinels:
                return message

    def settle(self, via: Probe | None = None, topic: str | None = None) -> list[mqtt.MQTTMessage]:
        """Every message that arrives before a sentinel published now (deterministic "nothing came").

        Call it after the publish (or subscribe) whose message must NOT arrive has completed: a
        broker forwards in order, so anything it was going to deliver comes before the sentinel.
        ``via`` publishes the sentinel (default: this probe; give one allowed to publish when this
        probe may not); ``topic`` is a topic this probe already receives (default: a fresh
        ``a/sentinel/<id>`` this probe subscribes to).
        """
        if topic is None:
            topic = f"a/sentinel/{uuid.uuid4().hex[:12]}"
            self.subscribe(topic, qos=1)
        self._sentinels.add(topic)
        (via or self).publish(topic, b"sentinel", qos=1, retain=False, timeout=WAIT)
        before: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + BIG_WAIT
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the sentinel on {topic} never came back (after {before})") from None
            if message.topic == topic:
                return before
            before.append(message)

    def close(self) -> None:
        """Disconnect and stop paho's thread."""
        try:
            self.client.disconnect()
        finally:
            if self._looping:
                self.client.loop_stop()
                self._looping = False


@pytest.fixture
def probes() -> Iterator[Callable[..., Probe]]:
    """Factory of :class:`Probe` clients, all closed at teardown."""
    made: list[Probe] = []

    def make(broker: Broker | str, **kwargs: Any) -> Probe:
        probe = Probe(broker, **kwargs)
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


def _factory(backend: str) -> Iterator[Callable[..., Broker]]:
    started: list[Broker] = []

    def make(**kwargs: Any) -> Broker:
        broker = start_broker(backend, **kwargs)
        started.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def mosquitto_broker() -> Iterator[Callable[..., Broker]]:
    """Factory: a running Mosquitto broker (``start_broker`` keywords); skips only if none is installed."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    yield from _factory("mosquitto")


@pytest.fixture
def embedded_broker() -> Iterator[Callable[..., Broker]]:
    """Factory: a running embedded (amqtt) broker."""
    yield from _factory("embedded")


@pytest.fixture
def lab_broker() -> Iterator[Callable[..., Broker]]:
    """Factory ``lab_broker(backend, **kw)`` for tests parametrized over backends."""
    started: list[Broker] = []

    def make(backend: str, **kwargs: Any) -> Broker:
        if backend == "mosquitto" and find_mosquitto() is None:
            pytest.skip("mosquitto is not installed")
        broker = start_broker(backend, **kwargs)
        started.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()
