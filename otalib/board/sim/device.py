"""The virtual device: rBoot + Sming's OTA-over-MQTT Upgrade sample, free of network I/O.

:class:`Device` boots from a :class:`~otalib.board.sim.flash.FlashImage` as rBoot does,
then takes one MQTT message at a time (``on_message_start/data/end``), pushing its
bytes through the SAME :class:`~otalib.formats.package.PackageParser` and
:class:`~otalib.formats.ota.OtaDecoder` that ``otalab inspect`` uses, writing the
firmware to flash as it arrives, and prints what the real device prints through a
:class:`~otalib.board.sim.sming_console.SmingConsole`.

With a :class:`~otalib.board.sim.timing.TimingModel` the device also takes a device's time: it
erases each sector before it writes to it, programs pages, hashes/decrypts the stream, verifies the
signature, switches, reboots and reconnects, each for the model's duration, spent through its
:class:`~otalib.board.sim.timing.Pacer` at the point where the device does it (a real-time pacer
sleeps the calling thread: the network thread of a virtual board then reads its socket only as fast
as the device works). Its :class:`UpdateResult` carries the device time per phase.

The running firmware's compiled-in facts (app id, version, patch, build timestamp)
are read from the app marker of the booted slot's image (otalab demo images); an
image without a marker runs with the values the Device was constructed with.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.flash import SECTOR, FlashImage, SlotWriter
from otalib.board.sim.sming_console import RST_EXTERNAL, RST_POWER_ON, SmingConsole
from otalib.board.sim.timing import Pacer, TimingModel, VirtualClock
from otalib.errors import BoardError, DeviceError, DeviceErrorCode, ImageError, InputError
from otalib.formats.kinds import ESP8266_V2_MAGIC, ESP_IMAGE_MAGIC, Kind, detect
from otalib.formats.ota import OtaDecoder, OtaDone, OtaEvent, OtaHeader, RomData, RomStart, Verified
from otalib.formats.package import PackageParser, PatchRead, PayloadData
from otalib.formats.prehash import PrehashPool
from otalib.formats.version import DeviceProfile, Version, topic_for
from otalib.vocabulary import Decision, DeviceState, FirmwareParser

#: Largest image whose checksum the standard-mode boot checks (bigger ones are assumed intact).
CHECKSUM_LIMIT = 4 * 1024 * 1024
#: Errors the device finds only once the whole file is in (its end-of-message callback still runs).
END_OF_FILE_ERRORS = frozenset({DeviceErrorCode.VerificationFailed, DeviceErrorCode.NoRomFound})
#: Crash/reboot cycles printed for an image that fails to start, before the board gives up.
CRASH_LOOPS = 3


@dataclass(frozen=True)
class BootResult:
    """What one boot did: the slot and firmware running, or why nothing runs."""

    booted: bool
    slot: int | None
    app_id: str | None = None
    version: str | None = None
    patch: int | None = None
    build_timestamp: int | None = None
    reason: str | None = None  # "no good rom", "crash" when not booted
    tried: tuple[int, ...] = ()


@dataclass(frozen=True)
class UpdateResult:
    """What one MQTT message did.

    ``outcome``: the device's :class:`~otalib.vocabulary.Decision`: ``applied`` (boot slot
    switched, ``restart`` pending), ``skipped`` (older patch, nothing written), ``rejected``
    (device ``error``), ``abandoned`` (the connection dropped mid-message), ``ignored``
    (empty message / not running).

    ``receive_s`` … ``reconnect_s``: device time per phase (a device with a timing model; None
    otherwise): waiting for data, sector erases, page programs, the stream's crypto and the final
    signature check (``verify_s``), the boot slot switch, and — for an applied update — the reboot
    and the Wi-Fi + MQTT reconnect the device is about to spend.
    """

    outcome: Decision
    patch: int | None = None
    error: str | None = None
    target_slot: int | None = None
    boot_slot: int | None = None
    payload_bytes: int = 0
    restart: bool = False
    detail: str = ""
    receive_s: float | None = None
    erase_s: float | None = None
    write_s: float | None = None
    verify_s: float | None = None
    switch_s: float | None = None
    reboot_s: float | None = None
    reconnect_s: float | None = None

    @property
    def device_time(self) -> dict[str, float]:
        """The device-time phases that were measured (name -> seconds)."""
        return {name: value for name in _TIME_FIELDS if (value := getattr(self, name)) is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the decision as its name)."""
        return {**asdict(self), "outcome": self.outcome.value}


_TIME_FIELDS = ("receive_s", "erase_s", "write_s", "verify_s", "switch_s", "reboot_s", "reconnect_s")


@dataclass
class _Update:
    parser: PackageParser
    length: int
    received: int = 0
    patch: PatchRead | None = None
    target_slot: int | None = None
    writer: SlotWriter | None = None
    decoder: OtaDecoder | None = None
    error: DeviceError | None = None
    #: the payload parser failed mid-stream: the rest of the message is ignored, no end-of-message callback
    abandoned: bool = False
    too_large: bool = False
    payload_bytes: int = 0
    printed_sig: bool = False
    notes: list[str] = field(default_factory=list)
    #: device time spent per phase (erase_s, write_s, verify_s, switch_s) and when the message started
    spent: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    #: the patch version was read and accepted: further chunks go to the payload without the parser's events
    streaming: bool = False


#: States in which the firmware's TCP stack prints what it receives.
_ONLINE = frozenset({DeviceState.RUNNING, DeviceState.RECEIVING, DeviceState.RESTART_PENDING})


class Device:
    """A Sming device running the OTA-over-MQTT Upgrade sample (no network I/O here).

    ``build`` (a :class:`~otalib.board.sim.build.DeviceBuild`) is how its firmware was built:
    ``standard`` mode (raw image) when ``build.advanced`` is False, else ``advanced``
    (``.ota``; signed when it has a verification key, encrypted when it has a decryption
    key, as the ENABLE_OTA_SIGNING / ENABLE_OTA_ENCRYPTION build flags); the profile
    (``sming-6.1``: the framework's quirks, or ``reference``); ``write_current_slot``
    (standard mode): the sample's bug of writing into the running slot while switching
    to the other one (None: on for ``sming-6.1``). Its app id, version and build
    timestamp are the fallbacks for images without an app marker.
    """

    def __init__(
        self,
        flash: FlashImage,
        build: DeviceBuild | None = None,
        *,
        debug_level: int = 3,
        console: SmingConsole | None = None,
        chip_id: int = 0xC001BEAF,
        flash_file_name: str = "flash.bin",
        timing: TimingModel | None = None,
        pacer: Pacer | None = None,
        prehash_pool: PrehashPool | None = None,
    ) -> None:
        """``timing``: the device's timing model (None: instant); ``pacer``: how its time is spent
        (default a :class:`~otalib.board.sim.timing.VirtualClock`, which only counts);
        ``prehash_pool``: share the signature's hashing with devices taking the same bytes (a fleet)."""
        self.prehash_pool = prehash_pool
        build = build or DeviceBuild()
        self.build = build
        self.flash = flash
        self.default_app_id = build.app_id
        self.default_version = build.running_version
        self.profile = build.profile
        self.mode = build.parser
        self.keys = build.device_keys
        self.varint = build.varint
        write_current_slot = build.write_current_slot
        if write_current_slot is None:
            write_current_slot = self.profile is DeviceProfile.SMING_61
        self.write_current_slot = write_current_slot
        self.allow_downgrade = build.allow_downgrade
        self.default_build_timestamp = build.firmware_timestamp or 0
        self.chip_id = chip_id
        self.flash_file_name = flash_file_name
        self.console = console or SmingConsole(lambda _text: None, debug_level)
        self.console.debug_level = debug_level
        self.state: DeviceState = DeviceState.OFF
        self.boot_count = 0
        self.updates = 0
        self.last_update: UpdateResult | None = None
        self.boot_result: BootResult | None = None
        self._update: _Update | None = None
        self._boot_t = time.monotonic()
        self.console.clock_us = self._clock_us
        self.conn_id = "5660c5c0"  # the TCP connection's id as the device prints it (a pointer)
        self.timing = timing
        self.pacer: Pacer = pacer or VirtualClock()
        #: an applied update's reboot and reconnect (Wi-Fi, MQTT) times, drawn at its end, spent at the restart
        self._planned: tuple[float, float, float] | None = None

    # -- identity of the running firmware --
    @property
    def slot(self) -> int | None:
        return self.boot_result.slot if self.boot_result and self.boot_result.booted else None

    @property
    def app_id(self) -> str:
        return (self.boot_result and self.boot_result.app_id) or self.default_app_id

    @property
    def version(self) -> Version | None:
        if self.boot_result is None or not self.boot_result.booted:
            return None
        return Version.parse(self.boot_result.version) if self.boot_result.version else self.default_version

    @property
    def patch(self) -> int | None:
        if self.boot_result is None or not self.boot_result.booted:
            return None
        if self.boot_result.patch is not None:
            return self.boot_result.patch
        version = self.version
        return version.patch if version else None

    @property
    def build_timestamp(self) -> int:
        bt = self.boot_result.build_timestamp if self.boot_result else None
        return self.default_build_timestamp if bt is None else bt

    @property
    def topic(self) -> str:
        version = self.version or self.default_version
        return topic_for(self.app_id, version)

    @property
    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot: profile, mode, state, slot, version, patch, …"""
        version = self.version
        return {
            "profile": self.profile.value,
            "mode": self.mode.value,
            "state": self.state.value,
            "slot": self.slot,
            "app_id": self.app_id,
            "version": str(version) if version else None,
            "patch": self.patch,
            "build_timestamp": self.build_timestamp,
            "topic": self.topic if version else None,
            "signed": self.keys.verify is not None if self.mode is FirmwareParser.ADVANCED else None,
            "encrypted": self.keys.decrypt is not None if self.mode is FirmwareParser.ADVANCED else None,
            "write_current_slot": self.write_current_slot,
            "boot_count": self.boot_count,
            "updates": self.updates,
            "last_update": self.last_update.to_dict() if self.last_update else None,
        }

    def _clock_us(self) -> int:
        return int((time.monotonic() - self._boot_t) * 1_000_000)

    # -- boot (rBoot + the sample's init) --
    def boot(self, rst_cause: int = RST_POWER_ON) -> BootResult:
        """Power on / restart: rBoot picks a bootable slot, the firmware prints its banner and info.

        ``rst_cause``: what the chip ROM reports (1 power on, 2 the reset pin or a restart)."""
        self.console.chip_start(rst_cause)
        self._update = None
        if self.timing is not None and self.boot_count > 0:  # the first power-on is the lab's set-up
            planned = self._planned
            self.pacer.spend(planned[0] if planned else self.timing.boot())
        self._boot_t = time.monotonic()
        self.boot_count += 1
        layout = self.flash.layout
        config = self.flash.boot_config()
        if config is None or config.roms != layout.roms:
            config = self.flash.default_boot_config()
            self.flash.write_boot_config(config)
        count = len(config.roms)
        rom = config.current_rom
        tried = [rom]
        while not _header_ok(self.flash.slot_head(rom, 16)):
            self.console.serial(f"Rom {rom} is bad.\r\n")
            rom = (rom - 1) % count
            if rom == config.current_rom:
                self.console.serial("No good rom available.\r\n")
                return self._bricked("no good rom", tuple(tried))
            tried.append(rom)
        if rom != config.current_rom:
            self.flash.set_current_rom(rom)
        marker = _read_marker(self.flash.slot_head(rom, 0x2000))
        note = {} if marker else self.flash.slot_note(rom)  # a real ROM: what the board noted at install
        result = BootResult(
            True,
            rom,
            marker.get("app_id") if marker else None,
            marker.get("version") if marker else None,
            marker.get("patch") if marker else note.get("patch"),
            _build_timestamp(marker, note),
            tried=tuple(tried),
        )
        self.console.banner(self.flash_file_name, layout.rom_table, current_slot=rom, flash_size=self.flash.size)
        if self.mode is FirmwareParser.STANDARD and _checksum_bad(self.flash, rom):
            for _ in range(CRASH_LOOPS):
                self.console.serial(
                    "\r\nFatal exception 0(IllegalInstructionCause):\r\n"
                    "epc1=0x40100004, epc2=0x00000000, epc3=0x00000000, excvaddr=0x00000000, depc=0x00000000\r\n"
                    "\r\nets Jan  8 2013,rst cause:2, boot mode:(3,6)\r\n\r\n"
                )
            return self._bricked("crash", tuple(tried), slot=rom)
        self.boot_result = result
        self.state = DeviceState.RUNNING
        version = self.version
        assert version is not None
        self.console.show_info(self.chip_id, layout.rom_table, rom, layout.roms[rom], version.major_minor)
        return result

    def _note_installed(self, slot: int, decoder: OtaDecoder, patch: int | None) -> None:
        """Keep the installed ``.ota``'s timestamp (and the package's patch) for the slot: a real ROM's
        compiled-in ones are unreadable to the board."""
        header = getattr(decoder, "header", None)
        if header is not None:
            self.flash.note_build_timestamp(slot, header.timestamp, patch)

    def _bricked(self, reason: str, tried: tuple[int, ...], slot: int | None = None) -> BootResult:
        self.state = DeviceState.BRICKED
        self.boot_result = BootResult(False, slot, reason=reason, tried=tried)
        return self.boot_result

    def connecting(self, host: str = "192.168.13.1", port: int = 1883) -> None:
        """The network is up and the MQTT client starts: the sample's lines before its first message."""
        if self.state is not DeviceState.RUNNING:
            return
        self.conn_id = f"{0x5660C5C0 + 0x1000 * (self.boot_count % 64):08x}"
        planned, self._planned = self._planned, None
        timed = self.timing is not None and self.boot_count > 1
        if timed:
            assert self.timing is not None
            self.pacer.spend(planned[1] if planned else self.timing.wifi())
        self.console.ip_change()
        self.console.checking()
        self.console.mqtt_connecting(self.conn_id, host, port)
        self.console.subscribing(self.topic)
        # the sample prints this when the subscription is queued, before the TCP connection is up
        self.console.subscribed(self.topic)
        if timed:  # connect and subscribe: spent before the board's client connects
            assert self.timing is not None
            self.pacer.spend(planned[2] if planned else self.timing.mqtt_connect())

    def tcp_connected(self, ssl: bool = False) -> None:
        """The TCP (and TLS) connection to the broker is up."""
        self.console.tcp_connected(self.conn_id, ssl)

    def segment_received(self, size: int) -> None:
        """The TCP stack handed over a segment of ``size`` bytes (after its data was processed)."""
        if self.state in _ONLINE:
            self.console.tcp_received(self.conn_id, size)

    def restart(self) -> BootResult:
        """``System.restart()``: the Host emulator's exit lines, then a new boot."""
        self.console.normal_exit(self.flash_file_name)
        return self.boot(RST_EXTERNAL)

    # -- one MQTT message --
    def on_message_start(self, length: int) -> None:
        """A PUBLISH of ``length`` payload bytes starts (a previous unfinished one is abandoned)."""
        if self._update is not None:
            self.on_message_abort()
        if self.state is not DeviceState.RUNNING:
            self._update = None
            return
        self._update = _Update(PackageParser(self.patch, self.varint, self.profile), length)
        self._update.started = self.pacer.now()
        self.state = DeviceState.RECEIVING

    def on_message_data(self, chunk: bytes) -> None:
        """The next chunk of the message, as TCP data arrives."""
        update = self._update
        if update is None or not chunk:
            return
        update.received += len(chunk)
        if update.abandoned:
            return
        if update.streaming:  # past the patch version: the chunk is all payload (the hot path)
            update.parser.take_payload(len(chunk))
            self._payload(update, chunk if chunk.__class__ is bytes else bytes(chunk))
            return
        try:
            events = update.parser.feed(chunk)
        except InputError as exc:  # patch version too long
            update.notes.append(str(exc))
            update.error = update.error or DeviceError(DeviceErrorCode.InvalidFormat, str(exc))
            return
        for event in events:
            if isinstance(event, PatchRead):
                update.patch = event
                if event.accepted:
                    self._open_stream(update, update.length - event.version_bytes)
                    update.streaming = True
            elif isinstance(event, PayloadData):
                self._payload(update, event.data)

    def on_segments(self, data: bytes, sizes: Sequence[int], wires: Sequence[int]) -> None:
        """Several TCP segments handed over at once: ``data`` their bytes (``sizes``: each one's), each
        followed by its TCP lines (``wires``: each one's size on the wire, for those reported now).

        The same as :meth:`on_message_data` then :meth:`segment_received` per segment; where nothing
        printed depends on the split (ROM content in one ROM, a standard image within its slot, no
        timing model) the data is taken in one step and the segments' lines printed after it."""
        update = self._update
        if update is not None and len(data) <= self._silent_room(update):
            update.received += len(data)
            update.parser.take_payload(len(data))
            if update.decoder is None:  # standard mode: one line per segment with the running total
                assert update.writer is not None
                total = update.writer.written
                self._write(update, data)
                update.payload_bytes += len(data)
                totals = [total := total + size for size in sizes]
            else:
                self._payload(update, data)
                totals = []
            if self.state in _ONLINE:
                self.console.segments_received(self.conn_id, wires, totals)
            return
        offset = 0
        for i, size in enumerate(sizes):
            self.on_message_data(data[offset : offset + size])
            offset += size
            if i < len(wires):
                self.segment_received(wires[i])

    def _silent_room(self, update: _Update) -> int:
        """Payload bytes the device can take in one step without printing between segments (0: none)."""
        if not update.streaming or update.abandoned or update.error is not None or update.too_large:
            return 0
        if self.timing is not None:  # device time is spent per segment
            return 0
        if update.decoder is not None:
            return update.decoder.silent_room()
        writer = update.writer
        return writer.size - writer.written if writer is not None else 0

    def on_message_end(self) -> UpdateResult:
        """The message is complete: switch ROM (and ask for a restart) or report why not."""
        update = self._update
        self._update = None
        if update is None:
            return UpdateResult(Decision.IGNORED, detail="not running or no message")
        if self.state is DeviceState.RECEIVING:
            self.state = DeviceState.RUNNING
        if update.abandoned:  # the parser failed mid-stream: the end-of-message callback never runs
            return self._done(self._rejected(update), update)
        if update.length == 0:  # the sample's parser opens no stream and skips it silently: not a fault
            return self._done(
                UpdateResult(Decision.IGNORED, detail="empty message (the retained update was cleared)"), update
            )
        try:
            end = update.parser.end_of_input()
        except InputError as exc:
            return self._done(UpdateResult(Decision.IGNORED, detail=str(exc)), update)
        patch = update.patch.patch if update.patch else None
        if not end.accepted:
            return self._done(UpdateResult(Decision.SKIPPED, patch, payload_bytes=end.payload_bytes), update)
        if update.too_large:
            return self._done(
                UpdateResult(
                    Decision.REJECTED, patch, DeviceErrorCode.RomTooLarge.value, update.target_slot, detail="no stream"
                ),
                update,
            )
        if self.mode is FirmwareParser.STANDARD:
            return self._done(self._switch_standard(update, patch), update)
        return self._done(self._switch_advanced(update, patch), update)

    def on_message_abort(self) -> UpdateResult:
        """The connection dropped mid-message: the device drops its stream (no switch)."""
        update = self._update
        self._update = None
        if self.state is DeviceState.RECEIVING:
            self.state = DeviceState.RUNNING
        if update is None:
            return UpdateResult(Decision.IGNORED)
        if update.abandoned:
            return self._done(self._rejected(update), update)
        result = UpdateResult(
            Decision.ABANDONED,
            update.patch.patch if update.patch else None,
            target_slot=update.target_slot,
            payload_bytes=update.payload_bytes,
            detail=f"connection lost after {update.received} of {update.length} bytes",
        )
        result = self._with_times(result, update)
        self.last_update = result
        return result

    def _rejected(self, update: _Update) -> UpdateResult:
        """The result of a message rejected with ``update.error``."""
        assert update.error is not None
        return UpdateResult(
            Decision.REJECTED,
            update.patch.patch if update.patch else None,
            update.error.code.value,
            update.target_slot,
            payload_bytes=update.payload_bytes,
            detail=update.error.detail,
        )

    def _done(self, result: UpdateResult, update: _Update | None = None) -> UpdateResult:
        if result.restart and self.timing is not None:
            self._planned = (self.timing.boot(), self.timing.wifi(), self.timing.mqtt_connect())
        result = self._with_times(result, update)
        self.updates += 1
        self.last_update = result
        if result.restart:
            self.state = DeviceState.RESTART_PENDING
        return result

    # -- device time --
    def _spend(self, update: _Update, phase: str, seconds: float) -> None:
        """Spend ``seconds`` of device time on ``phase`` of ``update`` (nothing without a timing model)."""
        if self.timing is None or seconds <= 0:
            return
        update.spent[phase] = update.spent.get(phase, 0.0) + seconds
        self.pacer.spend(seconds)

    def _with_times(self, result: UpdateResult, update: _Update | None) -> UpdateResult:
        """``result`` with the device time ``update`` spent (unchanged without a timing model)."""
        if self.timing is None or update is None:
            return result
        spent = update.spent
        busy = sum(spent.values())
        times: dict[str, float | None] = {
            "receive_s": max(0.0, self.pacer.now() - update.started - busy),
            **{name: spent.get(name, 0.0) for name in ("erase_s", "write_s", "verify_s", "switch_s")},
        }
        if result.restart and self._planned is not None:
            reboot, wifi, mqtt = self._planned
            times["reboot_s"], times["reconnect_s"] = reboot, wifi + mqtt
        return dataclasses.replace(result, **times)

    def _write(self, update: _Update, data: bytes | memoryview) -> None:
        """Write ``data`` through the slot writer: each new sector erased first, then its pages programmed
        (the device time of both spent as the device spends it)."""
        writer = update.writer
        assert writer is not None
        timing = self.timing
        if timing is not None:
            written, n = writer.written, len(data)
            if written + n > writer.size:
                writer.write(data)  # raises: beyond the slot
            end = writer.start + written + n
            if end > writer.erased_to:  # a new sector: erased first
                self._spend(update, "erase_s", timing.erase_sectors(math.ceil((end - writer.erased_to) / SECTOR)))
            pages = timing.pages(written + n) - timing.pages(written)
            writer.write(data)
            self._spend(update, "write_s", timing.program_pages(pages))
            return
        writer.write(data)

    # -- streaming --
    def _open_stream(self, update: _Update, payload_size: int) -> None:
        running = self.slot
        assert running is not None
        layout = self.flash.layout
        if self.mode is FirmwareParser.STANDARD:
            target = running if self.write_current_slot else layout.other_slot(running)
            update.target_slot = target
            start, end = layout.slot_range(target)
            if payload_size > end - start:
                update.too_large = True
                return
            update.writer = SlotWriter(self.flash, start, end - start)
            return
        target = layout.other_slot(running)
        update.target_slot = target
        start, end = layout.slot_range(target)
        update.decoder = OtaDecoder(
            target_address=start,
            slot_size=end - start,
            verify_key=self.keys.verify,
            decrypt_key=self.keys.decrypt,
            encrypted=self.keys.decrypt is not None,
            expect_signed=self.keys.verify is not None,
            current_timestamp=None if self.allow_downgrade else self.build_timestamp,
            prehash_pool=self.prehash_pool,
        )

    def _payload(self, update: _Update, data: bytes) -> None:
        update.payload_bytes += len(data)
        if update.too_large or update.error is not None:
            return
        if update.decoder is None and update.writer is not None:  # standard mode: the raw image
            try:
                self._write(update, data)
            except BoardError as exc:
                update.error = DeviceError(DeviceErrorCode.FlashWriteFailed, str(exc))
                return
            self.console.ota_write(update.writer.written)
            return
        decoder = update.decoder
        if decoder is None:
            return
        if self.timing is not None:  # the stream's hash / checksum and decryption, as the bytes come in
            seconds = self.timing.stream_crypto(
                len(data), signed=self.keys.verify is not None, encrypted=self.keys.decrypt is not None, checksum=True
            )
            self._spend(update, "verify_s", seconds)
        try:  # the events completed before an error come first, then the error
            self._ota_events(update, decoder.feed(data))
        except DeviceError as exc:
            self._ota_error(update, exc)

    def _ota_events(self, update: _Update, events: Iterable[OtaEvent]) -> None:
        console = self.console
        for event in events:
            if event.__class__ is RomData:  # the hot path: ROM content
                if event.selected and update.writer is not None:
                    try:
                        self._write(update, event.data)
                    except BoardError as exc:
                        self._ota_error(update, DeviceError(DeviceErrorCode.FlashWriteFailed, str(exc)))
                        return
            elif isinstance(event, OtaHeader):
                console.build_timestamps(self.build_timestamp, event.timestamp)
                if self.allow_downgrade or event.timestamp >= self.build_timestamp:
                    console.starting_upgrade(event.rom_count)
            elif isinstance(event, RomStart):
                if event.selected:
                    assert update.target_slot is not None
                    start, end = self.flash.layout.slot_range(update.target_slot)
                    console.update_slot(update.target_slot, start, start + event.size)
                    update.writer = SlotWriter(self.flash, start, end - start)
                else:
                    console.skip_rom(event.address, event.address + event.size)
            elif isinstance(event, Verified):
                self._print_signature(update)
                console.rom_update_complete()
            elif isinstance(event, OtaDone):
                pass

    def _print_signature(self, update: _Update) -> None:
        decoder = update.decoder
        if decoder is not None and decoder.last_digest is not None and not update.printed_sig:
            update.printed_sig = True
            self.console.signature(decoder.last_digest)

    def _ota_error(self, update: _Update, exc: DeviceError) -> None:
        """The stream's error: printed once. Errors found at the end of the file (signature/checksum,
        no ROM) leave the message to its end; any other fails the payload parser mid-stream and
        the device abandons the message (no ``Got error``, no ``Switching failed!``)."""
        if update.error is not None:
            return
        update.error = exc
        if exc.code is DeviceErrorCode.VerificationFailed:
            self._print_signature(update)
            # the device erases the first sector of the freshly written slot so it never boots
            if update.target_slot is not None:
                self.flash.erase_slot_header(update.target_slot)
        elif exc.code not in END_OF_FILE_ERRORS:
            update.abandoned = True
        self.console.device_error(exc.code)

    # -- end of message --
    def _switch_standard(self, update: _Update, patch: int | None) -> UpdateResult:
        running = self.slot
        assert running is not None
        layout = self.flash.layout
        if update.error is not None or update.writer is None:
            code = update.error.code.value if update.error else DeviceErrorCode.Internal.value
            self.console.switching_failed()
            return UpdateResult(Decision.REJECTED, patch, code, update.target_slot, payload_bytes=update.payload_bytes)
        after = layout.other_slot(running)
        if self.timing is not None:
            self._spend(update, "switch_s", self.timing.switch())
        self.flash.set_current_rom(after)
        self.console.swapping(running, layout.roms[running], after, layout.roms[after])
        self.console.switching_ok()
        return UpdateResult(
            Decision.APPLIED, patch, None, update.target_slot, after, update.payload_bytes, restart=True
        )

    def _switch_advanced(self, update: _Update, patch: int | None) -> UpdateResult:
        decoder = update.decoder
        assert decoder is not None
        if update.error is None:
            if self.timing is not None and self.keys.verify is not None:
                self._spend(update, "verify_s", self.timing.verify_signature())  # Ed25519 over the file's hash
            try:
                decoder.end_of_input()
            except DeviceError as exc:
                self._ota_error(update, exc)
        if update.error is None and decoder.selected_rom is None:
            self._ota_error(update, DeviceError(DeviceErrorCode.NoRomFound))
        if update.error is not None:
            self.console.got_error(update.error.code)
            self.console.switching_failed()
            return UpdateResult(
                Decision.REJECTED,
                patch,
                update.error.code.value,
                update.target_slot,
                payload_bytes=update.payload_bytes,
                detail=update.error.detail,
            )
        assert update.target_slot is not None
        self._note_installed(update.target_slot, decoder, patch)
        if self.timing is not None:
            self._spend(update, "switch_s", self.timing.switch())
        self.flash.set_current_rom(update.target_slot)
        self.console.rom_activated(update.target_slot)
        self.console.switching_ok()
        return UpdateResult(
            Decision.APPLIED, patch, None, update.target_slot, update.target_slot, update.payload_bytes, restart=True
        )


# -- image checks (what rBoot and the chip look at) --


def _header_ok(head: bytes) -> bool:
    """rBoot's check: an ESP image header (v1 with 1..16 segments, or v2 as Sming's esptool2 writes)."""
    return detect(head) is Kind.ESP_IMAGE


def _build_timestamp(marker: dict | None, note: dict) -> int | None:
    """The running firmware's build time: compiled into a demo image's marker, else the one noted
    for the slot (the ``.ota`` that installed it, or given when it was flashed); None: unknown."""
    stamp = marker.get("build_timestamp") if marker else None
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        return stamp
    return note.get("timestamp")


def _read_marker(head: bytes) -> dict | None:
    from otalib.firmware.image import read_app_marker

    return read_app_marker(head, search_limit=len(head))  # garbage in a slot reads as no marker


def _image_length(flash: FlashImage, start: int, limit: int) -> int | None:
    """Bytes to read for the ESP image at ``start``, from its segment headers (None: unknown/too big).

    The header is 8 bytes (ESP8266) or 24 (ESP32 family, then a SHA-256 may follow);
    both walks are tried and the longer plausible one is read (esptool ignores the rest).
    """
    head = flash.read(start, 24)
    if head[0] == ESP8266_V2_MAGIC:  # ESP8266 v2: irom0 segment, then a v1 header and its segments
        irom = 16 + int.from_bytes(head[12:16], "little")
        if irom + 8 > limit:
            return None
        length = _image_length(flash, start + irom, limit - irom)
        return None if length is None else irom + length
    if head[0] != ESP_IMAGE_MAGIC:
        return None
    lengths = []
    for header, tail in ((8, 0), (24, 32)):
        offset = header
        for _ in range(head[1]):
            if offset + 8 > limit:
                break
            offset += 8 + int.from_bytes(flash.read(start + offset + 4, 4), "little")
        else:
            length = (offset // 16 + 1) * 16 + tail
            if length <= limit:
                lengths.append(length)
    return max(lengths) if lengths else None


def _checksum_bad(flash: FlashImage, slot: int) -> bool:
    """True when the slot's image fails esptool's checksum (SHA-256) check: the chip would crash."""
    from otalib.firmware.image import inspect_image

    start, end = flash.layout.slot_range(slot)
    length = _image_length(flash, start, min(end - start, CHECKSUM_LIMIT))
    if length is None:
        # the segment walk does not end inside the slot: a torn image (half new, half old or
        # erased data) — unless the slot is too big to check, in which case it is assumed intact
        return end - start <= CHECKSUM_LIMIT
    try:
        info = inspect_image(flash.read(start, length))
    except ImageError:
        return True
    return not info.valid


__all__ = ["SECTOR", "BootResult", "Device", "UpdateResult"]
