"""``otalab board``: run a virtual Sming device (OTA-over-MQTT client) until stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click

from otalib.board.sim.flash import Layout, LayoutName, big_layout, layout_from_partitions, named_layout
from otalib.board.sim.sming_console import ConsolePlatform
from otalib.cli.common import get_config, warn
from otalib.errors import UsageError
from otalib.vocabulary import FirmwareParser, TimingProfile


def register(group: click.Group) -> None:
    group.add_command(board)


@click.command("board")
@click.option(
    "--broker",
    "broker_url",
    help="mqtt[s]://[user:pw@]host[:port] of the broker (default: MQTT_URL; mqtts:// with ENABLE_SSL=1).",
)
@click.option("--app-id", default=None, help="APP_ID of the firmware (new flash; default: APP_ID, else test).")
@click.option(
    "--version", "version", default=None, help="MAJOR.MINOR[.PATCH] (new flash; default: APP_VERSION, else 4.3.0)."
)
@click.option("--patch", type=int, default=None, help="Current patch, if not in --version.")
@click.option(
    "--mode",
    type=click.Choice([p.value for p in FirmwareParser]),
    default=None,
    help="Payload parser of the firmware (default: ENABLE_OTA_ADVANCED, else advanced).",
)
@click.option("--verify-key", type=click.Path(dir_okay=False, path_type=Path), help="verify.key.bin (signing build).")
@click.option("--decrypt-key", type=click.Path(dir_okay=False, path_type=Path), help="decrypt.key.bin (encryption).")
@click.option("--profile", type=click.Choice(["sming-6.1", "reference"]), default=None, help="Default: sming-6.1.")
@click.option("--varint/--no-varint", default=None, help="ENABLE_OTA_VARINT_VERSION (default: on).")
@click.option("--allow-downgrade", is_flag=True, help="Build without downgrade protection.")
@click.option("--flash", "flash_path", type=click.Path(dir_okay=False, path_type=Path), help="Flash file (kept).")
@click.option("--chip", type=click.Choice(["esp8266", "esp32"]), default=None, help="Default: esp8266.")
@click.option("--debug-level", type=click.IntRange(0, 3), default=3, show_default=True)
@click.option("--link", help="HOST:PORT to connect to instead of the broker's (a proxy).")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate (PEM) of the broker.")
@click.option("--client-cert", type=click.Path(dir_okay=False, path_type=Path), help="Client certificate (PEM).")
@click.option("--client-key", type=click.Path(dir_okay=False, path_type=Path), help="Client key (PEM).")
@click.option("--pin", "pins", multiple=True, help="Allowed server fingerprint (SHA-1/SHA-256, spki:...).")
@click.option(
    "--write-current-slot/--no-write-current-slot",
    default=None,
    help="Standard mode writes the running slot, as the sample does (default: on for sming-6.1, off for reference).",
)
@click.option("--restart-delay", type=float, default=1.0, show_default=True, help="Seconds before the restart.")
@click.option(
    "--timing",
    default=None,
    help="Take a device's time: esp8266, esp8266-160, esp32 (erase, write, verify, reboot, reconnect as the"
    " chip does; otalib.board.sim.timing) or none (instant) [default: the lab's TIMING, else none].",
)
@click.option("--timing-seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the timing draws.")
@click.option("--hold", is_flag=True, help="Stay powered off until a line arrives on stdin (monitor attached).")
@click.option(
    "--console-link",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also reach the console pty by this path (a symlink, removed at exit): e.g. lab/console.",
)
@click.option(
    "--wait-for-monitor",
    is_flag=True,
    help="Power on only once another program opens the console, as a USB board resets when a monitor opens it"
    " (Linux; elsewhere at once).",
)
@click.option(
    "--layout",
    type=click.Choice([n.value for n in LayoutName]),
    default=None,
    help="Flash layout: esp8266 (a real one: rom0 0x2000, rom1 0x102000; the default for --chip esp8266) "
    "or host (Sming's Host emulator: rom0 0x8000, rom1 0x108000; the default for --chip esp32).",
)
@click.option(
    "--partitions",
    "partitions_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the layout from a Sming partitions.bin (written into a new flash).",
)
@click.option("--slot-mib", type=int, default=None, help="Bigger flash: two slots of N MiB, 1..16 (default: 4 MB).")
@click.option(
    "--rom",
    "rom_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="First firmware of a new flash (e.g. Sming's rom0.bin) instead of a demo image.",
)
@click.option(
    "--build-timestamp",
    type=click.IntRange(0, (1 << 64) - 1),
    default=None,
    help="Build time of a new flash's firmware, ms since 1900 as in the .ota header "
    "(default: $FIRMWARE_BUILD_TIMESTAMP, else unknown: any .ota is newer).",
)
@click.option(
    "--banners",
    type=click.Choice([p.value for p in ConsolePlatform]),
    default=None,
    help="Boot banners: host (Sming's Host emulator) or esp8266 (the ROM's, garbled at 115200, and rBoot's)"
    " [default: host; esp8266 with --serial-only].",
)
@click.option(
    "--serial-only",
    is_flag=True,
    help="Behave as a real board on a serial port: the console pty is all otalab gets (no 'subscribed:' or"
    " 'update:' lines on stdout), ESP8266 banners; reset is SIGUSR1, a power cycle SIGUSR2 (a power hook's"
    " stand-in for a relay: --power-cmd 'kill -USR2 PID').",
)
def board(
    broker_url: str | None,
    app_id: str | None,
    version: str | None,
    patch: int | None,
    mode: str | None,
    verify_key: Path | None,
    decrypt_key: Path | None,
    profile: str | None,
    varint: bool | None,
    allow_downgrade: bool,
    flash_path: Path | None,
    chip: str | None,
    debug_level: int,
    link: str | None,
    ca: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    pins: tuple[str, ...],
    write_current_slot: bool | None,
    restart_delay: float,
    slot_mib: int | None,
    hold: bool,
    console_link: Path | None,
    wait_for_monitor: bool,
    layout: str | None,
    partitions_path: Path | None,
    rom_path: Path | None,
    build_timestamp: int | None,
    banners: str | None,
    serial_only: bool,
    timing: str | None,
    timing_seed: int,
) -> None:
    """Run a virtual Sming device taking OTA updates over MQTT.

    Prints its console's pty path on the first line (``console: /dev/pts/N``), a status
    line, ``subscribed: TOPIC`` at each SUBACK of the broker, then one ``update: {...}``
    line per message (neither with ``--serial-only``; with ``--timing`` it carries the device time per
    phase: receive_s, erase_s, write_s, verify_s, switch_s, reboot_s, reconnect_s). Runs until SIGINT/SIGTERM; SIGUSR1
    resets the device, SIGUSR2 cycles its power (the flash keeps what was written).

    The device's build comes from the lab configuration (``otalab config``: APP_ID,
    APP_VERSION, ENABLE_OTA_ADVANCED/SIGNING/ENCRYPTION with OTA_KEY,
    FIRMWARE_BUILD_TIMESTAMP…); its connection from MQTT_URL, ENABLE_SSL and
    MQTT_FINGERPRINT_SHA1. Options win over both.
    """
    from otalib.board.sim.build import DeviceBuild
    from otalib.board.virtual import VirtualBoard
    from otalib.firmware.image import check_app_id
    from otalib.formats.version import Version
    from otalib.keys import DeviceKeys, load_binary_key
    from otalib.mqtt.tls import TlsOptions, parse_pin

    # everything is checked before the flash file is made
    config = get_config()
    timing_profile = TimingProfile.parse(timing if timing is not None else config.TIMING)
    if patch is not None and patch < 0:
        raise UsageError(f"bad --patch {patch}: expected a non-negative integer")
    if mode == "standard" and (verify_key or decrypt_key):
        raise UsageError("--verify-key/--decrypt-key are for --mode advanced")
    keys_given = bool(verify_key or decrypt_key)
    build = config.device_build(DeviceBuild(), load_keys=not keys_given and mode != "standard")
    if keys_given:
        build = replace(
            build,
            keys=DeviceKeys(
                load_binary_key(verify_key, "verification key") if verify_key else None,
                load_binary_key(decrypt_key, "decryption key") if decrypt_key else None,
            ),
            signing=None,
            encryption=None,
        )
    if version is not None:
        build = replace(build, version=Version.parse(version), current_patch=None)
    build = build.with_options(
        app_id=app_id,
        current_patch=patch,
        advanced=None if mode is None else FirmwareParser(mode) is FirmwareParser.ADVANCED,
        profile=profile,
        varint=varint,
        allow_downgrade=allow_downgrade or None,
        chip=chip,
        write_current_slot=write_current_slot,
        firmware_timestamp=build_timestamp,
    )
    check_app_id(build.app_id)
    flash_layout, partitions = _board_layout(build.chip.value, layout, partitions_path, slot_mib)
    build = replace(build, layout=flash_layout)
    initial_image = _read_bounded(rom_path, "firmware file", flash_layout.slot_size) if rom_path else None
    if broker_url is None:
        broker_url = config.broker_url
    if not pins:
        pins = config.pins_for(broker_url)
    config.check_client_certificate(broker_url, client_cert)
    tls = TlsOptions(ca=ca, client_cert=client_cert, client_key=client_key, pins=tuple(parse_pin(p) for p in pins))
    tmp = None
    new_flash_only = [name for name, value in (("--rom", rom_path), ("--partitions", partitions_path)) if value]
    if flash_path is not None and new_flash_only and flash_path.exists() and flash_path.stat().st_size:
        warn(f"{' and '.join(new_flash_only)} only set up a new flash: {flash_path} exists and keeps its content")
    if flash_path is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"otalab-board-{os.getpid()}-")  # swept by procs if killed
        flash_path = Path(tmp.name) / "flash.bin"
    stop = threading.Event()

    def on_update(result) -> None:
        if not serial_only:  # a side channel: a real board has only its console
            click.echo("update: " + json.dumps(result.to_dict()), nl=True)

    vboard = VirtualBoard(
        flash_path,
        broker_url,
        build,
        debug_level=debug_level,
        initial_image=initial_image,
        partitions=partitions,
        tls=tls,
        link=link,
        restart_delay=restart_delay,
        on_update=on_update,
        timing=timing_profile,
        timing_seed=timing_seed,
        banners=banners or (ConsolePlatform.ESP8266 if serial_only else ConsolePlatform.HOST),
        console_history=2_000,  # its readers are on the pty; a long update's lines are not kept in memory
    )
    if not serial_only:
        vboard.suback = _AnnouncedEvent(lambda: click.echo(f"subscribed: {vboard.device.topic} (the broker's SUBACK)"))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: vboard.reset())
    signal.signal(signal.SIGUSR2, lambda *_: vboard.power_cycle())
    try:
        if console_link is not None:
            _link_console(console_link, vboard.console_path)
        click.echo(f"console: {vboard.console_path}")
        status = {k: v for k, v in vboard.status.items() if k != "last_update"}
        click.echo("status: " + json.dumps(status))
        if hold:
            sys.stdin.readline()
        if wait_for_monitor:
            click.echo(f"waiting for a monitor on {console_link or vboard.console_path} to power on")
            _wait_for_reader(vboard.console_path, stop)
        if not stop.is_set():
            vboard.start()
        while not stop.wait(0.5):
            pass
    finally:
        vboard.stop()
        if console_link is not None:
            _unlink_console(console_link, vboard.console_path)
        if tmp is not None:
            tmp.cleanup()


class _AnnouncedEvent(threading.Event):
    """An event that calls ``announce`` each time it becomes set (the board's SUBACK, on stdout).

    The device's console says nothing at the SUBACK; this line says when an update published
    now reaches the board.
    """

    def __init__(self, announce: Callable[[], None]) -> None:
        super().__init__()
        self._announce = announce

    def set(self) -> None:
        if not self.is_set():
            self._announce()
        super().set()


def _link_console(link: Path, pty: str) -> None:
    """Point ``link`` at the console pty (replacing an old symlink, never a file)."""
    if link.exists() and not link.is_symlink():
        raise UsageError(f"--console-link {link} exists and is not a symlink: refusing to replace it")
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        os.symlink(pty, temporary)
        os.replace(temporary, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise UsageError(f"cannot make --console-link {link}: {exc.strerror or exc}") from None


def _unlink_console(link: Path, pty: str) -> None:
    """Remove ``link`` if it still points at this board's pty."""
    with contextlib.suppress(OSError):
        if os.readlink(link) == pty:
            os.unlink(link)


def _wait_for_reader(pty: str, stop: threading.Event, settle: float = 0.3) -> None:
    """Return once another process has ``pty`` open (Linux: its /proc fd links), or ``stop`` is set.

    ``settle`` lets the monitor finish opening (a serial port is flushed once opened).
    Where /proc does not list open files it returns at once.
    """
    me = str(os.getpid())
    proc = Path("/proc")
    if not (proc / me / "fd").is_dir():
        return
    while not stop.is_set():
        for fd_dir in proc.glob("[0-9]*/fd"):
            if fd_dir.parent.name == me:
                continue
            with contextlib.suppress(OSError):
                if any(os.readlink(fd_dir / fd) == pty for fd in os.listdir(fd_dir)):
                    stop.wait(settle)
                    return
        stop.wait(0.1)


def _board_layout(
    chip: str, layout: str | None, partitions_path: Path | None, slot_mib: int | None
) -> tuple[Layout, bytes | None]:
    """The flash layout the options ask for (and the partition table to write into a new flash)."""
    options = (("--layout", layout), ("--partitions", partitions_path), ("--slot-mib", slot_mib))
    chosen = [name for name, value in options if value is not None]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} both set the flash layout: give one")
    if slot_mib is not None:
        return big_layout(slot_mib), None
    if partitions_path is not None:
        table = _read_bounded(partitions_path, "partition table", 0x1000)
        return layout_from_partitions(table, source=str(partitions_path)), table
    default = LayoutName.ESP8266 if chip == "esp8266" else LayoutName.HOST
    return named_layout(layout or default), None


def _read_bounded(path: Path, what: str, limit: int) -> bytes:
    """The bytes of ``path`` (an :class:`InputError` naming it if unreadable or over ``limit`` bytes)."""
    from otalib.errors import InputError

    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {limit} bytes")
    return data
