"""Embedded pure-Python broker (amqtt 0.12) for machines without Mosquitto.

Runs as a subprocess, ``python -m otalib.broker.embedded CONFIG.json``, so its CPU
use and any crash stay out of the caller's process. Differences from Mosquitto
(also listed in ``EmbeddedBroker.notes`` so records can carry them):

- amqtt 0.12 pushes matching retained messages at QoS 0 on every CONNECT, even to a
  client that subscribed to nothing (it walks every client's subscriptions).
  Worked around here: retained messages are sent only in answer to a SUBSCRIBE.
- amqtt cannot require client certificates from its configuration (it uses
  ``CERT_OPTIONAL``). Worked around here: the TLS context is overridden to
  ``CERT_REQUIRED`` when client certificates are required.
- Users and the ACL are enforced by small plugins in this module (plain passwords
  from the 0600 config file; no password hashing).
- amqtt has no packet-size limit. Partly worked around: a PUBLISH larger than
  ``max_packet_size`` is dropped and its connection closed (as Mosquitto does), but
  only after amqtt has read it whole into memory; other packet types are not limited.
- NOT worked around: it uses about 3-4x Mosquitto's CPU per message.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from otalib.broker.base import Broker
from otalib.fileio import SECRET_MODE, write_atomic

NOTES_ALWAYS = [
    "embedded amqtt broker: retained messages are sent only on SUBSCRIBE (amqtt 0.12 pushes them at QoS 0 "
    "on every CONNECT; patched here)",
    "embedded amqtt broker: about 3-4x Mosquitto's CPU per message",
]
NOTE_PACKET_SIZE = (
    "embedded amqtt broker: max_packet_size enforced only after the whole PUBLISH was read into memory "
    "(amqtt has no packet-size limit; otalab drops the message and closes the connection)"
)
NOTE_CLIENT_CERT = "embedded amqtt broker: client certificates required via an SSL-context override (CERT_REQUIRED)"
NOTE_USERS = "embedded amqtt broker: users/ACL enforced by otalab plugins (plain passwords in a 0600 config file)"


def amqtt_version() -> str:
    """Installed amqtt version ('' if amqtt is missing)."""
    try:
        return metadata.version("amqtt")
    except metadata.PackageNotFoundError:
        return ""


class EmbeddedBroker(Broker):
    """amqtt run as ``python -m otalib.broker.embedded`` in a subprocess."""

    backend = "embedded"
    log_name = "embedded.log"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = amqtt_version()
        self.config_path = self.workdir / "embedded.json"
        self.notes = list(NOTES_ALWAYS)
        if self.max_packet_size is not None:
            self.notes.append(NOTE_PACKET_SIZE)
        if self.require_client_cert:
            self.notes.append(NOTE_CLIENT_CERT)
        if self.users:
            self.notes.append(NOTE_USERS)

    def config(self) -> dict[str, Any]:
        """The JSON configuration the subprocess reads."""
        listeners: list[dict[str, Any]] = [{"port": self.port, "tls": self.tls}]
        if self.plain_port:
            listeners.append({"port": self.plain_port, "tls": False})
        cfg: dict[str, Any] = {
            "host": self.host,
            "listeners": listeners,
            "require_client_cert": self.require_client_cert,
            "max_packet_size": self.max_packet_size,
            "users": [{"name": u.name, "password": u.password, "role": u.role, "app_id": u.app_id} for u in self.users],
        }
        if self.tls:
            assert self.pki is not None
            cfg["cafile"] = str(self.pki.ca.cert)
            cfg["certfile"] = str(self.pki.server.cert)
            cfg["keyfile"] = str(self.pki.server.key)
        return cfg

    def _command(self) -> list[str]:
        write_atomic(self.config_path, json.dumps(self.config(), indent=1).encode(), mode=SECRET_MODE)
        # not "-m": runpy warns when the package already imported this module
        code = "import sys; from otalib.broker.embedded import main; sys.exit(main())"
        return [sys.executable, "-c", code, str(self.config_path)]

    def _env(self) -> dict[str, str] | None:
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this same otalib
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


# ---------------------------------------------------------------------------
# Everything below runs inside the broker subprocess.
# ---------------------------------------------------------------------------


def filter_covers(pattern: str, topic_filter: str) -> bool:
    """True if every topic ``topic_filter`` can match is also matched by ``pattern``."""
    pat, flt = pattern.split("/"), topic_filter.split("/")
    for i, level in enumerate(pat):
        if level == "#":
            return True
        if i >= len(flt):
            return False
        if level == "+":
            if flt[i] == "#":
                return False
            continue
        if flt[i] != level:
            return False
    return len(flt) == len(pat)


def publish_packet_size(topic: str, payload_len: int, qos: int) -> int:
    """Bytes of an MQTT 3.1.1 PUBLISH packet: fixed header + topic + packet id + payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload_len
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + length_bytes + remaining


def _acl_for(users: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (write patterns, read patterns)."""
    acl = {}
    for user in users:
        if user["role"] == "deployer":
            acl[user["name"]] = (["a/#"], ["a/#"])
        else:
            acl[user["name"]] = ([], [f"a/{user['app_id']}/u/#"])
    return acl


def _plugin_classes() -> tuple[type, type, type]:
    """amqtt plugin and broker classes (imported only inside the subprocess)."""
    from amqtt.broker import Broker as AmqttBroker
    from amqtt.contexts import Action
    from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

    class LabAuthPlugin(BaseAuthPlugin):
        """Anonymous when no users are configured; else name + password must match."""

        @dataclass
        class Config:
            users: dict[str, str] = field(default_factory=dict)

        async def authenticate(self, *, session: Any) -> bool:
            users = self.config.users
            if not users:
                return True
            expected = users.get(session.username or "")
            password = session.password or ""
            if isinstance(password, bytes):
                password = password.decode(errors="replace")
            return expected is not None and password == expected

    class LabAclPlugin(BaseTopicPlugin):
        """Deployer: read/write ``a/#``; device: read ``a/<app_id>/u/#`` only."""

        @dataclass
        class Config:
            acl: dict[str, list[list[str]]] = field(default_factory=dict)

        async def topic_filtering(self, *, session: Any = None, topic: str | None = None, action: Any = None) -> bool:
            if not topic or session is None:
                return False
            rights = self.config.acl.get(session.username or "")
            if rights is None:
                return False
            write, read = rights
            if action == Action.PUBLISH:
                return any(filter_covers(p, topic) for p in write)
            return any(filter_covers(p, topic) for p in read)

    from_subscribe: contextvars.ContextVar[bool] = contextvars.ContextVar("from_subscribe", default=False)

    class LabBroker(AmqttBroker):
        """amqtt with retained-on-CONNECT fixed and client certificates optionally required."""

        require_client_cert = False
        max_packet_size: int | None = None

        def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:  # type: ignore[override]
            context = AmqttBroker._create_ssl_context(listener)
            if self.require_client_cert:
                context.verify_mode = ssl.CERT_REQUIRED
            return context

        async def _handle_subscription(self, *args: Any, **kwargs: Any) -> None:
            token = from_subscribe.set(True)
            try:
                await super()._handle_subscription(*args, **kwargs)
            finally:
                from_subscribe.reset(token)

        async def _handle_message_delivery(self, client_session: Any, handler: Any, wait_deliver: Any) -> bool:
            message = wait_deliver.result() if wait_deliver.done() and not wait_deliver.cancelled() else None
            if self.max_packet_size and message is not None and message.data is not None:
                size = publish_packet_size(message.topic or "", len(message.data), message.qos or 0)
                if size > self.max_packet_size:
                    logging.getLogger("otalab").warning(
                        "%s: PUBLISH of %d bytes exceeds max_packet_size %d: dropped, closing connection",
                        client_session.client_id,
                        size,
                        self.max_packet_size,
                    )
                    await self._stop_handler(handler)  # amqtt would keep the socket open after return False
                    return False
            return await super()._handle_message_delivery(client_session, handler, wait_deliver)

        async def _publish_retained_messages_for_subscription(self, subscription: Any, session: Any) -> None:
            if from_subscribe.get():
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return LabBroker, LabAuthPlugin, LabAclPlugin


async def _serve(cfg: dict[str, Any]) -> None:
    broker_cls, auth_cls, acl_cls = _plugin_classes()
    module = sys.modules[__name__]
    module.LabAuthPlugin = auth_cls  # type: ignore[attr-defined]
    module.LabAclPlugin = acl_cls  # type: ignore[attr-defined]
    # amqtt copies unset fields of other listeners from "default": a plain listener must be "default"
    ordered = sorted(cfg["listeners"], key=lambda listener: bool(listener["tls"]))
    listeners: dict[str, Any] = {}
    for index, listener in enumerate(ordered):
        entry: dict[str, Any] = {"type": "tcp", "bind": f"{cfg['host']}:{listener['port']}"}
        if listener["tls"]:
            entry.update(ssl=True, cafile=cfg["cafile"], certfile=cfg["certfile"], keyfile=cfg["keyfile"])
        listeners["default" if index == 0 else f"listener{index}"] = entry
    users = cfg["users"]
    plugins: dict[str, Any] = {
        f"{__name__}.LabAuthPlugin": {"users": {u["name"]: u["password"] for u in users}},
    }
    if users:
        plugins[f"{__name__}.LabAclPlugin"] = {"acl": {k: list(v) for k, v in _acl_for(users).items()}}
    broker_cls.require_client_cert = bool(cfg.get("require_client_cert"))
    broker_cls.max_packet_size = cfg.get("max_packet_size")
    broker = broker_cls({"listeners": listeners, "plugins": plugins})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    logging.getLogger("otalab").info("embedded broker ready on %s", ", ".join(e["bind"] for e in listeners.values()))
    await stop.wait()
    try:
        await asyncio.wait_for(broker.shutdown(), 3)
    except (asyncio.TimeoutError, Exception) as exc:  # shutting down anyway
        logging.getLogger("otalab").warning("shutdown: %r", exc)


def main(argv: list[str] | None = None) -> int:
    """Run the embedded broker described by the JSON file ``argv[0]`` until SIGTERM/SIGINT."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m otalib.broker.embedded CONFIG.json", file=sys.stderr)
        return 2
    cfg = json.loads(Path(args[0]).read_text())
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    asyncio.run(_serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
