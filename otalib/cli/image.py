"""``otalab image info|demo|elf2image``: ESP images through esptool."""

from __future__ import annotations

import re
from pathlib import Path

import click

from otalib.cli.common import echo_json, warn
from otalib.errors import UsageError
from otalib.firmware.demo import make_demo_image
from otalib.firmware.image import ImageFormat, ImageInfo, elf2image, inspect_file, inspect_image
from otalib.keys import back_up
from otalib.outputs import guard_output, write_output

_SIZE_RE = re.compile(r"^(\d+)\s*([kKmM]i?[bB]?)?$")


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``64KB``, ``1M``, ``16MiB`` -> bytes."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise UsageError(f"bad size {text!r}: expected bytes, or a number with K or M (e.g. 64K, 1M)")
    value, unit = int(match.group(1)), (match.group(2) or "").lower()
    return value * (1024 * 1024 if unit.startswith("m") else 1024 if unit.startswith("k") else 1)


def format_info(info: ImageInfo, name: str = "") -> list[str]:
    """Human lines describing an image."""
    version = f" v{info.image_version}" if info.chip == "esp8266" else ""
    lines = [f"{name}: {info.chip.upper()} image{version}, {info.size} bytes" if name else f"{info.chip} image"]
    v2 = info.format is ImageFormat.ESP8266_V2
    lines.append(f"  format:   {info.format.value}" + (" (irom0 first, for rBoot)" if v2 else ""))
    lines.append(f"  entry:    {info.entry:#010x}")
    lines.append(f"  flash:    {info.flash_size or '?'} {info.flash_mode or '?'}")
    lines.append(f"  segments: {len(info.segments)}")
    for index, (addr, size) in enumerate(info.segments):
        where = "irom0, runs from flash" if v2 and index == 0 else f"load {addr:#010x}"
        lines.append(f"    {index:2d}  {where:<22s} {size:8d} bytes")
    check = "valid" if info.checksum_valid else f"INVALID (calculated {info.calculated_checksum:#04x})"
    lines.append(f"  checksum: {info.checksum:#04x} {check}")
    if v2:
        none = "none (esptool2 writes none; rBoot checks none)"
        crc = f"{info.crc32:#010x} valid" if info.crc32 is not None else none
        lines.append(f"  crc32:    {crc}")
    if info.sha256_valid is not None:
        lines.append(f"  sha256:   {'valid' if info.sha256_valid else 'INVALID'} ({info.sha256})")
    if info.app_id is not None:
        lines.append(f"  app:      {info.app_id} {info.app_version}")
    lines.append(f"  file sha256: {info.file_sha256}")
    return lines


@click.group("image")
def image_group() -> None:
    """Inspect, convert and synthesise ESP firmware images (via esptool)."""


@image_group.command("info")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--chip", help="chip of the image (default: detected from its header)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def info_cmd(file: str, chip: str | None, as_json: bool) -> None:
    """Show an image's chip, entry, segments and whether its checksum / SHA-256 are valid."""
    info = inspect_file(file, chip)
    if as_json:
        echo_json({"file": file, **info.to_dict()})
        return
    for line in format_info(info, file):
        click.echo(line)
    for message in info.warnings:
        warn(f"esptool: {message}")


@image_group.command("demo")
@click.option("--chip", required=True, help="esp8266 or esp32")
@click.option("--app-id", required=True, help="application id (APP_ID), e.g. test")
@click.option("--version", "version", required=True, help="MAJOR.MINOR.PATCH, e.g. 4.3.5")
@click.option("--size", help="pad the image to about this size (e.g. 64K, 1M)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the padding data")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="image file to write")
@click.option("--force", is_flag=True, help="replace an existing key file at OUTPUT (it is backed up first)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def demo_cmd(
    chip: str, app_id: str, version: str, size: str | None, seed: int, output: str, force: bool, as_json: bool
) -> None:
    """Write a small valid ESP image carrying a readable app id and version (no toolchain needed)."""
    replaces_key = guard_output(output, [], force=force)
    data = make_demo_image(chip, app_id, version, parse_size(size) if size else None, seed)
    backup = write_output(output, data, replaces_key)
    if backup:
        warn(f"key file {output} replaced; backed up as {backup}")
    info = inspect_image(data)
    if as_json:
        echo_json({"file": output, **info.to_dict()})
    else:
        click.echo(f"demo {info.chip} image written to {output} ({len(data)} bytes, app {app_id} {version})")


@image_group.command("elf2image")
@click.argument("elf", type=click.Path(dir_okay=True))
@click.option("--chip", required=True, help="target chip (esp8266, esp32, ...)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="image file to write")
@click.option("--version", "image_version", type=int, default=1, show_default=True, help="ESP8266 image version")
@click.option("--flash-mode", default="dio", show_default=True, help="qio, qout, dio or dout")
@click.option("--flash-size", default="4MB", show_default=True, help="flash size in the header")
@click.option("--force", is_flag=True, help="replace an existing key file at OUTPUT (it is backed up first)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def elf2image_cmd(
    elf: str, chip: str, output: str, image_version: int, flash_mode: str, flash_size: str, force: bool, as_json: bool
) -> None:
    """Convert an ELF into a flashable image with esptool's elf2image."""
    if guard_output(output, [("ELF file", elf)], force=force) and Path(output).exists():
        warn(f"key file {output} will be replaced; backed up as {back_up(Path(output))}")
    path = elf2image(elf, chip, output, image_version, flash_mode=flash_mode, flash_size=flash_size)
    info = inspect_file(path)
    if as_json:
        echo_json({"file": str(path), **info.to_dict()})
    else:
        click.echo(f"{info.chip} image written to {path} ({info.size} bytes, {len(info.segments)} segments)")


def register(group: click.Group) -> None:
    """Add ``otalab image``."""
    group.add_command(image_group)
