"""MQTT client side.

:mod:`.url` (deploy URLs), :mod:`.tls` (CA, client certificates, pins), :mod:`.connect`
(connect with fallbacks; ``from otalib.mqtt.connect import connect``), :mod:`.publish`
(deploy a package), :mod:`.streaming` (a paho client that streams PUBLISH payloads, for the
virtual board), :mod:`.wire` (the MQTT framing otalab parses itself), :mod:`.paho_compat`
(every paho internal otalab touches: re-check it at each paho upgrade).
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
