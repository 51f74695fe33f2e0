"""Connect a paho client to a broker, with one clear error line for each failure.

:func:`connect` does TCP, TLS (CA / client certificate / pins, see
:mod:`otalib.mqtt.tls`) and MQTT CONNECT, waits for CONNACK with a timeout,
and returns a :class:`ConnectedClient` whose paho network loop runs in a
thread. MQTT v5 is tried first (its CONNACK states the broker's maximum packet
size); a broker that rejects v5 is retried with 3.1.1.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from otalib.errors import BrokerError, UsageError
from otalib.mqtt import paho_compat
from otalib.mqtt.tls import PinMismatchError, TlsOptions, make_ssl_context
from otalib.mqtt.url import MqttUrl

MQTTv5 = mqtt.MQTTv5
MQTTv311 = mqtt.MQTTv311

#: CONNACK reason codes (v5 numbering; paho maps 3.1.1 return codes onto them).
_UNSUPPORTED_PROTOCOL = 0x84
_CONNACK_TEXT = {
    0x85: "client identifier not valid",
    0x86: "not authorised: bad user name or password",
    0x87: "not authorised (wrong user name or password?)",
    0x88: "server unavailable",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x95: "packet too large",
    0x97: "quota exceeded",
}


@dataclass
class ConnectOptions:
    """Where and how to connect; ``timeout`` bounds the TCP, TLS and CONNACK waits."""

    url: MqttUrl
    tls: TlsOptions = field(default_factory=TlsOptions)
    client_id: str = ""
    keepalive: int = 60
    protocol: int = MQTTv5
    timeout: float = 10.0
    fallback: bool = True  # retry with 3.1.1 if the broker rejects (or ignores) a v5 CONNECT
    reconnect: bool = False  # let paho reconnect after a loss (subscribers); never for a publish


class OtaClient(mqtt.Client):
    """paho client that counts bytes written, keeps the last socket error and reports PUBREC.

    The hooks override paho 2.x internals (``_sock_send``, ``_sock_recv``,
    ``_handle_pubrec``; see :mod:`otalib.mqtt.paho_compat`): paho has no public PUBREC callback.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.otalab_sent = 0
        self.otalab_sock_error: BaseException | None = None
        self.otalab_on_sent: Callable[[int], None] | None = None
        self.otalab_on_pubrec: Callable[[int, int], None] | None = None  # (mid, reason code)

    def _sock_send(self, buf: bytes | bytearray) -> int:
        try:
            sent = super()._sock_send(buf)
        except BlockingIOError:
            raise
        except OSError as exc:
            self.otalab_sock_error = exc
            raise
        self.otalab_sent += sent
        hook = self.otalab_on_sent
        if hook is not None:
            hook(self.otalab_sent)
        return sent

    def _sock_recv(self, bufsize: int) -> bytes:
        try:
            return super()._sock_recv(bufsize)
        except BlockingIOError:
            raise
        except OSError as exc:
            self.otalab_sock_error = exc
            raise

    def _handle_pubrec(self) -> mqtt.MQTTErrorCode:
        hook = self.otalab_on_pubrec
        if hook is not None:
            mid, reason = paho_compat.decode_pubrec(self)
            hook(mid, reason)
            if reason >= 0x80:
                # The broker refused the message: the exchange ends here (no PUBREL, MQTT v5 4.3.3).
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubrec()


class ConnectedClient:
    """A connected paho client with its network loop running, and what the connection took."""

    def __init__(self, client: OtaClient, url: MqttUrl, protocol: int) -> None:
        self.client = client
        self.url = url
        self.protocol = protocol
        self.connect_s: float = 0.0
        self.tls_handshake_s: float | None = None
        self.max_packet_size: int | None = None
        self.disconnected = threading.Event()
        self.disconnect_reason: str | None = None
        self.disconnect_listeners: list[Callable[[str], None]] = []
        self._closed = False

    @property
    def mqtt_version(self) -> str:
        """``"5"`` or ``"3.1.1"``."""
        return "5" if self.protocol == MQTTv5 else "3.1.1"

    def _on_disconnect(self, reason: str) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()
        for listener in list(self.disconnect_listeners):
            listener(reason)

    def close(self, timeout: float = 2.0, abort: bool = False) -> None:
        """Disconnect and stop the network thread; ``abort`` cuts the TCP connection at once.

        An abort is how a failed publish ends: the broker sees a truncated
        packet and stores nothing. Never blocks longer than about ``2 * timeout``.
        """
        if self._closed:
            return
        self._closed = True
        client = self.client
        paho_compat.stop_reconnecting(client)
        if not abort:
            with contextlib.suppress(Exception):  # teardown: a broken connection must not stop the close
                client.disconnect()
        paho_compat.end_network_loop(client)
        thread = paho_compat.network_thread(client)
        if thread is not None and not abort:
            thread.join(timeout)
        if thread is None or thread.is_alive() or abort:
            _shutdown(paho_compat.socket_of(client))
            if thread is not None:
                thread.join(timeout)
        with contextlib.suppress(Exception):  # teardown: whatever state paho is in, finish closing
            paho_compat.close_socket(client)
        with contextlib.suppress(Exception):  # teardown: as above
            paho_compat.reset_sockets(client)

    def __enter__(self) -> ConnectedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(sock: object) -> None:
    """Shut the TCP connection under ``sock`` (plain or TLS) down from any thread."""
    if sock is None:
        return
    with contextlib.suppress(OSError, ValueError, TypeError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # type: ignore[arg-type]


class _RetryWithOlderProtocol(Exception):
    pass


def connect(opts: ConnectOptions) -> ConnectedClient:
    """Connect as ``opts`` says; raise :class:`BrokerError` with one clear line on failure."""
    url = opts.url
    tls = opts.tls
    if not url.tls and (tls.ca or tls.client_cert or tls.client_key or tls.pins or tls.insecure):
        raise UsageError(f"TLS options given but the URL is not mqtts:// ({url})")
    protocols = [opts.protocol] + ([MQTTv311] if opts.protocol == MQTTv5 and opts.fallback else [])
    for protocol in protocols:
        try:
            return _connect_once(opts, protocol, last=protocol == protocols[-1])
        except _RetryWithOlderProtocol:
            continue
    raise BrokerError(f"{url}: the broker accepts neither MQTT v5 nor 3.1.1")  # pragma: no cover


def _connect_once(opts: ConnectOptions, protocol: int, last: bool) -> ConnectedClient:
    url = opts.url
    where = f"{url.host}:{url.port}"
    start = time.monotonic()
    client = OtaClient(
        CallbackAPIVersion.VERSION2,
        client_id=opts.client_id,
        protocol=protocol,
        reconnect_on_failure=opts.reconnect,
    )
    client.connect_timeout = opts.timeout
    if url.username is not None:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set_context(make_ssl_context(opts.tls))
    connected = ConnectedClient(client, url, protocol)
    connack: dict[str, object] = {}
    got_connack = threading.Event()

    def on_connect(_c, _u, _flags, reason, properties) -> None:
        connack["reason"] = int(getattr(reason, "value", reason))
        connack["name"] = str(reason)
        connack["max_packet_size"] = getattr(properties, "MaximumPacketSize", None) if properties else None
        connack["at"] = time.monotonic()
        got_connack.set()

    def on_disconnect(_c, _u, _flags, reason, _properties) -> None:
        connected._on_disconnect(str(reason))
        got_connack.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(url.host, url.port, opts.keepalive)
    except PinMismatchError as exc:
        raise PinMismatchError(f"{where}: {exc}") from None
    except socket.gaierror:
        raise BrokerError(f"unknown host {url.host!r} (name does not resolve)") from None
    except ConnectionRefusedError:
        raise BrokerError(f"connection refused by {where} (no broker listening there?)") from None
    except ssl.SSLCertVerificationError as exc:
        raise BrokerError(f"{where}: TLS: certificate verify failed ({exc.verify_message})") from None
    except ssl.SSLError as exc:
        raise BrokerError(f"{where}: {_tls_text(exc, opts.tls)}") from None
    except TimeoutError:
        raise BrokerError(f"{where}: timed out connecting after {opts.timeout:g} s") from None
    except OSError as exc:
        raise BrokerError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    connected.tls_handshake_s = getattr(paho_compat.socket_of(client), "otalab_handshake_s", None)
    client.loop_start()
    ok = False
    try:
        # Some 3.1.1-only brokers (amqtt) neither answer nor close on a v5 CONNECT: wait less, then fall back.
        wait = opts.timeout if last else min(opts.timeout, max(1.0, opts.timeout / 4))
        if not got_connack.wait(max(0.0, wait - (time.monotonic() - start))):
            if not last and client.otalab_sock_error is None:
                raise _RetryWithOlderProtocol()
            raise BrokerError(f"{where}: no CONNACK within {opts.timeout:g} s (is it an MQTT broker?)")
        if "reason" not in connack:
            error = client.otalab_sock_error
            if isinstance(error, ssl.SSLError):
                raise BrokerError(f"{where}: {_tls_text(error, opts.tls)}")
            if protocol == MQTTv5 and not last:
                raise _RetryWithOlderProtocol()
            raise BrokerError(f"{where}: the broker closed the connection before CONNACK")
        reason = int(connack["reason"])  # type: ignore[arg-type]
        if reason == _UNSUPPORTED_PROTOCOL and not last:
            raise _RetryWithOlderProtocol()
        if reason != 0:
            text = _CONNACK_TEXT.get(reason, str(connack["name"]).lower())
            raise BrokerError(f"{where}: broker refused the connection: {text}")
        connected.connect_s = float(connack["at"]) - start  # type: ignore[arg-type]
        size = connack.get("max_packet_size")
        connected.max_packet_size = int(size) if size else None  # type: ignore[call-overload]
        ok = True
        return connected
    finally:
        if not ok:
            connected.close(timeout=1.0, abort=True)


def _tls_text(exc: ssl.SSLError, tls: TlsOptions) -> str:
    """One line for a TLS failure, naming the likely cause."""
    text = f"{exc.reason or ''} {exc}".lower()
    if "certificate required" in text or "peer did not return a certificate" in text:
        return "TLS: client certificate required by the broker (use --client-cert/--client-key)"
    if tls.client_cert is None and (isinstance(exc, ssl.SSLEOFError) or "handshake failure" in text):
        # TLS 1.2 brokers (Mosquitto) that require a client certificate just end the handshake.
        return (
            "TLS: the broker ended the handshake; it probably requires a client certificate"
            " (use --client-cert/--client-key)"
        )
    if "unknown ca" in text or "bad certificate" in text or "certificate unknown" in text:
        return "TLS: the broker rejected our client certificate (not signed by a CA it trusts?)"
    if "wrong version number" in text or "record layer failure" in text or "packet length too long" in text:
        return "TLS handshake failed: the port does not speak TLS (use mqtt:// ?)"
    return f"TLS handshake failed: {exc.reason or exc}"
