"""MQTT client side: deploy URLs, TLS (CA, client certificates, pins), connect and publish.

The connect function lives in :mod:`otalib.mqtt.connect` (``from otalib.mqtt.connect import connect``).
"""

from __future__ import annotations

from otalib.mqtt.tls import Pin, PinMismatchError, TlsOptions, make_ssl_context, parse_pin
from otalib.mqtt.url import MqttUrl, parse_url

__all__ = [
    "ConnectOptions",
    "ConnectedClient",
    "DeployRecord",
    "MqttUrl",
    "Pin",
    "PinMismatchError",
    "TlsOptions",
    "deploy",
    "make_ssl_context",
    "parse_pin",
    "parse_url",
]


def __getattr__(name: str):
    """Import the paho-using modules lazily."""
    import importlib

    if name in ("ConnectOptions", "ConnectedClient"):
        return getattr(importlib.import_module("otalib.mqtt.connect"), name)
    if name in ("DeployRecord", "deploy"):
        return getattr(importlib.import_module("otalib.mqtt.publish"), name)
    raise AttributeError(name)
