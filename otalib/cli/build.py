"""``otalab build``: run the firmware project's own build and report its ROM images."""

from __future__ import annotations

import os

import click

from otalib.cli.common import echo_json, warn
from otalib.errors import BuildError
from otalib.firmware_build import DEMO_HINT, RomFile, check_app_version, check_patch, run_build


def format_rom(rom: RomFile) -> str:
    """One line per ROM: path, slot, address (and where it came from), image summary."""
    address = f"{rom.address:#x}" if rom.address is not None else "?"
    line = f"  {rom.path}  slot {rom.slot} @ {address} ({rom.address_source})"
    if rom.info is not None:
        app = f", app {rom.info.app_id} {rom.info.app_version}" if rom.info.app_id else ""
        valid = "valid" if rom.info.valid else "INVALID checksum"
        line += f"  [{rom.info.chip}, {rom.info.size} bytes, {valid}{app}]"
    return line


@click.command("build")
@click.option("--project", default=".", show_default=True, type=click.Path(), help="firmware project folder")
@click.option("--command", "command", default="make", show_default=True, help="build command")
@click.option("--app-version", help="APP_VERSION as MAJOR.MINOR (default: $APP_VERSION)")
@click.option("--patch", help="APP_VERSION_PATCH (default: $APP_VERSION_PATCH)")
@click.option("--timeout", type=float, help="give up after this many seconds")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def build_cmd(
    project: str, command: str, app_version: str | None, patch: str | None, timeout: float | None, as_json: bool
) -> None:
    """Run the firmware project's own build and list the ROM images it produced.

    The default command is `make APP_VERSION=MAJOR.MINOR APP_VERSION_PATCH=N`.
    """
    app_version = app_version or os.environ.get("APP_VERSION") or None
    patch = patch or os.environ.get("APP_VERSION_PATCH") or None
    version = check_app_version(app_version) if app_version is not None else None
    patch_number = check_patch(patch) if patch is not None else None
    result = run_build(project, command, version, patch_number, timeout=timeout)
    if as_json:
        echo_json(result.to_dict())
    else:
        if not result.ok:
            for line in result.log_tail[-15:]:
                click.echo(f"  | {line}", err=True)
        if result.roms:
            click.echo(f"ROM images in {project}:")
            for rom in result.roms:
                click.echo(format_rom(rom))
        else:
            click.echo(f"no ROM images found under {os.path.join(project, 'out')}")
    if result.toolchain_missing and not result.ok:
        raise BuildError(f"the build could not find its firmware toolchain; for a demo image use: {DEMO_HINT}")
    if not result.ok:
        raise BuildError(f"build failed (exit {result.returncode}): {' '.join(result.command)}")
    if not result.roms:
        warn("the build produced no ROM images (out/<arch>/<config>/firmware/*.bin)")


def register(group: click.Group) -> None:
    """Add ``otalab build``."""
    group.add_command(build_cmd)
