"""``otalab config``: the effective lab configuration, and where each value came from."""

from __future__ import annotations

import re
from pathlib import Path

import click

from otalib.cli.common import echo_json
from otalib.config import KEY_SETTINGS, LabConfig, load_config
from otalib.errors import UsageError


def register(group: click.Group) -> None:
    group.add_command(config)


@click.command("config")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file to read (default: $OTALAB_CONFIG, else ./otalab.toml).",
)
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE", help="Set one, as a command's option would.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def config(path: Path | None, settings: tuple[str, ...], as_json: bool) -> None:
    """Print the effective lab configuration and where each value came from.

    Sources, later ones winning: built-in default, the configuration file, the
    environment, an option (``--set``). Key material is never printed: OTA_KEY shows
    its path; a password in MQTT_URL is masked. Below the settings: the device build
    and the broker connection the commands make of them.
    """
    options: dict[str, str] = {}
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"bad --set {item!r}: expected NAME=VALUE")
        options[name.strip()] = value
    lab = load_config(path, options=options)
    rows = [(name, _shown(lab, name, value), lab.origin(name)) for name, value in lab.items()]
    derived = _derived(lab)
    if as_json:
        echo_json(
            {
                "settings": {name: {"value": value, "from": origin} for name, value, origin in rows},
                "effective": derived,
            }
        )
        return
    width = max(len(name) for name, _, _ in rows)
    for name, value, origin in rows:
        click.echo(f"{name:<{width}} = {_text(value):<28} # {_origin_text(origin)}")
    click.echo("")
    for name, value in derived.items():
        click.echo(f"{name}: {_text(value)}")


def _shown(lab: LabConfig, name: str, value: object) -> object:
    """A setting as it may be printed: secrets stay out (OTA_KEY is a path, URL passwords are masked)."""
    if name == "MQTT_URL":
        return _masked_url(str(value))
    if name in KEY_SETTINGS:
        return _key_path(str(value))  # the path only, never the file's content
    return value


def _key_path(text: str) -> str:
    """A key setting's path; a value that looks like key material itself (hex) is not shown."""
    if re.fullmatch(r"\s*[0-9a-fA-F]{32,}\s*", text):
        return "(not shown: this looks like key material, not a path)"
    return text


def _masked_url(url: str) -> str:
    from otalib.mqtt.url import parse_url

    try:
        return str(parse_url(url))
    except UsageError:
        return "(not a valid mqtt[s]:// URL)"


def _derived(lab: LabConfig) -> dict[str, object]:
    """What the commands make of the settings: the device build, the broker connection, the key."""
    build = lab.device_build(load_keys=False)
    key = Path(_key_path(lab.OTA_KEY)).expanduser()
    mode = "advanced" if build.is_advanced else "standard"
    if build.is_advanced:
        mode += f" (signing {_flag(build.signing, 'a verification key')}, "
        mode += f"encryption {_flag(build.encryption, 'a decryption key')})"
    return {
        "device": f"{build.app_id} {build.running_version}, {mode}",
        "flash": f"{build.chip} layout {build.flash_layout.name} (rom0 {build.rom_address:#x})",
        "broker": _masked_url(lab.broker_url),
        "update topic": lab.topic,
        "pin": ", ".join(lab.pins_for(lab.broker_url)) or None,
        "OTA_KEY": f"{key} ({'present' if key.is_file() else 'missing'})",
    }


def _flag(value: bool | None, key: str) -> str:
    return {True: "on", False: "off", None: f"on when given {key}"}[value]


def _text(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _origin_text(origin: str) -> str:
    if origin in ("default", "environment", "option"):
        return {"default": "built-in default", "environment": "environment", "option": "option (--set)"}[origin]
    return f"configuration file {origin}"
