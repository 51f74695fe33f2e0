"""``otalab monitor`` (serial console -> events) and ``otalab flash`` (esptool: info, flash, read back)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import click

from otalib.errors import UsageError

DEFAULT_FLASH_BAUD = 460800


def _pattern(spec: str):
    from otalib.board.console import Pattern

    name, sep, regex = spec.partition("=")
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise UsageError(f"bad --pattern {spec!r}: expected NAME=REGEX with a lower-case NAME")
    try:
        return Pattern(name, re.compile(regex))
    except re.error as exc:
        raise UsageError(f"bad --pattern {spec!r}: {exc}") from None


def _text(line) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(line.t)) + f".{int(line.t * 1000) % 1000:03d}"
    if line.event == "outcome":
        return f"{stamp} {'outcome':<24} >>> {line.fields.get('outcome')}"
    return f"{stamp} {line.event or '-':<24} {line.line}"


@click.command("monitor")
@click.argument("port")
@click.option("--baud", type=int, default=115200, show_default=True, help="Serial baud rate.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: t, event, line, fields.")
@click.option("--timeout", type=float, default=None, help="Stop after S seconds (an error if --until was not met).")
@click.option("--until", default=None, help="Stop at this event (e.g. switch_ok) or outcome (updated, rejected).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path), help="Also save what is shown.")
@click.option("--pattern", "patterns", multiple=True, metavar="NAME=REGEX", help="Extra event pattern (repeatable).")
@click.option("--no-outcomes", is_flag=True, help="Do not infer update outcomes.")
@click.option(
    "--reset",
    "reset_board",
    is_flag=True,
    help="Reset the board once the port is open (esptool's hard reset: RTS -> EN pulsed, DTR -> GPIO0 released).",
)
@click.option(
    "--power-cmd",
    metavar="CMD",
    help="Power hook: a command that cycles the board's power (e.g. 'uhubctl -a cycle -p 2'); with --power-cycle.",
)
@click.option("--power-cycle", is_flag=True, help="Cycle the board's power once the port is open (needs --power-cmd).")
def monitor_cmd(
    port: str,
    baud: int,
    as_json: bool,
    timeout: float | None,
    until: str | None,
    log_file: Path | None,
    patterns: tuple[str, ...],
    no_outcomes: bool,
    reset_board: bool,
    power_cmd: str | None,
    power_cycle: bool,
) -> None:
    """Stream a board's console from PORT (a device, pty or any pyserial URL) as parsed events.

    Outcomes are inferred even at the device's default debug level: a restart followed
    by a new running slot/version is ``updated``; a device error is ``rejected:<Error>``.
    The port opens with RTS and DTR released (a board wired RTS -> EN is not held in reset).
    """
    from otalib.board.console import ConsoleParser, OutcomeTracker
    from otalib.board.follow import Ending, follow_update
    from otalib.board.serial_board import PowerHook, SerialBoard
    from otalib.errors import BoardError
    from otalib.fileio import write_atomic

    if timeout is not None and timeout <= 0:
        raise UsageError("--timeout must be positive")
    if power_cycle and not power_cmd:
        raise UsageError("--power-cycle needs --power-cmd (the command that switches the board's power)")
    if power_cmd and not power_cycle:
        raise UsageError("--power-cmd is used by --power-cycle: give both")
    power = PowerHook(cycle=power_cmd) if power_cmd else None
    parser = ConsoleParser(extra=[_pattern(p) for p in patterns])
    shown: list[str] = []
    board = SerialBoard(port, baud=baud, parser=parser, reset_via_rts=reset_board, power=power)
    try:
        if reset_board:
            board.reset()
        if power_cycle:
            board.power_cycle()
        tracker = None if no_outcomes else OutcomeTracker()
        follow = follow_update(board, tracker, until, timeout, start=0, rearm=True, poll_s=0.2)
        for line in follow:
            text = json.dumps(line.to_json(), sort_keys=True) if as_json else _text(line)
            shown.append(text)
            click.echo(text)
            sys.stdout.flush()
        if until is not None and follow.ending is Ending.TIMEOUT:
            last = follow.last.line if follow.last is not None else "(none)"
            raise BoardError(f"timed out after {timeout:g}s waiting for {until}; last line: {last!r}")
    finally:
        board.close()
        if log_file is not None:
            write_atomic(log_file, "".join(t + "\n" for t in shown).encode())


@click.command("flash")
@click.argument("port")
@click.argument("images", nargs=-1, metavar="[FILE@ADDR]...")
@click.option("--chip", type=click.Choice(["auto", "esp8266", "esp32"]), default="auto", show_default=True)
@click.option("--baud", type=int, default=DEFAULT_FLASH_BAUD, show_default=True)
@click.option("--info", is_flag=True, help="Show the chip type, features and MAC address.")
@click.option("--read", "read_region", nargs=2, metavar="ADDR SIZE", help="Read SIZE bytes of flash at ADDR.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File for --read.")
@click.option("--no-verify", is_flag=True, help="Do not read the written flash back to compare.")
@click.option("-v", "--verbose", is_flag=True, help="Show esptool's output.")
def flash_cmd(
    port: str,
    images: tuple[str, ...],
    chip: str,
    baud: int,
    info: bool,
    read_region: tuple[str, str] | None,
    output: Path | None,
    no_verify: bool,
    verbose: bool,
) -> None:
    """Flash a real board with esptool: FILE@ADDR images, or --info, or --read ADDR SIZE -o OUT."""
    from otalib.firmware import flashing

    modes = sum([bool(images), info, read_region is not None])
    if modes != 1:
        raise UsageError("give FILE@ADDR images, or --info, or --read ADDR SIZE -o OUT (exactly one)")
    log = (lambda text: click.echo(text, err=True, nl=False)) if verbose else None
    if info:
        chip_info = flashing.chip_info(port)
        click.echo(f"chip: {chip_info.description}")
        click.echo(f"mac: {chip_info.mac}")
        if chip_info.features:
            click.echo(f"features: {', '.join(chip_info.features)}")
        if chip_info.flash_size:
            click.echo(f"flash size: {chip_info.flash_size}")
        return
    if read_region is not None:
        if output is None:
            raise UsageError("--read needs -o OUT")
        address = flashing.parse_int(read_region[0], "flash address")
        size = flashing.parse_int(read_region[1], "size")
        data = flashing.read_flash(port, address, size, output, chip=chip, baud=baud, log=log)
        click.echo(f"read {len(data)} bytes at 0x{address:x} -> {output}")
        return
    parsed = [flashing.parse_image_spec(spec) for spec in images]
    flashing.flash(port, parsed, chip=chip, baud=baud, verify=not no_verify, log=log)
    for image in sorted(parsed, key=lambda i: i.address):
        click.echo(f"0x{image.address:06x} {image.path}" + ("" if no_verify else " (verified)"))


def register(group: click.Group) -> None:
    """Add ``monitor`` and ``flash``."""
    group.add_command(monitor_cmd)
    group.add_command(flash_cmd)
