"""One board of a fleet: the virtual board's device, decoder and console on a loop-driven connection.

A :class:`FleetBoard` is the same :class:`~otalib.board.sim.device.Device` (rBoot, the
OTA-over-MQTT sample, the decoder ``otalab inspect`` uses) behind the same
:class:`~otalib.mqtt.streaming.StreamingClient` and
:class:`~otalib.board.sim.sming_console.SmingConsole` as :class:`~otalib.board.virtual.VirtualBoard`,
but it owns no thread and no pty: a :class:`~otalib.fleet.loop.FleetLoop` drives it, its
flash lives in memory (:mod:`otalib.fleet.flash`) and its console goes to a bounded buffer
(:class:`BoardConsole`; a log file or a pty on request).

The link is modelled where the board reads: a downstream rate (reads paced by a token
bucket, so the TCP window closes as on a slow link; a link profile's latency is not modelled
here, its rate is), drops (the connection is cut),
outages (reads stall), and the payload faults (bit flips, a power loss at a byte).
Rate faults' times count from the board's first byte of the update (seconds of transfer).

With a timing profile the device takes a device's time (:mod:`otalib.board.sim.timing`): its
:class:`LoopPacer` banks the time the device spends instead of sleeping, and the board reads its
socket (or connects, after a reboot) only once that time has passed; its socket's receive buffer
is the chip's TCP window, so the broker sees a device-speed receiver.
"""

from __future__ import annotations

import contextlib
import enum
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from otalib.board.console import ConsoleParser
from otalib.board.protocol import ConsoleLine
from otalib.board.serial_board import LineSplitter
from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.device import Device, UpdateResult
from otalib.board.sim.sming_console import RST_POWER_ON, ConsolePlatform, SmingConsole
from otalib.board.sim.timing import TimingModel
from otalib.board.virtual import CLIENT_ID, prepare_flash
from otalib.fleet.flash import MemoryFlash, SectorPool
from otalib.fleet.loop import FleetLoop, Timer
from otalib.formats.prehash import PrehashPool
from otalib.mqtt import paho_compat
from otalib.mqtt.streaming import ESP_TCP_MSS, RECV_CHUNK, StreamingClient
from otalib.net.faults import FaultPlan, trial_rng
from otalib.vocabulary import Decision, DeviceState, Outcome, OutcomeKind

#: Console bytes a board keeps in memory (the newest).
CONSOLE_BYTES = 64 * 1024
#: Console text buffered before it is appended to a board's log file.
LOG_FLUSH_BYTES = 64 * 1024
#: Seconds a board's power stays off after a power loss.
POWER_OFF_S = 0.5
#: How far behind the clock a board's device time may carry over (a late wake-up is made up).
PACER_SLACK_S = 0.05
#: A board keeps reading while its device is at most this far ahead of the clock (fewer wake-ups).
READ_AHEAD_S = 0.02
#: Timers a board keeps before it forgets those that ran (a paced board sets one per read burst).
TIMERS_KEPT = 16
#: Reconnect back-off (first, most), as the virtual board's paho client.
RECONNECT_S = (0.2, 2.0)
#: Untimed boards without faults at a byte take a read's segments in one step (False: one at a time).
BULK_SEGMENTS = True


class BoardEvent(str, enum.Enum):
    """A state change of a fleet board (the timeline's ``event``)."""

    BOOT = "boot"
    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    RECEIVING = "receiving"
    DECIDED = "decided"
    DISCONNECTED = "disconnected"
    DROP = "drop"
    OUTAGE = "outage"
    POWER_LOSS = "power_loss"
    RESTART = "restart"
    DONE = "done"


@dataclass(frozen=True)
class BoardSettings:
    """How the boards of one group are built and linked (picklable: shards get it)."""

    group: str
    build: DeviceBuild
    initial_image: bytes = field(repr=False)
    rate_Bps: float | None = None
    fault: str = "none"
    seed: int = 0
    timing: str = "none"
    debug_level: int = 3
    restart_delay: float = 1.0
    tcp_mss: int = ESP_TCP_MSS
    keepalive: int = 60
    banners: ConsolePlatform = ConsolePlatform.HOST


class LoopPacer:
    """Spends device time without blocking the fleet's loop: a deadline the board waits for.

    As :class:`~otalib.board.sim.timing.RealTimePacer`, the deadline carries over between calls up
    to ``slack`` seconds behind the clock: a board the busy loop woke late catches up that much.
    """

    def __init__(self, slack: float = PACER_SLACK_S) -> None:
        self.due = 0.0
        self.slack = slack

    def now(self) -> float:
        return time.monotonic()

    def spend(self, seconds: float) -> None:
        if seconds > 0:
            self.due = max(self.due, time.monotonic() - self.slack) + seconds

    def wait(self) -> float:
        """Seconds until the device's time has caught up (0: now)."""
        return max(0.0, self.due - time.monotonic())


class BoardConsole:
    """A board's console: the newest ``limit`` characters in memory, optionally a log file and a pty."""

    def __init__(self, limit: int = CONSOLE_BYTES, log_path: Path | None = None) -> None:
        self.limit = limit
        self.log_path = log_path
        self._chunks: deque[str] = deque()
        self._size = 0
        self._log: list[str] = []
        self._log_size = 0
        self._pty: Any = None

    def write(self, text: str) -> None:
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.limit and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())
        if self.log_path is not None:
            self._log.append(text)
            self._log_size += len(text)
            if self._log_size >= LOG_FLUSH_BYTES:
                self.flush()
        if self._pty is not None:
            self._pty.write(text.encode("utf-8", "surrogateescape"))

    def text(self) -> str:
        """What the buffer holds (the newest console text)."""
        return "".join(self._chunks)

    def lines(self) -> list[ConsoleLine]:
        """The buffer's lines, parsed as the virtual board parses its console."""
        splitter, parser, now = LineSplitter(), ConsoleParser(), time.time()
        data = self.text().encode("utf-8", "surrogateescape")
        return [parser.parse(line, t) for t, line in splitter.feed(data, now) + splitter.end_of_input(now)]

    def attach_pty(self) -> str:
        """Copy the console from now on to a new pty; its path (open it with ``otalab monitor``)."""
        if self._pty is None:
            from otalib.board.virtual import _PtyConsole

            self._pty = _PtyConsole()
        return self._pty.path

    def flush(self) -> None:
        if self.log_path is not None and self._log:
            with open(self.log_path, "a", encoding="utf-8", errors="surrogateescape") as log:
                log.write("".join(self._log))
            self._log.clear()
            self._log_size = 0

    def close(self) -> None:
        self.flush()
        if self._pty is not None:
            self._pty.close()
            self._pty = None


class _Sink:
    """The streamed message -> the device, with the payload faults of the link applied."""

    def __init__(self, board: FleetBoard) -> None:
        self.board = board
        self.offset = 0

    def message_start(self, topic: str, length: int, retain: bool, qos: int) -> None:
        self.offset = 0
        self.board._message_start(length)

    def message_data(self, chunk: bytes) -> None:
        board = self.board
        if board.severed:  # the link is down: what the socket still holds never reached the device
            return
        start, self.offset = self.offset, self.offset + len(chunk)
        masks = board.byte_masks
        if masks:
            hits = [at for at in masks if start <= at < self.offset]
            if hits:
                data = bytearray(chunk)
                for at in hits:
                    data[at - start] ^= masks[at]
                    board.fault_events.append(
                        {"kind": "bitflip", "t_s": board.transfer_s(), "offset": at, "duration_s": 0.0}
                    )
                chunk = bytes(data)
        cut_at = board.cut_at
        if cut_at is not None and start <= cut_at < self.offset:
            board.device.on_message_data(chunk[: cut_at - start])
            board._cut_at_byte(cut_at)
            return
        power_at = board.power_at
        if power_at is not None and start <= power_at < self.offset:
            board.device.on_message_data(chunk[: power_at - start])
            board._power_loss(power_at)
            return
        board.device.on_message_data(chunk)

    def message_segments(self, data: bytes, sizes: list[int], wires: list[int]) -> None:
        """Several segments at once (a board without payload faults: see :class:`FleetClient`)."""
        if self.board.severed:
            return
        self.offset += len(data)
        self.board.device.on_segments(data, sizes, wires)

    def message_end(self) -> None:
        self.board._decided(self.board.device.on_message_end())

    def message_abort(self) -> None:
        self.board._decided(self.board.device.on_message_abort())


class _ReadAheadClient(mqtt.Client):
    """paho's socket reads through a user-space buffer: one ``recv`` of up to ``read_ahead`` bytes
    serves many of the small reads above it (the device's segments), so a board without a window
    to model costs one system call per 64 KiB instead of one per segment. ``read_ahead`` 0: every
    read is a ``recv`` (a board whose reads are paced: its socket's buffer is the window)."""

    read_ahead = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx = b""
        self._rx_at = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.read_ahead:
            return super()._sock_recv(bufsize)
        rx, at = self._rx, self._rx_at
        if at >= len(rx):
            rx = super()._sock_recv(max(bufsize, self.read_ahead))
            if len(rx) <= bufsize:  # all of it is wanted (or the connection closed: b"")
                self._rx, self._rx_at = b"", 0
                return rx
            at = 0
        end = at + bufsize
        self._rx, self._rx_at = rx, end
        if at == 0 and end >= len(rx):
            return rx
        return rx[at:end]

    def read_pending(self) -> bool:
        """Bytes read from the socket that paho has not taken yet."""
        return self._rx_at < len(self._rx)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """As paho's, then on while the buffer holds more (the socket will not report it readable)."""
        rc = super().loop_read(max_packets)
        if not self.read_ahead:  # a paced board: nothing buffered here
            return rc
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self.read_pending():
            rc = super().loop_read(max_packets)
        return rc


class FleetClient(StreamingClient, _ReadAheadClient):
    """The board's streaming client; reads wait for the link's rate (its board's token bucket).

    A board with neither a timing model nor a rate reads ahead (:class:`_ReadAheadClient`): the
    device still gets its data segment by segment (:class:`StreamingClient` cuts them above the buffer),
    and, without faults at a byte (bit flips, a cut, a power loss), in bulk: the segments of a read at
    once (:meth:`~otalib.board.sim.device.Device.on_segments`: the same console, flash and decision).
    """

    def __init__(self, *args: Any, board: FleetBoard, **kwargs: Any) -> None:
        unpaced = board.timing is None and board._rate is None
        exact = not board.byte_masks and board.cut_at is None and board.power_at is None
        super().__init__(*args, bulk=BULK_SEGMENTS and unpaced and exact, **kwargs)
        self.board = board
        if unpaced:
            self.read_ahead = RECV_CHUNK

    def _sock_recv(self, bufsize: int) -> bytes:
        budget = self.board._read_budget()
        if budget <= 0:
            raise BlockingIOError
        data = super()._sock_recv(min(bufsize, budget))
        self.board._bytes_read(len(data))
        return data

    def read_pending(self) -> bool:
        return not self.board._paused and super().read_pending()


class FleetBoard:
    """A virtual board on a :class:`FleetLoop` (see the module docstring).

    ``expect_patch``: the patch of the update (a restart into it is ``updated``).
    ``plan``: the fault realisation drawn for this board (drops, outages, power, bit flips).
    ``clock``: wall-clock seconds (``time.time``) for the recorded times. ``pool`` and ``prehash_pool``:
    flash sectors and signature hashing shared with the boards of the same shard (equal bytes once).
    """

    def __init__(
        self,
        name: str,
        settings: BoardSettings,
        loop: FleetLoop,
        *,
        host: str,
        port: int,
        credentials: tuple[str, str | None] | None = None,
        pool: SectorPool | None = None,
        prehash_pool: PrehashPool | None = None,
        expect_patch: int | None = None,
        plan: FaultPlan | None = None,
        cut_at: int | None = None,
        console_bytes: int = CONSOLE_BYTES,
        console_log: Path | None = None,
        on_change: Callable[[FleetBoard, BoardEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.settings = settings
        self.group = settings.group
        self.loop = loop
        self.host, self.port = host, port
        self.credentials = credentials
        self.expect_patch = expect_patch
        self.plan = plan or FaultPlan()
        self.byte_masks = self.plan.byte_masks()
        self.power_at = self.plan.power_at
        self.cut_at = cut_at
        self.clock = clock
        self.on_change = on_change
        self.console = BoardConsole(console_bytes, console_log)
        build: DeviceBuild = settings.build
        self.flash = prepare_flash(
            name, build, initial_image=settings.initial_image, flash_factory=partial(MemoryFlash, pool=pool)
        )
        sming = SmingConsole(self.console.write, settings.debug_level, platform=settings.banners)
        timed = settings.timing != "none"
        # its own stream (the fault plan draws from the board's name alone: the two must not correlate)
        self.timing = TimingModel(settings.timing, trial_rng(settings.seed, f"{name}:timing")) if timed else None
        self.pacer = LoopPacer()
        self.device = Device(
            self.flash,
            build,
            debug_level=settings.debug_level,
            console=sming,
            flash_file_name=name,
            timing=self.timing,
            pacer=self.pacer,
            prehash_pool=prehash_pool,
        )
        self.timeline: list[tuple[float, BoardEvent, str]] = []
        self.fault_events: list[dict[str, Any]] = []
        self.updates: list[UpdateResult] = []
        self.outcome: Outcome | None = None
        self.detail = ""
        self.connects = 0
        self.deliveries = 0
        self.bytes_received = 0
        self.subscribed = False
        self.connected = False
        self.last_error: str | None = None
        self._client: FleetClient | None = None
        self._timers: list[Timer] = []
        self._transfer_t0: float | None = None
        self._reconnect_s = RECONNECT_S[0]
        rate = settings.rate_Bps
        self._rate = rate if rate and math.isfinite(rate) else None
        self._burst = float(max(settings.tcp_mss, 4096))
        self._tokens = self._burst
        self._tokens_t = time.monotonic()
        self._stalled_until = 0.0
        self._paused = False
        self.stopped = False
        #: the connection was cut: nothing more of it reaches the device
        self.severed = False

    # -- record --
    def _note(self, event: BoardEvent, detail: str = "") -> None:
        self.timeline.append((self.clock(), event, detail))
        if self.on_change is not None:
            self.on_change(self, event)

    def device_time(self) -> dict[str, float]:
        """Device time per phase of the update that was applied (else the last one); empty without a model."""
        applied = [u for u in self.updates if u.outcome is Decision.APPLIED]
        last = applied[-1] if applied else (self.updates[-1] if self.updates else None)
        return dict(getattr(last, "device_time", {}) or {}) if last is not None else {}

    @property
    def done(self) -> bool:
        """The board has its final outcome."""
        return self.outcome is not None

    def _finish(self, outcome: Outcome, detail: str = "") -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.detail = detail
            self._note(BoardEvent.DONE, outcome.text)

    # -- life cycle --
    def power_on(self) -> None:
        """Boot and, if the firmware runs, connect."""
        boot = self.device.boot(RST_POWER_ON)
        self._note(BoardEvent.BOOT, f"slot {boot.slot}" if boot.booted else str(boot.reason))
        if not boot.booted:
            self._finish(Outcome(OutcomeKind.BRICKED), str(boot.reason))
            return
        self.device.connecting(self.host, self.port)  # after a reboot: Wi-Fi and MQTT connect in device time
        self._after_device_time(self._connect)

    def stop(self) -> None:
        """Power off: drop the connection, cancel timers, flush the console."""
        if self.stopped:
            return
        self.stopped = True
        for timer in self._timers:
            timer.cancel()
        self._drop_connection()
        self.console.close()
        self.flash.close()

    def _after_device_time(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` once the device time spent so far has passed (at once without a timing model)."""
        wait = self.pacer.wait()
        if wait > 0:
            self._later(wait, fn)
        else:
            fn()

    def _later(self, delay: float, fn: Callable[[], Any]) -> None:
        timers = self._timers
        if len(timers) >= TIMERS_KEPT:  # forget the timers that ran or were cancelled (stop() cancels the rest)
            now = time.monotonic()
            timers = self._timers = [t for t in timers if not t.cancelled and t.when > now]
        timers.append(self.loop.call_later(delay, fn))

    # -- connection --
    def _connect(self) -> None:
        if self.stopped or self.done:
            return
        client = FleetClient(
            CallbackAPIVersion.VERSION2,
            client_id=f"{CLIENT_ID}-{self.name}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
            stream_sink=_Sink(self),
            tcp_mss=self.settings.tcp_mss,
            on_segment=self.device.segment_received,
            rcvbuf=self.timing.chip.tcp_window if self.timing is not None else None,
            board=self,
        )
        if self.credentials is not None:
            client.username_pw_set(*self.credentials)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        self.loop.attach(client)
        self._client = client
        self._paused = False
        self.severed = False
        try:
            client.connect(self.host, self.port, self.settings.keepalive)
        except OSError as exc:
            self.loop.detach(client)
            self._client = None
            self.last_error = f"cannot connect to the broker: {exc.strerror or exc}"
            self._retry()

    def _retry(self) -> None:
        delay, self._reconnect_s = self._reconnect_s, min(self._reconnect_s * 2, RECONNECT_S[1])
        self._later(delay, self._connect)

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            return
        self.connects += 1
        self.connected = True
        self.last_error = None
        self._reconnect_s = RECONNECT_S[0]
        self.device.tcp_connected(False)
        self._note(BoardEvent.CONNECTED)
        client.subscribe(self.device.topic, qos=0)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: Any, _props: Any) -> None:
        if codes and not codes[0].is_failure:
            self.subscribed = True
            self._note(BoardEvent.SUBSCRIBED, self.device.topic)
        else:
            self.last_error = f"the broker refused the subscription: {codes[0] if codes else '?'}"

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connected = False
        self.subscribed = False
        client.abort_stream()
        if client is self._client:
            self.loop.detach(client)
            self._client = None
            self._note(BoardEvent.DISCONNECTED, str(reason))
            if not self.done and not self.stopped and self.device.state is DeviceState.RUNNING:
                self._retry()

    def _drop_connection(self) -> None:
        """Lose the connection at once (no DISCONNECT), as a power cut does."""
        client, self._client = self._client, None
        self.connected = self.subscribed = False
        self.severed = True
        if client is None:
            return
        self.loop.detach(client)
        with contextlib.suppress(Exception):  # teardown: a power cut completes whatever paho's state
            paho_compat.close_socket(client)
        if client.abort_stream() is False and self.device.state is DeviceState.RECEIVING:
            self._decided(self.device.on_message_abort())

    def _cut(self) -> None:
        """The link drops the connection: data in flight is lost, the board sees the connection lost
        (its stream abandoned) and reconnects."""
        if self._client is None:
            return
        self._drop_connection()
        self._note(BoardEvent.DISCONNECTED, "link cut")
        if not self.done and not self.stopped and self.device.state is DeviceState.RUNNING:
            self._retry()

    # -- the link: rate, stalls --
    def _read_budget(self) -> int:
        now = time.monotonic()
        if now < self._stalled_until:
            self._pause(self._stalled_until - now)
            return 0
        busy = self.pacer.due - now
        if busy > READ_AHEAD_S:  # the device is still erasing, writing or verifying
            self._pause(busy)
            return 0
        if self._rate is None:
            return 1 << 30
        self._tokens = min(self._burst, self._tokens + (now - self._tokens_t) * self._rate)
        self._tokens_t = now
        if self._tokens < 1:
            self._pause((1 - self._tokens) / self._rate + 0.002)
            return 0
        return int(self._tokens)

    def _bytes_read(self, n: int) -> None:
        self.bytes_received += n
        if self._rate is not None:
            self._tokens -= n

    def _pause(self, delay: float) -> None:
        client = self._client
        if client is None or self._paused:
            return
        self._paused = True
        self.loop.pause_reading(client, True)
        self._later(delay, self._resume)

    def _resume(self) -> None:
        self._paused = False
        client = self._client
        if client is not None:
            self.loop.pause_reading(client, False)
            if client.read_pending():  # read ahead before the pause: the socket will not say so
                client.loop_read()

    # -- the update --
    def _message_start(self, length: int) -> None:
        self.deliveries += 1
        self.device.on_message_start(length)
        self._note(BoardEvent.RECEIVING, str(length))
        if self._transfer_t0 is None and length > 0:
            self._transfer_t0 = time.monotonic()
            for t, kind, duration in self.plan.timed():
                self._later(t, partial(self._timed_fault, t, kind, duration))

    def _timed_fault(self, t: float, kind: str, duration: float) -> None:
        if self.done or self.stopped or (kind == "drop" and self._client is None):
            return  # a drop while the board is offline cuts nothing
        self.fault_events.append(
            {"kind": kind, "t_s": t, "offset": self.bytes_received, "duration_s": duration if kind == "outage" else 0.0}
        )
        if kind == "drop":
            self._note(BoardEvent.DROP)
            self._cut()
        else:
            self._note(BoardEvent.OUTAGE, f"{duration:.3f}")
            self._stalled_until = max(self._stalled_until, time.monotonic() + duration)

    def transfer_s(self) -> float:
        """Seconds since this board's first byte of the update."""
        return time.monotonic() - self._transfer_t0 if self._transfer_t0 is not None else 0.0

    def _cut_at_byte(self, offset: int) -> None:
        self.cut_at = None  # once
        t = time.monotonic() - (self._transfer_t0 or time.monotonic())
        self.fault_events.append({"kind": "cut", "t_s": t, "offset": offset, "duration_s": 0.0})
        self._note(BoardEvent.DROP, str(offset))
        self._cut()

    def _power_loss(self, offset: int) -> None:
        self.power_at = None  # once
        t = time.monotonic() - (self._transfer_t0 or time.monotonic())
        self.fault_events.append({"kind": "power", "t_s": t, "offset": offset, "duration_s": POWER_OFF_S})
        self._note(BoardEvent.POWER_LOSS, str(offset))
        self._drop_connection()
        self.device.state = DeviceState.OFF
        self._later(POWER_OFF_S, self.power_on)

    def _decided(self, result: UpdateResult) -> None:
        """The device's decision on a message, once the device time it took (the final check, the switch)
        has passed."""
        self._after_device_time(partial(self._decision, result))

    def _decision(self, result: UpdateResult) -> None:
        self.updates.append(result)
        self._note(BoardEvent.DECIDED, result.outcome.value)
        if result.outcome is Decision.APPLIED:
            self._later(self.settings.restart_delay, self._restart)
        elif result.outcome is Decision.REJECTED:
            self._finish(Outcome(OutcomeKind.REJECTED, _error_code(result.error)), result.detail)
        elif result.outcome is Decision.SKIPPED:
            self._finish(Outcome(OutcomeKind.SKIPPED), f"patch {result.patch}")

    def _restart(self) -> None:
        """``System.restart()`` after the switch: a board running the update is done (it does not
        reconnect: the retained update would come again)."""
        self._drop_connection()
        self._note(BoardEvent.RESTART)
        boot = self.device.restart()  # with a timing model: the reboot's device time is banked
        self._after_device_time(partial(self._rebooted, boot))

    def _rebooted(self, boot: Any) -> None:
        self._note(BoardEvent.BOOT, f"slot {boot.slot}" if boot.booted else str(boot.reason))
        if not boot.booted:
            self._finish(Outcome(OutcomeKind.BRICKED), str(boot.reason))
        elif self.expect_patch is None or self.device.patch == self.expect_patch:
            self._finish(Outcome(OutcomeKind.UPDATED), f"{self.device.version} slot {boot.slot}")
        else:
            self._finish(Outcome(OutcomeKind.RESTARTED), f"{self.device.version} slot {boot.slot}")


def _error_code(name: str | None) -> Any:
    from otalib.errors import DeviceErrorCode

    try:
        return DeviceErrorCode(name) if name else None
    except ValueError:
        return None
