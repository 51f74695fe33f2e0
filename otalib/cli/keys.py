"""``otalab keygen`` and ``otalab keys export|rollover``."""

from __future__ import annotations

import click

from otalib.cli.common import echo_json, parse_file_at, warn
from otalib.fileio import MAX_ROM_BYTES, read_input
from otalib.formats.ota import Rom
from otalib.keys import export_keys_with_backups, generate_key_file, load_key
from otalib.outputs import guard_output, write_output
from otalib.rollover import build_rollover


@click.command("keygen")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="key file to create (0600)")
@click.option("--force", is_flag=True, help="replace an existing key (it is backed up first)")
def keygen(output: str, force: bool) -> None:
    """Generate a new OTA key file (signing + encryption secrets, hex, mode 0600)."""
    _, backup = generate_key_file(output, force)
    if backup:
        warn(f"existing key file backed up as {backup}")
    click.echo(f"OTA key written to {output} (mode 0600)")


@click.group("keys")
def keys_group() -> None:
    """Derive and roll over OTA keys."""


@keys_group.command("export")
@click.option("-k", "--key", required=True, type=click.Path(dir_okay=False), help="key file (hex)")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="folder for the .bin keys")
@click.option("--force", is_flag=True, help="replace other key files there (they are backed up first)")
def export_cmd(key: str, output: str, force: bool) -> None:
    """Write verify.key.bin and decrypt.key.bin (0600) for the firmware build."""
    verify, decrypt, backups = export_keys_with_backups(load_key(key), output, force)
    for backup in backups:
        warn(f"replaced key file backed up as {backup}")
    click.echo(f"wrote {verify} and {decrypt} (secret, mode 0600)")


@keys_group.command("rollover")
@click.option("--old", "old_key", required=True, type=click.Path(dir_okay=False), help="key the devices have now")
@click.option("--new", "new_key", required=True, type=click.Path(dir_okay=False), help="key the new firmware embeds")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="OTA file to write")
@click.option("-s", "--signed", is_flag=True, help="sign (default when neither flag is given)")
@click.option("-e", "--encrypted", is_flag=True, help="encrypt")
@click.option("--timestamp", type=click.IntRange(min=0), help="build timestamp, ms since 1900")
@click.option("--rom", "roms", multiple=True, required=True, metavar="FILE@ADDRESS", help="ROM built with the NEW key")
@click.option("--json", "as_json", is_flag=True, help="print the check as JSON")
@click.option("--force", is_flag=True, help="replace an existing key file at OUTPUT (it is backed up first)")
def rollover_cmd(
    old_key: str,
    new_key: str,
    output: str,
    signed: bool,
    encrypted: bool,
    timestamp: int | None,
    roms: tuple[str, ...],
    as_json: bool,
    force: bool,
) -> None:
    """Build the key-rollover file: made with the OLD key, carrying firmware for the NEW one."""
    specs = [parse_file_at(spec) for spec in roms]
    inputs = [("old key", old_key), ("new key", new_key), *(("ROM image", path) for path, _ in specs)]
    replaces_key = guard_output(output, inputs, force=force)
    rom_list = [Rom(address, read_input(path, "ROM image", MAX_ROM_BYTES)) for path, address in specs]
    result = build_rollover(
        load_key(old_key), load_key(new_key), rom_list, signed=signed, encrypted=encrypted, timestamp=timestamp
    )
    backup = write_output(output, result.data, replaces_key)
    if backup:
        warn(f"key file {output} replaced; backed up as {backup}")
    if as_json:
        echo_json(result.summary())
    else:
        click.echo(f"rollover file written to {output} ({len(result.data)} bytes, made with the old key)")
    for message in result.warnings:
        warn(message)


def register(group: click.Group) -> None:
    """Add the key commands."""
    group.add_command(keygen)
    group.add_command(keys_group)
