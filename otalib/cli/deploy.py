"""``otalab deploy``: publish a deployment package as ONE retained QoS 2 MQTT message."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from otalib.errors import UsageError


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
    and MQTT_FINGERPRINT_SHA1 (if set) pins an mqtts:// broker.
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
        package, url = None, (args[0] if args else config.deploy_url())
    else:
        if len(args) not in (1, 2):
            raise UsageError("expected PACKAGE [URL] (or --clear [URL])")
        package, url = Path(args[0]), (args[1] if len(args) == 2 else config.deploy_url())
    if not pins and config.MQTT_FINGERPRINT_SHA1 and url.startswith("mqtts://"):
        pins = (config.MQTT_FINGERPRINT_SHA1,)
    tls = TlsOptions(
        ca=ca,
        client_cert=client_cert,
        client_key=client_key,
        pins=tuple(parse_pin(p) for p in pins),
        insecure=insecure,
    )
    payload: bytes | Path | None = package
    if package is not None and (force or no_check):
        payload = _forced(package, varint)
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
        rate = f", {record.throughput_Bps / 1e6:.1f} MB/s" if record.throughput_Bps else ""
        click.echo(
            f"published {record.bytes} bytes to {record.topic} at {record.url}"
            f" (retained, QoS 2, MQTT {record.mqtt_version}) in {record.total_s:.3f} s{rate}"
        )


def _forced(package: Path, varint: bool) -> bytes:
    """The package's bytes, after saying on stderr what a device would find wrong with it (``--force``)."""
    from otalib.errors import InputError
    from otalib.fileio import read_input
    from otalib.package_check import check_package

    data = read_input(package, "package")
    try:
        check_package(data, varint)
    except InputError as exc:
        click.echo(f"otalab: warning: {exc}: publishing anyway (--force)", err=True)
    return data


def register(group: click.Group) -> None:
    """Add ``otalab deploy`` to the CLI."""
    group.add_command(deploy_command)
