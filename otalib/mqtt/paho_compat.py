"""Every paho-mqtt internal otalab touches, in one place: re-check this file at each paho upgrade.

paho 2.x has no public hook for what otalab needs (bytes as they are read and written, the
PUBREC of a QoS 2 publish, a PUBLISH body before it is complete, dropping a connection the
way a device losing power does). otalab's subclasses override the private methods listed in
:data:`HOOKS`; everything else private is reached through the functions here.
:func:`missing_internals` names what the installed paho lacks (a test runs it).
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTMessage

#: Private ``mqtt.Client`` methods otalab's subclasses override (OtaClient, StreamingClient).
HOOKS = ("_sock_send", "_sock_recv", "_packet_handle", "_handle_publish", "_handle_pubrec", "_create_socket_connection")
#: Private ``mqtt.Client`` methods and attributes called or set through this module.
INTERNALS = (
    "_in_packet",
    "_protocol",
    "_sock",
    "_thread",
    "_thread_terminate",
    "_reconnect_on_failure",
    "_sock_close",
    "_reset_sockets",
    "_send_puback",
    "_send_pubrec",
    "_in_message_mutex",
    "_in_messages",
    "_host",
    "_port",
    "_connect_timeout",
)


def missing_internals(client: mqtt.Client) -> list[str]:
    """The names of :data:`HOOKS` and :data:`INTERNALS` that ``client`` lacks (empty: all there)."""
    from paho.mqtt import _packet

    missing = [name for name in HOOKS if not callable(getattr(type(client), name, None))]
    missing += [name for name in INTERNALS if not hasattr(client, name)]
    if not hasattr(_packet, "decode_pubrec"):
        missing.append("_packet.decode_pubrec")
    return missing


def protocol(client: mqtt.Client) -> int:
    """The MQTT protocol version the client speaks (``mqtt.MQTTv311``, ``mqtt.MQTTv5``)."""
    return client._protocol


def in_packet(client: mqtt.Client) -> Any:
    """paho's packet being read: a dict with ``command``, ``have_remaining``, ``remaining_length``, ``packet``."""
    return client._in_packet


def connect_target(client: mqtt.Client) -> tuple[str, int, float]:
    """The host, port and connect timeout the client connects to."""
    return client._host, client._port, client._connect_timeout


def socket_of(client: mqtt.Client) -> Any:
    """The client's socket (or TLS wrapper), None when not connected."""
    return client._sock


def network_thread(client: mqtt.Client) -> Any:
    """The thread of ``loop_start``, None if there is none."""
    return client._thread


def stop_reconnecting(client: mqtt.Client) -> None:
    """No automatic reconnect after this (``loop_forever``'s retry on failure)."""
    client._reconnect_on_failure = False


def end_network_loop(client: mqtt.Client) -> None:
    """Ask the ``loop_start`` thread to end at its next turn (no DISCONNECT sent)."""
    client._thread_terminate = True


def close_socket(client: mqtt.Client) -> None:
    """Close the client's socket as paho does on a lost connection."""
    client._sock_close()


def reset_sockets(client: mqtt.Client) -> None:
    """Close the socket and paho's wake-up socket pair."""
    client._reset_sockets()


def decode_pubrec(client: mqtt.Client) -> tuple[int, int]:
    """(packet id, reason code) of the PUBREC paho is handling (reason 0 on MQTT 3.1.1)."""
    from paho.mqtt import _packet

    packet = client._in_packet
    result = _packet.decode_pubrec(packet["command"], packet["packet"], client._protocol)
    reason = getattr(result.reason, "value", 0) or 0
    return result.mid, int(reason)


def send_puback(client: mqtt.Client, mid: int) -> mqtt.MQTTErrorCode:
    """Acknowledge a QoS 1 PUBLISH paho did not decode itself."""
    return client._send_puback(mid)


def send_pubrec(client: mqtt.Client, mid: int, topic: bytes) -> mqtt.MQTTErrorCode:
    """Answer a QoS 2 PUBLISH paho did not decode itself, and keep its state for the PUBREL."""
    rc = client._send_pubrec(mid)
    message = MQTTMessage(mid=mid, topic=topic)
    message.qos = 2
    message.state = mqtt.mqtt_ms_wait_for_pubrel
    with client._in_message_mutex:
        client._in_messages[mid] = message
    return rc
