"""Lab MQTT brokers behind one interface: Mosquitto when installed, else embedded amqtt.

    with start_broker(tls=True, users=[BrokerUser("deployer", "pw")]) as broker:
        broker.url, broker.backend, broker.ca_path, broker.notes

``backend="auto"`` picks Mosquitto whenever :func:`find_mosquitto` finds it (set
``OTALAB_MOSQUITTO=none`` to pretend it is missing) and the embedded amqtt broker
otherwise. Every broker listens on 127.0.0.1 and an ephemeral port by default.
:mod:`.base` (the interface, users, TLS material), :mod:`.mosquitto`, :mod:`.embedded` (amqtt).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from otalib.broker.base import Broker, BrokerUser, free_port, port_accepts
from otalib.broker.embedded import EmbeddedBroker
from otalib.broker.mosquitto import MosquittoBroker, find_mosquitto
from otalib.errors import BrokerError, UsageError

BACKENDS = ("auto", "mosquitto", "embedded")

__all__ = [
    "BACKENDS",
    "Broker",
    "BrokerUser",
    "EmbeddedBroker",
    "MosquittoBroker",
    "find_mosquitto",
    "free_port",
    "make_broker",
    "port_accepts",
    "start_broker",
]


def make_broker(
    backend: str = "auto",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = False,
    require_client_cert: bool = False,
    users: Sequence[BrokerUser] = (),
    max_packet_size: int | None = None,
    workdir: Path | None = None,
    server_names: Sequence[str] = (),
    plain_port: int | None = None,
) -> Broker:
    """A configured but not yet started broker (see :func:`start_broker`).

    With ``tls`` the broker listens on TLS only; ``plain_port`` (0: a free one) adds a plain
    listener, which needs no TLS and no client certificate.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown broker backend {backend!r} (use {', '.join(BACKENDS)})")
    kwargs = dict(
        host=host,
        port=port,
        tls=tls,
        require_client_cert=require_client_cert,
        users=users,
        max_packet_size=max_packet_size,
        workdir=workdir,
        server_names=server_names,
        plain_port=plain_port,
    )
    if backend == "auto":
        backend = "mosquitto" if find_mosquitto() is not None else "embedded"
    if backend == "mosquitto":
        if find_mosquitto() is None:
            raise BrokerError("mosquitto not found (install it, or use --backend embedded)")
        return MosquittoBroker(**kwargs)  # type: ignore[arg-type]
    return EmbeddedBroker(**kwargs)  # type: ignore[arg-type]


def start_broker(backend: str = "auto", **options: Any) -> Broker:
    """Start a lab broker and return it running; use it as a context manager (``stop()`` is idempotent).

    ``options`` are those of :func:`make_broker` (host, port, tls, require_client_cert, users,
    max_packet_size, workdir, server_names, plain_port).
    """
    broker = make_broker(backend, **options)
    try:
        return broker.start()
    except BaseException:
        broker.stop()
        raise
