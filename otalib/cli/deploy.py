"""``otalab deploy``: publish a deployment package as ONE retained QoS 2 MQTT message."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from otalib.config import LabConfig
from otalib.errors import InputError, UsageError

if TYPE_CHECKING:
    from otalib.mqtt.publish import DeployRecord


def _progress_bar(total_hint: int):
    """A tqdm bar on stderr when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total_hint, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False)


@click.command("deploy")
@click.argument("args", nargs=-1, metavar="[PACKAGE] [URL]")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate (PEM) of the broker.")
@click.option("--client-cert", type=click.Path(dir_okay=False, path_type=Path), help="Client certificate (PEM).")
@click.option("--client-key", type=click.Path(dir_okay=False, path_type=Path), help="Client private key (PEM).")
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="FINGERPRINT",
    help="Allowed server certificate: SHA-1 or SHA-256 (hex, colons optional) or spki:SHA-256. Repeatable.",
)
@click.option("--insecure", is_flag=True, help="Do not verify the broker's certificate at all.")
@click.option("--clear", is_flag=True, help="Publish the empty retained message that removes the firmware.")
@click.option("--json", "as_json", is_flag=True, help="Print the timing record as JSON.")
@click.option(
    "--force",
    is_flag=True,
    help="Publish even if a device could not parse the package (says what is wrong with it).",
)
@click.option("--no-check", is_flag=True, hidden=True, help="Old name of --force.")
@click.option(
    "--varint/--byte", default=None, help="Patch version encoding of the package (default: ENABLE_OTA_VARINT_VERSION)."
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Publish timeout (s).")
@click.option(
    "--connect-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Connect timeout (s)."
)
@click.option(
    "--mqtt-version",
    type=click.Choice(["auto", "5", "3.1.1"]),
    default="auto",
    show_default=True,
    help="MQTT protocol (auto: v5, falling back to 3.1.1).",
)
def deploy_command(
    args: tuple[str, ...],
    ca: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    pins: tuple[str, ...],
    insecure: bool,
    clear: bool,
    as_json: bool,
    force: bool,
    no_check: bool,
    varint: bool | None,
    timeout: float,
    connect_timeout: float,
    mqtt_version: str,
) -> None:
    """Publish PACKAGE to URL: mqtt[s]://user:pass@host[:port]/a/<app>/u/<maj>.<min>[/<channel>].

    With --clear, give only URL: the empty retained message removes the firmware.
    Without URL, the lab configuration's MQTT_URL and update topic (APP_ID, APP_VERSION) are used,
    ENABLE_SSL=1 makes it mqtts://, and MQTT_FINGERPRINT_SHA1 (if set) pins an mqtts:// broker.
    """
    from otalib.cli.common import get_config
    from otalib.mqtt.publish import deploy
    from otalib.mqtt.tls import TlsOptions, parse_pin

    config = get_config()
    if varint is None:
        varint = config.ENABLE_OTA_VARINT_VERSION
    if clear:
        if len(args) > 1:
            raise UsageError("--clear takes only the URL (no PACKAGE)")
        package, url = None, (args[0] if args else None)
    else:
        if len(args) not in (1, 2):
            raise UsageError("expected PACKAGE [URL] (or --clear [URL])")
        package, url = Path(args[0]), (args[1] if len(args) == 2 else None)
    if url is None:
        url = config.deploy_url()
        click.echo(f"otalab: no URL given: using {url} ({default_url_origin(config)})", err=True)
    if not pins:
        pins = config.pins_for(url)
    tls = TlsOptions(
        ca=ca,
        client_cert=client_cert,
        client_key=client_key,
        pins=tuple(parse_pin(p) for p in pins),
        insecure=insecure,
    )
    payload: bytes | Path | None = package
    if package is not None:
        payload = _forced(package, varint) if force or no_check else _checked(package, varint)
    bar = None if clear else _progress_bar(package.stat().st_size if package and package.is_file() else 0)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)  # tqdm redraws at most every 0.1 s

    try:
        record = deploy(
            payload,
            url,
            tls=tls,
            clear=clear,
            timeout=timeout,
            progress=progress if bar is not None else None,
            check_package=not (force or no_check),
            varint=varint,
            connect_timeout=connect_timeout,
            mqtt_version=mqtt_version,
        )
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        click.echo(json.dumps(record.to_dict()))
        return
    if record.patch is not None and record.device_patch != record.patch:
        click.echo(
            f"otalab: warning: a Sming 6.1 device reads patch {record.device_patch}, not {record.patch}"
            " (Sming varint quirk: a patch >= 128 is misread)",
            err=True,
        )
    if record.cleared:
        click.echo(f"cleared retained firmware on {record.topic} at {record.url}")
    else:
        click.echo(
            f"published {record.bytes} bytes to {record.topic} at {record.url}"
            f" (retained, QoS 2, MQTT {record.mqtt_version}): {transfer_summary(record)}"
        )


def transfer_summary(record: DeployRecord) -> str:
    """Size, time and the throughput that divides exactly those two: ``262.2 KB in 28.120 ms (9324.3 KB/s)``.

    The time is the PUBLISH to PUBCOMP span (the payload's transfer and the broker's
    acknowledgement); connecting is shown apart. The rate is computed from the
    rounded size and time shown, so the three printed numbers agree.
    """
    span = record.pubcomp_s - record.publish_start
    size_kb = round(record.bytes / 1000, 1)
    if span < 1:
        shown_s, time_text = round(span, 6), f"{span * 1000:.3f} ms"
    else:
        shown_s, time_text = round(span, 3), f"{span:.3f} s"
    rate = f"{size_kb / shown_s:.1f} KB/s" if shown_s > 0 else "too fast to time"
    return f"{size_kb:.1f} KB in {time_text} ({rate}; connecting took {record.publish_start:.3f} s more)"


def default_url_origin(config: LabConfig) -> str:
    """Where ``config.deploy_url()`` comes from: per setting, the environment, the configuration file or built in."""
    file = config.source.removesuffix("+env")
    origins: dict[str, list[str]] = {}
    for name in ("MQTT_URL", "ENABLE_SSL", "APP_ID", "APP_VERSION"):
        if name == "ENABLE_SSL" and not config.ENABLE_SSL:
            continue
        if name in os.environ:
            where = "environment"
        elif name in config.explicit:
            where = f"configuration file {file}"
        else:
            where = "the built-in defaults"
        origins.setdefault(where, []).append(name)
    return "; ".join(f"{', '.join(names)} from {where}" for where, names in origins.items())


def _not_packed(data: bytes) -> str | None:
    """What an unpacked file is (an OTA file, an ESP image), or None."""
    from otalib.formats.kinds import Kind, detect

    kind = detect(data)
    if kind.advanced:
        return "an OTA upgrade file"
    if kind is Kind.ESP_IMAGE:
        return "an ESP image"
    return None


def _pack_hint(package: Path, what: str) -> str:
    return (
        f"{package} is {what}, not a deployment package: make one with"
        f" `otalab pack {package} {package.with_suffix('.sdp')} PATCH`, then deploy that"
    )


def _checked(package: Path, varint: bool) -> bytes:
    """The package's bytes; an :class:`InputError` with the way out when a device could not parse it."""
    from otalib.fileio import MAX_PACKAGE_BYTES, read_input
    from otalib.formats.package import check_package

    data = read_input(package, "package", MAX_PACKAGE_BYTES)
    if not data:
        raise UsageError(f"{package} is empty: an empty retained message removes the firmware (use --clear)")
    try:
        check_package(data, varint)
    except InputError:
        what = _not_packed(data)
        if what is not None:
            raise InputError(_pack_hint(package, what)) from None
        raise
    return data


def _forced(package: Path, varint: bool) -> bytes:
    """The package's bytes, after saying on stderr what a device would find wrong with it (``--force``)."""
    from otalib.fileio import MAX_PACKAGE_BYTES, read_input
    from otalib.formats.package import check_package

    data = read_input(package, "package", MAX_PACKAGE_BYTES)
    try:
        check_package(data, varint)
    except InputError as exc:
        what = _not_packed(data)
        problem = _pack_hint(package, what) if what else str(exc)
        click.echo(f"otalab: warning: {problem}: publishing anyway (--force)", err=True)
    return data


def register(group: click.Group) -> None:
    """Add ``otalab deploy`` to the CLI."""
    group.add_command(deploy_command)
