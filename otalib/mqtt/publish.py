"""Publish a deployment package: ONE retained QoS 2 message, timed.

QoS 2 makes the broker keep a message only once it has it completely (it
stores it at PUBLISH and releases it to subscribers and to the retained store
at PUBREL), so a publish that fails before PUBREC leaves nothing behind. A
failed or unconfirmed publish raises :class:`PublishError`; it is never
reported as success. The connection of a failed publish is cut at once (no
DISCONNECT), so the broker sees a truncated packet and discards it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from otalib.errors import PublishError, UsageError
from otalib.fileio import read_input
from otalib.mqtt.connect import ConnectedClient, ConnectOptions, MQTTv5, MQTTv311, connect
from otalib.mqtt.tls import TlsOptions
from otalib.mqtt.url import MqttUrl, parse_url

#: Largest MQTT remaining length (and so, nearly, message).
MQTT_MAX_REMAINING = 268_435_455
QOS = 2
#: ``mqtt_version`` names: auto tries v5 first and falls back to 3.1.1.
PROTOCOLS = {"auto": MQTTv5, "5": MQTTv5, "3.1.1": MQTTv311}


@dataclass(frozen=True)
class DeployRecord:
    """Timing of one deployment; times in seconds from the call's start (``t_start`` is wall clock)."""

    url: str
    topic: str
    bytes: int
    retain: bool
    qos: int
    t_start: float
    connect_s: float
    tls_handshake_s: float | None
    publish_start: float
    pubrec_s: float | None
    pubcomp_s: float
    total_s: float
    throughput_Bps: float | None
    cleared: bool
    broker_max_packet_size: int | None
    mqtt_version: str = "5"
    patch: int | None = None
    device_patch: int | None = None

    def to_dict(self) -> dict[str, object]:
        """A flat dict (JSON-ready) of the record."""
        return asdict(self)


def publish_packet_size(topic: str, payload_len: int, qos: int = QOS, v5: bool = True) -> int:
    """Size in bytes of the PUBLISH packet paho sends (no properties)."""
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos else 0) + (1 if v5 else 0) + payload_len
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


def _load(package: bytes | bytearray | Path | str | None) -> bytes:
    if package is None:
        raise UsageError("no package given (or use --clear to remove the published firmware)")
    if isinstance(package, (bytes, bytearray, memoryview)):
        return bytes(package)
    return read_input(package, "package")


def deploy(
    package: bytes | Path | str | None,
    url: str | MqttUrl,
    *,
    tls: TlsOptions = TlsOptions(),
    clear: bool = False,
    timeout: float = 60,
    progress: Callable[[int, int], None] | None = None,
    check_package: bool = True,
    varint: bool = True,
    connect_timeout: float = 10.0,
    client_id: str = "",
    mqtt_version: str = "auto",
) -> DeployRecord:
    """Publish ``package`` retained at QoS 2 on the URL's topic (``clear``: publish the empty message).

    ``timeout`` bounds the wait from PUBLISH to PUBCOMP, ``connect_timeout``
    each connection step. ``progress(done, total)`` is called from paho's thread
    with payload bytes written to the socket (an approximation of what the
    broker received: the kernel buffers some). Raises :class:`UsageError`,
    :class:`InputError`, :class:`BrokerError` or :class:`PublishError`.
    ``mqtt_version``: ``auto`` (v5, falling back to 3.1.1), ``5`` or ``3.1.1``.
    """
    t_wall = time.time()
    t0 = time.monotonic()
    if mqtt_version not in PROTOCOLS:
        raise UsageError(f"unknown MQTT version {mqtt_version!r} (use {', '.join(PROTOCOLS)})")
    target = url if isinstance(url, MqttUrl) else parse_url(url)
    if not target.topic:
        raise UsageError(f"no topic in the URL (expected e.g. {target.scheme}://host/a/test/u/4.3)")
    topic = target.topic
    report = None
    if clear:
        if package is not None:
            raise UsageError("--clear publishes the empty message: give no package")
        payload = b""
    else:
        payload = _load(package)
        if not payload:
            raise UsageError("the package is empty: an empty retained message removes the firmware (use --clear)")
        if check_package:
            from otalib.formats.package import check_package as check

            report = check(payload, varint)
    if publish_packet_size(topic, len(payload)) - 5 > MQTT_MAX_REMAINING:
        raise UsageError(f"package of {len(payload)} bytes is larger than one MQTT message can be")

    options = ConnectOptions(
        target,
        tls,
        client_id=client_id,
        timeout=connect_timeout,
        protocol=PROTOCOLS[mqtt_version],
        fallback=mqtt_version == "auto",
    )
    session = connect(options)
    try:
        record = _publish(session, topic, payload, t0, timeout, progress)
    except BaseException:
        session.close(timeout=1.0, abort=True)
        raise
    session.close(timeout=min(2.0, connect_timeout))
    total = time.monotonic() - t0
    span = record["pubcomp_s"] - record["publish_start"]
    return DeployRecord(
        url=target.without_credentials(),
        topic=topic,
        bytes=len(payload),
        retain=True,
        qos=QOS,
        t_start=t_wall,
        connect_s=session.connect_s,
        tls_handshake_s=session.tls_handshake_s,
        publish_start=record["publish_start"],
        pubrec_s=record["pubrec_s"],
        pubcomp_s=record["pubcomp_s"],
        total_s=total,
        throughput_Bps=(len(payload) / span) if span > 0 and payload else None,
        cleared=clear,
        broker_max_packet_size=session.max_packet_size,
        mqtt_version=session.mqtt_version,
        patch=report.patch if report is not None else None,
        device_patch=report.device_patch if report is not None else None,
    )


def _publish(
    session: ConnectedClient,
    topic: str,
    payload: bytes,
    t0: float,
    timeout: float,
    progress: Callable[[int, int], None] | None,
) -> dict[str, float]:
    """Send the message and wait for PUBCOMP; return the times or raise :class:`PublishError`."""
    client = session.client
    where = str(session.url)
    size = publish_packet_size(topic, len(payload), v5=session.protocol == MQTTv5)
    limit = session.max_packet_size
    if limit is not None and size > limit:
        raise PublishError(
            f"package too large for the broker: a PUBLISH of {size} bytes exceeds its maximum packet size"
            f" of {limit} bytes (nothing was sent)"
        )
    done = threading.Event()
    state: dict[str, object] = {}
    header = size - len(payload)
    base = client.otalab_sent
    total = len(payload)
    last = [-1]

    def on_sent(sent: int) -> None:
        state["written"] = min(max(sent - base, 0), size)
        if progress is not None:
            now = min(max(sent - base - header, 0), total)
            if now != last[0]:
                last[0] = now
                progress(now, total)

    def on_pubrec(_mid: int, reason: int) -> None:
        state["pubrec"] = time.monotonic() - t0
        if reason >= 0x80:
            state["refused"] = reason
            done.set()

    def on_publish(_c, _u, _mid, reason, _properties) -> None:
        state["pubcomp"] = time.monotonic() - t0
        state["pubcomp_reason"] = int(getattr(reason, "value", 0) or 0)
        done.set()

    session.disconnect_listeners.append(lambda _reason: done.set())
    client.otalab_on_sent = on_sent
    client.otalab_on_pubrec = on_pubrec
    client.on_publish = on_publish
    publish_start = time.monotonic() - t0
    if progress is not None:
        progress(0, total)
    try:
        info = client.publish(topic, payload, qos=QOS, retain=True)
    except ValueError as exc:
        raise PublishError(f"cannot publish on {topic!r}: {exc}") from None
    if info.rc != 0:
        raise PublishError(f"{where}: publish failed before sending: {_rc_text(info.rc)}")
    deadline = time.monotonic() + timeout
    while not done.is_set():
        if session.disconnected.is_set():
            break
        if not done.wait(max(0.0, min(0.5, deadline - time.monotonic()))) and time.monotonic() >= deadline:
            raise PublishError(_failure(f"timed out after {timeout:g} s waiting for PUBCOMP", state, size, where))
    if "refused" in state:
        raise PublishError(f"{where}: broker refused the message: {_reason_text(int(state['refused']))}")  # type: ignore[call-overload]
    if "pubcomp" not in state:
        error = client.otalab_sock_error
        cause = f"connection lost ({error})" if error else f"connection lost ({session.disconnect_reason})"
        raise PublishError(_failure(cause, state, size, where))
    if int(state["pubcomp_reason"]) >= 0x80:  # type: ignore[call-overload]
        raise PublishError(f"{where}: broker refused the message: {_reason_text(int(state['pubcomp_reason']))}")  # type: ignore[call-overload]
    return {
        "publish_start": publish_start,
        "pubrec_s": state.get("pubrec"),  # type: ignore[dict-item]
        "pubcomp_s": state["pubcomp"],  # type: ignore[dict-item]
    }


def _failure(cause: str, state: dict[str, object], size: int, where: str) -> str:
    written = int(state.get("written", 0))  # type: ignore[call-overload]
    if "pubrec" in state:
        return (
            f"{where}: {cause} after PUBREC, before PUBCOMP: the broker had the whole message;"
            " whether it was released is unknown, check the topic"
        )
    return f"{where}: {cause} after {written} of {size} bytes: the firmware was NOT published"


def _rc_text(rc: int) -> str:
    import paho.mqtt.client as mqtt

    return mqtt.error_string(rc)


def _reason_text(code: int) -> str:
    names = {
        0x80: "unspecified error",
        0x83: "implementation specific error",
        0x87: "not authorised to publish on this topic",
        0x90: "topic name invalid",
        0x92: "packet identifier not found",
        0x95: "packet too large",
        0x97: "quota exceeded",
        0x99: "payload format invalid",
    }
    return names.get(code, f"reason code 0x{code:02x}")
