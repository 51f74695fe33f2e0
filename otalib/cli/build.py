"""``otalab build``: run the firmware project's own build and report its ROM images."""

from __future__ import annotations

import os

import click

from otalib.cli.common import echo_json, get_config, warn
from otalib.errors import BuildError
from otalib.firmware.build import DEMO_HINT, RomFile, check_app_version, check_patch, run_build


def format_rom(rom: RomFile) -> list[str]:
    """Lines of one ROM: path, every slot it serves (and where the addresses came from), image facts."""
    slots = ", ".join(f"{name} @ {addr:#x}" if addr is not None else f"{name} @ ?" for name, addr in rom.all_slots)
    lines = [f"  {rom.path}  slot{'s' if len(rom.all_slots) > 1 else ''} {slots} ({rom.address_source})"]
    info = rom.info
    if info is not None:
        app = f", app {info.app_id} {info.app_version}" if info.app_id else ""
        valid = "valid" if info.valid else "INVALID checksum"
        lines.append(
            f"    {info.chip} {info.format.value} image, entry {info.entry:#010x}, {info.size} bytes, "
            f"{len(info.segments)} segments, {valid}{app}"
        )
        lines.append(f"    sha256 {info.file_sha256}")
    elif rom.error:
        lines.append(f"    not readable as an ESP image: {rom.error}")
    return lines


@click.command("build")
@click.option("--project", default=".", show_default=True, type=click.Path(), help="firmware project folder")
@click.option("--command", "command", default="make", show_default=True, help="build command")
@click.option("--app-version", help="APP_VERSION as MAJOR.MINOR (default: the lab configuration's APP_VERSION)")
@click.option("--patch", help="APP_VERSION_PATCH (default: the lab configuration's APP_VERSION_PATCH)")
@click.option("--timeout", type=float, help="give up after this many seconds")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def build_cmd(
    project: str, command: str, app_version: str | None, patch: str | None, timeout: float | None, as_json: bool
) -> None:
    """Run the firmware project's own build and list the ROM images it produced.

    The default command is `make APP_VERSION=MAJOR.MINOR APP_VERSION_PATCH=N`; the values
    are the options', else those set in the lab configuration (otalab.toml, environment).
    """
    config = get_config()
    if app_version is None and "APP_VERSION" in config.explicit:
        app_version = config.APP_VERSION
    if patch is None and config.APP_VERSION_PATCH is not None:
        patch = str(config.APP_VERSION_PATCH)
    version = check_app_version(app_version) if app_version is not None else None
    patch_number = check_patch(patch) if patch is not None else None
    result = run_build(project, command, version, patch_number, timeout=timeout)
    variables = " ".join(
        f"{name}={value}" for name, value in (("APP_VERSION", version), ("APP_VERSION_PATCH", patch_number)) if value
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        if not result.ok:
            for line in result.log_tail[-15:]:
                click.echo(f"  | {line}", err=True)
        if result.recompiled:
            names = ", ".join(os.path.relpath(p, project) for p in result.recompiled)
            click.echo(f"{variables} reaches the firmware: recompiled {names} (they use it)")
        if result.roms:
            click.echo(f"ROM images in {project}:")
            for rom in result.roms:
                for line in format_rom(rom):
                    click.echo(line)
        else:
            click.echo(f"no ROM images found under {os.path.join(project, 'out')}")
    if result.toolchain_missing and not result.ok:
        raise BuildError(f"the build could not find its firmware toolchain; for a demo image use: {DEMO_HINT}")
    if not result.ok:
        raise BuildError(f"build failed (exit {result.returncode}): {' '.join(result.command)}")
    if not result.roms:
        warn("the build produced no ROM images (out/<arch>/<config>/firmware/*.bin)")
    if variables and not result.recompiled and not as_json:
        warn(f"no source of {project} mentions {variables.split('=')[0]}: the version may not reach the firmware")


def register(group: click.Group) -> None:
    """Add ``otalab build``."""
    group.add_command(build_cmd)
