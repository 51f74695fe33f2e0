"""``otalab mkfile``, ``otalab pack`` and ``otalab inspect``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from otalib.cli.common import echo_json, get_config, parse_file_at, warn
from otalib.fileio import read_input, write_atomic
from otalib.formats.ota import Rom, build_ota, resolve_modes, timestamp_to_datetime
from otalib.formats.package import pack
from otalib.formats.version import device_patch
from otalib.inspect import Report, inspect_file
from otalib.keys import DeviceKeys, load_binary_key, load_key


@click.command("mkfile")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="OTA file to write")
@click.option("-k", "--key", type=click.Path(dir_okay=False), help="key file (hex) for signing/encryption")
@click.option("-s", "--signed", is_flag=True, help="sign (Ed25519ph); a key with neither flag means signed")
@click.option("-e", "--encrypted", is_flag=True, help="encrypt (libsodium secretstream)")
@click.option("--timestamp", type=click.IntRange(min=0), help="build timestamp, ms since 1900 (reproducible builds)")
@click.option("--rom", "roms", multiple=True, required=True, metavar="FILE@ADDRESS", help="ROM image and flash address")
def mkfile(
    output: str, key: str | None, signed: bool, encrypted: bool, timestamp: int | None, roms: tuple[str, ...]
) -> None:
    """Build an OTA upgrade file from ROM images (as ``otatool.py mkfile``)."""
    signed, encrypted = resolve_modes(key is not None, signed, encrypted)
    lab_key = load_key(key) if key else None
    rom_list = []
    for spec in roms:
        path, address = parse_file_at(spec)
        rom_list.append(Rom(address, read_input(path, "ROM image")))
    data = build_ota(rom_list, lab_key, signed=signed, encrypted=encrypted, timestamp=timestamp)
    write_atomic(output, data)
    mode = "+".join(m for m, on in (("signed", signed), ("encrypted", encrypted)) if on) or "MD5 checksum"
    click.echo(f"OTA upgrade file written to {output} ({len(data)} bytes, {len(rom_list)} ROM(s), {mode})")


@click.command("pack")
@click.argument("infile", type=click.Path(dir_okay=False))
@click.argument("outfile", type=click.Path(dir_okay=False))
@click.argument("patch", required=False, type=click.IntRange(min=0))
@click.option("--varint/--no-varint", default=None, help="patch encoding: LEB128 varint (default) or one byte")
def pack_cmd(infile: str, outfile: str, patch: int | None, varint: bool | None) -> None:
    """Make a deployment package: PATCH (default: APP_VERSION_PATCH, else unix time) + firmware."""
    config = get_config()
    if varint is None:
        varint = config.ENABLE_OTA_VARINT_VERSION
    if patch is None:
        patch = config.APP_VERSION_PATCH if config.APP_VERSION_PATCH is not None else int(time.time())
    firmware = read_input(infile, "firmware file")
    data = pack(firmware, patch, varint)
    seen = device_patch(patch, varint)
    if seen != patch:
        warn(
            f"a Sming 6.1 device decodes patch {patch} as {seen} (its varint decoder adds the 7-bit groups);"
            " use a patch below 128 or --no-varint"
        )
    write_atomic(outfile, data)
    encoding = "varint" if varint else "one byte"
    click.echo(f"package written to {outfile}: patch {patch} ({encoding}), {len(firmware)} bytes of firmware")


def _render(report: Report, indent: str = "") -> list[str]:
    d = report.data
    lines: list[str] = []
    if report.kind == "sdp":
        enc = "varint" if d["varint"] else "one byte"
        lines.append(f"{indent}deployment package: patch {d['patch']} ({enc}, {d['version_bytes']} byte(s))")
        lines.append(f"{indent}  a Sming 6.1 device reads patch {d['device_patch']}")
        inner = Report(d["payload"]["kind"], {k: v for k, v in d["payload"].items() if k != "kind"})
        lines.extend(_render(inner, indent + "  "))
        return lines
    if report.kind == "ota":
        flags = (
            ", ".join(x for x, on in (("signed", d.get("signed")), ("encrypted", d.get("encrypted"))) if on)
            or "unsigned (MD5)"
        )
        lines.append(f"{indent}OTA upgrade file: {d['size']} bytes, {flags}")
        if d.get("timestamp") is not None:
            built = timestamp_to_datetime(d["timestamp"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            lines.append(f"{indent}  build timestamp {d['timestamp']} ({built} UTC)")
        for rom in d.get("roms", []):
            lines.append(f"{indent}  ROM @ {rom['address']:#010x}: {rom['size']} bytes, sha256 {rom['sha256']}")
        if d.get("error"):
            lines.append(f"{indent}  REJECTED: {d['error']} ({d.get('error_detail', '')})")
        elif d.get("verified"):
            lines.append(f"{indent}  verified ({d.get('method')})")
        else:
            lines.append(f"{indent}  NOT verified")
        return lines
    lines.append(f"{indent}ESP image ({d.get('chip')}): {d.get('size')} bytes, entry {d.get('entry', 0):#x}")
    for addr, size in d.get("segments", []):
        lines.append(f"{indent}  segment @ {addr:#010x}: {size} bytes")
    if d.get("app_id"):
        lines.append(f"{indent}  app {d['app_id']} version {d.get('app_version')}")
    lines.append(f"{indent}  checksum {'valid' if d.get('checksum_valid') else 'INVALID'}")
    if d.get("sha256_valid") is not None:
        lines.append(f"{indent}  sha256 {'valid' if d['sha256_valid'] else 'INVALID'}")
    return lines


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-k", "--key", type=click.Path(dir_okay=False), help="key file (hex) to verify/decrypt")
@click.option("--verify-key", type=click.Path(dir_okay=False), help="verify.key.bin (as a device has it)")
@click.option("--decrypt-key", type=click.Path(dir_okay=False), help="decrypt.key.bin (as a device has it)")
@click.option("--varint/--no-varint", default=None, help="patch encoding of a package (default: detect)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def inspect_cmd(
    file: str, key: str | None, verify_key: str | None, decrypt_key: str | None, varint: bool | None, as_json: bool
) -> None:
    """Recognise an .ota, .sdp or ESP image and check it as a device would; exit 0 only if verified."""
    keys: DeviceKeys | None = None
    if key:
        keys = DeviceKeys.of(load_key(key))
    if verify_key or decrypt_key:
        base = keys or DeviceKeys()
        keys = DeviceKeys(
            load_binary_key(verify_key, "verify key") if verify_key else base.verify,
            load_binary_key(decrypt_key, "decrypt key") if decrypt_key else base.decrypt,
        )
    report = inspect_file(Path(file), keys, varint)
    if as_json:
        echo_json(report.to_dict())
    else:
        for line in _render(report):
            click.echo(line)
    for message in report.warnings:
        warn(message)
    if not report.ok:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    """Add the format commands."""
    group.add_command(mkfile)
    group.add_command(pack_cmd)
    group.add_command(inspect_cmd)
