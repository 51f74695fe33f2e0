"""``otalab mkfile``, ``otalab pack`` and ``otalab inspect``."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from otalib.cli.common import echo_json, get_config, parse_file_at, warn
from otalib.config import LabConfig
from otalib.errors import OtaLabError
from otalib.fileio import MAX_PACKAGE_BYTES, MAX_ROM_BYTES, read_input
from otalib.formats.kinds import detect, is_esp_image
from otalib.formats.ota import Rom, build_ota, resolve_modes
from otalib.formats.package import check_package, pack
from otalib.formats.version import DeviceProfile, device_patch
from otalib.inspect import DeviceBuild, Report, inspect_file, timestamp_text
from otalib.keys import DeviceKeys, load_binary_key, load_key
from otalib.outputs import guard_output, write_output
from otalib.vocabulary import Decision, FirmwareParser

U64 = click.IntRange(min=0, max=2**64 - 1)


@click.command("mkfile")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="OTA file to write")
@click.option("-k", "--key", type=click.Path(dir_okay=False), help="key file (hex) for signing/encryption")
@click.option("-s", "--signed", is_flag=True, help="sign (Ed25519ph); a key with neither flag means signed")
@click.option("-e", "--encrypted", is_flag=True, help="encrypt (libsodium secretstream)")
@click.option("--timestamp", type=U64, help="build timestamp, ms since 1900 (reproducible builds)")
@click.option("--rom", "roms", multiple=True, required=True, metavar="FILE@ADDRESS", help="ROM image and flash address")
@click.option("--force", is_flag=True, help="replace an existing key file at OUTPUT (it is backed up first)")
def mkfile(
    output: str,
    key: str | None,
    signed: bool,
    encrypted: bool,
    timestamp: int | None,
    roms: tuple[str, ...],
    force: bool,
) -> None:
    """Build an OTA upgrade file from ROM images (as ``otatool.py mkfile``)."""
    signed, encrypted = resolve_modes(key is not None, signed, encrypted)
    specs = [parse_file_at(spec) for spec in roms]
    inputs = [*(("ROM image", path) for path, _ in specs), *([("key file", key)] if key else [])]
    replaces_key = guard_output(output, inputs, force=force)
    lab_key = load_key(key) if key else None
    rom_list = [Rom(address, read_input(path, "ROM image", MAX_ROM_BYTES)) for path, address in specs]
    data = build_ota(rom_list, lab_key, signed=signed, encrypted=encrypted, timestamp=timestamp)
    backup = write_output(output, data, replaces_key)
    if backup:
        warn(f"key file {output} replaced; backed up as {backup}")
    for (path, _), rom in zip(specs, rom_list, strict=True):  # warnings only once the file is written
        _warn_not_esp_image(path, rom.data, "ROM")
    mode = "+".join(m for m, on in (("signed", signed), ("encrypted", encrypted)) if on) or "MD5 checksum"
    click.echo(f"OTA upgrade file written to {output} ({len(data)} bytes, {len(rom_list)} ROM(s), {mode})")


@click.command("pack")
@click.argument("infile", type=click.Path(dir_okay=False))
@click.argument("outfile", type=click.Path(dir_okay=False))
@click.argument("patch", required=False, type=click.IntRange(min=0))
@click.option("--varint/--no-varint", default=None, help="patch encoding: LEB128 varint (default) or one byte")
@click.option("--force", is_flag=True, help="replace an existing key file at OUTFILE (it is backed up first)")
def pack_cmd(infile: str, outfile: str, patch: int | None, varint: bool | None, force: bool) -> None:
    """Make a deployment package: PATCH (default: APP_VERSION_PATCH, else unix time) + firmware."""
    config = get_config()
    if varint is None:
        varint = config.ENABLE_OTA_VARINT_VERSION
    if patch is None:
        patch = config.APP_VERSION_PATCH if config.APP_VERSION_PATCH is not None else int(time.time())
    replaces_key = guard_output(outfile, [("firmware file", infile)], force=force)
    firmware = read_input(infile, "firmware file", MAX_PACKAGE_BYTES)
    data = pack(firmware, patch, varint)
    seen = device_patch(patch, varint)
    if seen != patch:
        warn(
            f"a Sming 6.1 device decodes patch {patch} as {seen} (its varint decoder adds the 7-bit groups);"
            " use a patch below 128 or --no-varint"
        )
    backup = write_output(outfile, data, replaces_key)
    if backup:
        warn(f"key file {outfile} replaced; backed up as {backup}")
    if not detect(firmware).advanced:
        _warn_not_esp_image(infile, firmware, "firmware")
    encoding = "varint" if varint else "one byte"
    click.echo(f"package written to {outfile}: patch {patch} ({encoding}), {len(firmware)} bytes of firmware")


def _warn_not_esp_image(path: str, data: bytes, what: str) -> None:
    """Warn (one line) when ``data`` is not an ESP image: a device would write it, rBoot could not boot it."""
    if is_esp_image(data):
        return
    if what == "firmware":
        try:
            packed = check_package(data).kind
        except OtaLabError:
            packed = None
        if packed is not None:
            warn(f"{path} is already a deployment package (patch + {packed}): packed again, no device parses it")
            return
        warn(f"{path} is neither an ESP image nor an OTA upgrade file: a device would write it but never boot it")
        return
    warn(f"{path} is not an ESP image (no header esptool reads): a device would write this ROM but never boot it")


def _text(value: Any) -> str:
    """A value from the file, printable on one line (control characters escaped)."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _render(report: Report, indent: str = "") -> list[str]:
    """The report as text lines, for every kind ``inspect`` recognises (total: never raises on a field)."""
    d = report.data
    if report.kind == "sdp":
        enc = "varint" if d["varint"] else "one byte"
        lines = [
            f"{indent}deployment package: patch {d['patch']} ({enc}, {d['version_bytes']} byte(s))",
            f"{indent}  a Sming 6.1 device reads patch {d['device_patch']}",
        ]
        inner = Report(d["payload"]["kind"], {k: v for k, v in d["payload"].items() if k != "kind"})
        return lines + _render(inner, indent + "  ")
    if report.kind == "ota":
        return _render_ota(d, indent)
    if report.kind == "esp-image":
        return _render_image(d, indent)
    return [f"{indent}unrecognised firmware data ({report.kind}): {d.get('size')} bytes"]


def _render_ota(d: dict[str, Any], indent: str) -> list[str]:
    flags = (
        ", ".join(x for x, on in (("signed", d.get("signed")), ("encrypted", d.get("encrypted"))) if on)
        or "unsigned (MD5)"
    )
    lines = [f"{indent}OTA upgrade file: {d['size']} bytes, {flags}"]
    if d.get("timestamp") is not None:
        lines.append(f"{indent}  build timestamp {d['timestamp']} ({timestamp_text(d['timestamp'])})")
    for rom in d.get("roms", []):
        lines.append(f"{indent}  ROM @ {rom['address']:#010x}: {rom['size']} bytes, sha256 {rom['sha256']}")
    if d.get("error"):
        lines.append(f"{indent}  REJECTED: {d['error']} ({_text(d.get('error_detail', ''))})")
    elif d.get("verified"):
        lines.append(f"{indent}  verified ({d.get('method')})")
    else:
        lines.append(f"{indent}  NOT verified")
    return lines


def _render_image(d: dict[str, Any], indent: str) -> list[str]:
    if "chip" not in d:  # esptool could not read it
        return [f"{indent}ESP image: {d.get('size')} bytes, NOT readable"]
    lines = [
        f"{indent}ESP image ({_text(d.get('chip'))}, v{d.get('image_version')}): {d.get('size')} bytes,"
        f" entry {int(d.get('entry') or 0):#x}"
    ]
    for segment in d.get("segments", []):
        lines.append(f"{indent}  segment @ {segment['address']:#010x}: {segment['size']} bytes")
    if d.get("app_id"):
        lines.append(f"{indent}  app {_text(d['app_id'])} version {_text(d.get('app_version'))}")
    lines.append(f"{indent}  checksum {'valid' if d.get('checksum_valid') else 'INVALID'}")
    if d.get("sha256_valid") is not None:
        lines.append(f"{indent}  sha256 {'valid' if d['sha256_valid'] else 'INVALID'}")
    return lines


def _render_verdict(report: Report) -> list[str]:
    verdict = report.verdict
    if verdict is None:
        return []
    line = f"device: {verdict.outcome.value}"
    if verdict.outcome is Decision.REJECTED:
        from otalib.errors import DEVICE_ERROR_TEXT, DeviceErrorCode

        text = DEVICE_ERROR_TEXT.get(DeviceErrorCode(verdict.error)) if verdict.error else None
        line += f": {verdict.error}" + (f" ({text})" if text else "")
    if verdict.reason:
        line += f" — {_text(verdict.reason)}"
    return [line]


def device_build(
    config: LabConfig,
    keys: DeviceKeys,
    *,
    signing: bool | None,
    encryption: bool | None,
    mode: str | None,
    firmware_timestamp: int | None,
    current_patch: int | None,
    profile: str,
    verify_given: bool,
) -> DeviceBuild:
    """The judging device: options, then the lab configuration's explicit settings (its OTA_KEY
    when no key option is given), then the keys (a verification key makes a signing device)."""
    keys_given = keys.verify is not None or keys.decrypt is not None
    base = DeviceBuild(keys, profile=DeviceProfile(profile))
    build = config.device_build(base, load_keys=not keys_given).with_options(
        signing=signing,
        encryption=encryption,
        advanced=None if mode is None else FirmwareParser(mode) is FirmwareParser.ADVANCED,
        firmware_timestamp=firmware_timestamp,
        current_patch=current_patch,
    )
    if build.signing is None and (verify_given or build.keys.verify is not None):
        build = replace(build, signing=True)  # a device that has a verification key rejects unsigned files
    return build


def _keys(key: str | None, verify_key: str | None, decrypt_key: str | None) -> DeviceKeys:
    keys = DeviceKeys.of(load_key(key)) if key else DeviceKeys()
    return DeviceKeys(
        load_binary_key(verify_key, "verify key") if verify_key else keys.verify,
        load_binary_key(decrypt_key, "decrypt key") if decrypt_key else keys.decrypt,
    )


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-k", "--key", type=click.Path(dir_okay=False), help="key file (hex): the device's keys")
@click.option("--verify-key", type=click.Path(dir_okay=False), help="verify.key.bin (as a device has it)")
@click.option("--decrypt-key", type=click.Path(dir_okay=False), help="decrypt.key.bin (as a device has it)")
@click.option("--varint/--no-varint", default=None, help="patch encoding of a package (default: detect)")
@click.option(
    "--signing/--no-signing",
    default=None,
    help="device built with ENABLE_OTA_SIGNING (default: lab configuration, else on when a verify key is given)",
)
@click.option(
    "--encryption/--no-encryption",
    default=None,
    help="device built with ENABLE_OTA_ENCRYPTION (default: lab configuration, else from the file)",
)
@click.option(
    "--mode",
    type=click.Choice([p.value for p in FirmwareParser]),
    default=None,
    help="device's update mode (default: ENABLE_OTA_ADVANCED if configured, else from the payload)",
)
@click.option(
    "--firmware-timestamp",
    type=U64,
    help="build timestamp of the running firmware, ms since 1900 (default: FIRMWARE_BUILD_TIMESTAMP)",
)
@click.option("--current-patch", type=click.IntRange(min=0), help="patch version the device runs")
@click.option(
    "--profile",
    type=click.Choice([p.value for p in DeviceProfile]),
    default=DeviceProfile.SMING_61.value,
    show_default=True,
    help="device behaviour (sming-6.1: additive varint decode, equal patch re-installs)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (also on failure)")
def inspect_cmd(
    file: str,
    key: str | None,
    verify_key: str | None,
    decrypt_key: str | None,
    varint: bool | None,
    signing: bool | None,
    encryption: bool | None,
    mode: str | None,
    firmware_timestamp: int | None,
    current_patch: int | None,
    profile: str,
    as_json: bool,
) -> None:
    """Recognise an .ota, .sdp or ESP image and judge it as the device would; exit 0 only if it applies it.

    Exit 0: the device would apply the file and everything in it verified (for a bare
    ESP image: esptool reads it and its checksums match). Exit 1: anything else —
    rejected (the device's error name is printed), skipped, not verifiable without the
    device's key, or not a file otalab recognises. Exit 2: bad usage.
    """
    try:
        keys = _keys(key, verify_key, decrypt_key)
        build = device_build(
            get_config(),
            keys,
            signing=signing,
            encryption=encryption,
            mode=mode,
            firmware_timestamp=firmware_timestamp,
            current_patch=current_patch,
            profile=profile,
            verify_given=keys.verify is not None,
        )
        report = inspect_file(Path(file), varint=varint, build=build)
    except OtaLabError as exc:
        if not as_json:
            raise
        echo_json({"file": file, "kind": None, "ok": False, "error": str(exc)})
        click.echo(f"otalab: error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    if as_json:
        echo_json({"file": file, **report.to_dict()})
    else:
        for line in [*_render(report), *_render_verdict(report)]:
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
