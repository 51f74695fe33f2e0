"""``otalab broker``: run a lab MQTT broker in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from otalib.broker import BACKENDS, Broker, BrokerUser, make_broker
from otalib.errors import BrokerError, UsageError


def parse_user(spec: str, role: str, app_id: str) -> BrokerUser:
    """``NAME:PASSWORD`` as a :class:`BrokerUser`."""
    name, sep, password = spec.partition(":")
    if not sep or not name or not password:
        raise UsageError(f"bad user {spec!r}: expected NAME:PASSWORD")
    return BrokerUser(name, password, role, app_id)  # type: ignore[arg-type]


def describe(broker: Broker, client_ids: list[str]) -> list[str]:
    """The lines ``otalab broker`` prints once the broker runs (never a password or a key)."""
    lines = [f"backend: {broker.backend} {broker.version}".rstrip(), f"url: {broker.url}"]
    if broker.plain_url:
        lines.append(f"plain url: {broker.plain_url}")
        lines.append(f"warning: {broker.plain_warning}")
    for user in broker.users:
        right = "publish a/#" if user.role == "deployer" else f"read {user.read_topic}"
        lines.append(f"user: {user.name} ({user.role}, may {right})")
    if not broker.users:
        lines.append("users: anonymous access allowed")
    if broker.max_packet_size is not None:
        lines.append(f"max packet size: {broker.max_packet_size}")
    if broker.pki is not None:
        fps = broker.pki.fingerprints()
        lines += [
            f"ca: {broker.pki.ca.cert}",
            f"server cert: {broker.pki.server.cert}",
            f"fingerprint sha1: {fps['sha1']}",
            f"fingerprint sha1 (MQTT_FINGERPRINT_SHA1): {fps['sha1_c']}",
            f"fingerprint sha256: {fps['sha256']}",
            f"spki sha256: {fps['spki_sha256']}",
        ]
        if broker.require_client_cert:
            lines.append("client certificates: required")
        for device_id in client_ids:
            pair = broker.pki.client(device_id)
            lines.append(f"client cert {device_id}: {pair.cert} key: {pair.key}")
    lines.append(f"log: {broker.log_path}")
    lines.append(f"dir: {broker.workdir}")
    lines += [f"note: {note}" for note in broker.notes]
    return lines


@click.command("broker")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help="Broker to run.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port (default: a free ephemeral port).")
@click.option("--tls", is_flag=True, help="Listen on TLS only, with a lab CA.")
@click.option("--require-client-cert", is_flag=True, help="TLS clients must present a lab-CA certificate.")
@click.option(
    "--plain-port",
    type=click.IntRange(0, 65535),
    help="With --tls: also a plain listener (0: a free port); it needs no TLS and no client certificate.",
)
@click.option("--user", "users", multiple=True, metavar="NAME:PASSWORD", help="Deployer account (may publish a/#).")
@click.option(
    "--device-user", "device_users", multiple=True, metavar="NAME:PASSWORD", help="Device account (reads only)."
)
@click.option("--app-id", default="test", show_default=True, help="App id device users may read (a/<ID>/u/#).")
@click.option("--max-packet-size", type=click.IntRange(20, None), help="Largest MQTT packet the broker accepts.")
@click.option("--server-name", "server_names", multiple=True, help="Extra name/IP in the server certificate.")
@click.option("--client-cert", "client_ids", multiple=True, metavar="DEVICE_ID", help="Make a client certificate.")
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep config, CA, certificates and log here (default: a temporary folder removed at exit).",
)
def broker_command(
    backend: str,
    host: str,
    port: int,
    tls: bool,
    require_client_cert: bool,
    plain_port: int | None,
    users: tuple[str, ...],
    device_users: tuple[str, ...],
    app_id: str,
    max_packet_size: int | None,
    server_names: tuple[str, ...],
    client_ids: tuple[str, ...],
    workdir: Path | None,
) -> None:
    """Run a lab MQTT broker in the foreground; print its URLs, CA and fingerprints."""
    accounts = [parse_user(u, "deployer", app_id) for u in users]
    accounts += [parse_user(u, "device", app_id) for u in device_users]
    if client_ids and not tls:
        raise UsageError("--client-cert needs --tls")
    if plain_port is not None and not tls:
        raise UsageError("--plain-port needs --tls (without --tls the broker listens in plain on --port)")
    ids = list(dict.fromkeys(client_ids))
    if require_client_cert and not ids:
        ids = [u.name for u in accounts] or ["deployer", "device"]
    broker = make_broker(
        backend,
        host=host,
        port=port,
        tls=tls,
        require_client_cert=require_client_cert,
        plain_port=plain_port,
        users=accounts,
        max_packet_size=max_packet_size,
        workdir=workdir,
        server_names=server_names,
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker.start()
        for line in describe(broker, ids):
            click.echo(line)
        click.echo("ready (Ctrl-C to stop)")
        while not stop.wait(0.25):
            if not broker.running():
                raise BrokerError(f"{broker.backend} broker exited: {broker.log_tail()}")
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped")


def register(group: click.Group) -> None:
    """Add ``otalab broker``."""
    group.add_command(broker_command)
