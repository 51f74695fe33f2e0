"""One update trial, end to end, on one clock: build, publish, watch the console, decide.

A :class:`Bench` holds what trials share (brokers, the lab key, a work folder) so a
campaign does not start a broker per trial; :meth:`Bench.run` is the campaign's runner.
The board is the virtual board by default (a fresh flash per trial, running
``version`` at patch :data:`BOARD_PATCH`), or a real board on a serial port / ``rfc2217://``
URL (``TrialConfig.board``; it must be running and subscribed, the trial gives ``patch``, and
the :class:`Bench` holds its key and a real ROM image). Either way the trial sees only the board
protocols (:mod:`otalib.board.protocol`): the outcome is read from the console exactly as for a
real board (:func:`~otalib.board.follow.follow_update` feeding an
:class:`~otalib.board.console.OutcomeTracker`; a virtual board's own results and the power cut
come in as its hooks); link profiles and faults go through the :class:`~otalib.net.link.LinkProxy`.

Faults (``TrialConfig.fault``): ``none``, ``cut``, ``stall``, ``corrupt``, ``power-loss``,
optionally ``@F`` with F the fraction of the payload where it strikes (default 0.5), e.g.
``corrupt@0.9``; or a fault at a rate (:mod:`otalib.net.faults`): ``drops:rate=R``,
``outages:every=S,for=D``, ``power:p=P``, ``bitflips:ber=B`` (``,seed=N`` optional), drawn from a
generator made of the seed and the trial id (:func:`~otalib.net.faults.trial_rng`).

Trials at once (a campaign's ``parallel``): :meth:`Bench.run` may be called from several threads.
Each running trial takes a *lane*: lane 0 is the trial as it runs alone (the config's app id, the
board's client id ``sming``); lane N gives the board another app id of the same length
(:func:`lane_app_id`: ``test`` -> ``tesu``), so an update topic no other running trial uses (retained
messages never cross) and the same bytes on the wire, and the client id ``sming_pN`` (the broker-log
evidence is keyed on it). The rows do not show the lane.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otalib.board.console import BOOT_EVENTS, OutcomeTracker
from otalib.board.follow import DECIDED, Ending, follow_subscription, follow_update
from otalib.board.protocol import Board, ConsoleLine
from otalib.board.serial_board import BoardReset, PowerHook, SerialBoard
from otalib.board.sim.build import DeviceBuild
from otalib.broker import Broker, start_broker
from otalib.broker.log_watch import BrokerEvent, BrokerEventKind, BrokerLogWatch
from otalib.errors import BoardError, LabError, OtaLabError
from otalib.firmware.demo import make_demo_image
from otalib.formats.ota import timestamp_now
from otalib.formats.secretstream import SecretstreamReader
from otalib.formats.version import Version, topic_for
from otalib.keys import DeviceKeys, LabKey
from otalib.lab.inputs import Firmware, check_resume, prepare_inputs, virtual_layout
from otalib.lab.schema import TrialConfig, TrialFlag, TrialResult
from otalib.mqtt.publish import deploy
from otalib.mqtt.tls import TlsOptions
from otalib.mqtt.url import parse_url
from otalib.net.faults import FaultPlan, RateFault, RateKind, connected_seconds, is_rate_fault, trial_rng
from otalib.net.link import Fault, LinkProfile, LinkProxy
from otalib.procs import owned_tempdir
from otalib.update import make_update
from otalib.vocabulary import Decision, Outcome, OutcomeKind, TimingProfile

if TYPE_CHECKING:
    from otalib.board.virtual import VirtualBoard
    from otalib.config import LabConfig

#: Patch the virtual board runs before each trial; the update carries BOARD_PATCH + 1 by default.
BOARD_PATCH = 5
FAULTS = ("none", "cut", "stall", "corrupt", "power-loss")
STALL_S = 2.0
#: The quiet window: seconds of console silence after the publish that mean "skipped" on a real board
#: (which prints nothing when it skips an older patch; at the default debug level a standard-mode board
#: prints nothing until its restart either). :func:`quiet_window` makes it from the package size and the
#: board's link rate: QUIET_BASE_S + QUIET_MARGIN x transfer time + the restart. A virtual board's skip is
#: read from its own update result.
QUIET_BASE_S = 1.5
QUIET_MARGIN = 2.0
#: A real board's link rate when not given (B/s): an ESP8266 on Wi-Fi writing flash does tens of kB/s.
DEFAULT_BOARD_RATE_BPS = 10_000.0
#: Seconds a board takes from its update's end to its new ``running`` line, on top of its restart delay.
BOOT_S = 1.0
#: The MQTT client id of the board (Sming's Upgrade sample: ``sming``), as the broker's log names it.
BOARD_CLIENT_ID = "sming"
#: Seconds the trial waits for the broker to show a real board's subscription before publishing.
READY_S = 15.0
#: Seconds the broker's log may lag behind the board's console (its reader polls; Mosquitto writes in bursts).
LOG_LAG_S = 3.0


class TrialStopped(LabError):
    """The campaign stopped (Ctrl-C, another trial's error) while this trial ran; its result is not kept."""


#: The characters of an app id (:func:`~otalib.firmware.image.check_app_id`), in the order lanes count in.
_APP_ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.-"


def lane_app_id(app_id: str, lane: int) -> str:
    """The app id of lane ``lane`` of trials at once: ``app_id`` itself in lane 0, else ``app_id`` with its
    last characters counted ``lane`` steps on in :data:`_APP_ID_CHARS` (``test`` -> ``tesu``, ``tesv``, ...).
    Of the same length, so the update topic and every downstream byte offset match the serial run's."""
    base = len(_APP_ID_CHARS)
    width = 1
    while base**width <= lane:
        width += 1
    if lane and (width > len(app_id) or any(c not in _APP_ID_CHARS for c in app_id[-width:])):
        raise LabError(f"app id {app_id!r} is too short for {lane + 1} trials at once: give a longer one")
    if lane == 0:
        return app_id
    value = 0
    for char in app_id[-width:]:
        value = value * base + _APP_ID_CHARS.index(char)
    value = (value + lane) % base**width
    digits = []
    for _ in range(width):
        value, digit = divmod(value, base)
        digits.append(_APP_ID_CHARS[digit])
    return app_id[:-width] + "".join(reversed(digits))


def lane_client_id(client_id: str, lane: int) -> str:
    """The board's MQTT client id in lane ``lane``: ``client_id`` in lane 0, else ``client_id_pN``."""
    return client_id if lane == 0 else f"{client_id}_p{lane}"


def quiet_window(package_bytes: int, rate_Bps: float, restart_s: float) -> float:
    """Console silence after the publish that means "skipped": the transfer at ``rate_Bps`` times
    :data:`QUIET_MARGIN`, the restart and :data:`QUIET_BASE_S`."""
    return QUIET_BASE_S + QUIET_MARGIN * package_bytes / rate_Bps + restart_s


@dataclass(frozen=True)
class FaultSpec:
    """A parsed ``TrialConfig.fault``."""

    kind: str
    fraction: float = 0.5
    rate: RateFault | None = None  # a fault at a rate (kind: its RateKind value)

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        if is_rate_fault(text):
            try:
                rate = RateFault.parse(text)
            except OtaLabError as exc:
                raise LabError(str(exc)) from None
            return cls(rate.kind.value, rate=rate)
        kind, _, where = (text or "none").partition("@")
        if kind not in FAULTS:
            raise LabError(
                f"unknown fault {text!r}: one of {', '.join(FAULTS)} (optionally @FRACTION)"
                " or drops:rate=R, outages:every=S,for=D, power:p=P, bitflips:ber=B"
            )
        try:
            fraction = float(where) if where else 0.5
        except ValueError:
            raise LabError(f"bad fault position in {text!r}: a fraction of the payload, e.g. corrupt@0.5") from None
        if not 0 <= fraction < 1:
            raise LabError(f"bad fault position in {text!r}: between 0 and 1")
        return cls(kind, fraction)

    def link_fault(self, payload: int) -> Fault | None:
        at = int(payload * self.fraction)
        if self.kind in ("cut", "corrupt"):
            return Fault(self.kind, at_byte=at, within="payload")  # type: ignore[arg-type]
        if self.kind == "stall":
            return Fault("stall", at_byte=at, duration_s=STALL_S, within="payload")
        if self.kind == "power-loss":
            return Fault("stall", at_byte=at, duration_s=None, within="payload")  # held until power is cut
        return None


@dataclass
class _Clock:
    """One monotonic clock for a trial; converts the console's wall-clock times onto it."""

    t0: float = field(default_factory=time.monotonic)
    wall_offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    def now(self) -> float:
        return time.monotonic() - self.t0

    def of_wall(self, t: float) -> float:
        return t - self.wall_offset - self.t0


class Bench:
    """Shared resources of a series of trials: brokers per (backend, TLS), the lab key, a work folder."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        restart_delay: float = 1.0,
        key: LabKey | None = None,
        firmware: Firmware | None = None,
        baud: int = 115200,
        build_timestamp: int | None = None,
        quiet_s: float | None = None,
        allow_demo_image: bool = False,
        board_rate_Bps: float = DEFAULT_BOARD_RATE_BPS,
        board_client_id: str = BOARD_CLIENT_ID,
        power: PowerHook | None = None,
        reset: BoardReset | str = BoardReset.RTS,
        seed: int = 0,
    ) -> None:
        """``key``/``firmware``: the key the board's firmware embeds and the firmware to publish
        (:mod:`otalib.lab.inputs`; default a fresh key and otalab's demo images, which a real board
        refuses unless ``allow_demo_image``). ``build_timestamp``: the virtual boards' firmware build
        time (ms since 1900; None: unknown). ``quiet_s``: the silence that means "skipped" on a real
        board (None: :func:`quiet_window` of the package at ``board_rate_Bps``, the real board's link
        rate). ``board_client_id``: the board's MQTT client id, to find it in the managed Mosquitto's log."""
        self._own_dir = workdir is None
        self.workdir = owned_tempdir("bench") if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.restart_delay = restart_delay
        self.key = key or LabKey.generate()
        self.firmware = firmware
        self.allow_demo_image = allow_demo_image
        self.baud = baud
        self.build_timestamp = build_timestamp
        self.quiet_s = quiet_s
        self.board_rate_Bps = board_rate_Bps
        self.board_client_id = board_client_id
        #: a real board's power switch (a power-loss trial on a real board is refused without one)
        self.power = power
        #: how a real board starts each trial from a known state (rts: EN pulsed by RTS; power: the hook)
        self.reset = BoardReset(reset)
        #: the campaign's seed: the virtual boards' timing draws (with the trial id) when no rate fault has its own
        self.seed = seed
        self._brokers: dict[tuple[str, bool], Broker] = {}
        self._log_watches: dict[tuple[str, bool], BrokerLogWatch] = {}
        self._lock = threading.RLock()  # brokers, log watches and lanes, for trials at once
        self._lanes: dict[int, str] = {}  # running trials: lane -> its update topic
        #: set when the campaign stops: running trials end at their next look (:class:`TrialStopped`)
        self.stop = threading.Event()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the brokers and remove the work folder if the bench made it."""
        for watch in self._log_watches.values():
            watch.close()
        self._log_watches.clear()
        for broker in self._brokers.values():
            with contextlib.suppress(Exception):  # teardown: stop every broker even if one fails
                broker.stop()
        self._brokers.clear()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def broker(self, backend: str, tls: bool) -> Broker:
        """A managed broker of ``backend`` (``auto``, ``mosquitto``, ``embedded``), started once."""
        key = (backend, tls)
        with self._lock:
            if key not in self._brokers:
                folder = self.workdir / f"broker-{backend}-{'tls' if tls else 'plain'}"
                self._brokers[key] = start_broker(backend, tls=tls, workdir=folder)
            return self._brokers[key]

    def broker_log(self, backend: str, tls: bool) -> BrokerLogWatch | None:
        """A watch on the managed broker's log (Mosquitto), started once; None for the embedded broker."""
        key = (backend, tls)
        broker = self.broker(backend, tls)
        if broker.backend != "mosquitto":
            return None
        with self._lock:
            if key not in self._log_watches:
                self._log_watches[key] = BrokerLogWatch(broker.log_path).start()
            return self._log_watches[key]

    def describe(self) -> dict[str, Any]:
        """Broker backends and versions, for a run's metadata."""
        return {f"{b}{'+tls' if t else ''}": f"{br.backend} {br.version}" for (b, t), br in self._brokers.items()}

    def run(self, config: TrialConfig) -> TrialResult:
        """Run one trial (the campaign runner; thread-safe: each running trial has its own lane)."""
        lane = self._take_lane(config)
        try:
            return Trial(self, config, lane=lane).run()
        finally:
            with self._lock:
                del self._lanes[lane]

    def _take_lane(self, config: TrialConfig) -> int:
        """The lowest free lane whose update topic no running trial uses; a real board only alone, in lane 0."""
        with self._lock:
            if config.board != "virtual" and self._lanes:
                raise LabError(f"the real board {config.board} runs one trial at a time")
            lane = 0
            while True:
                if lane not in self._lanes:
                    topic = topic_for(lane_app_id(config.app_id, lane), config.version)
                    if topic not in self._lanes.values():
                        self._lanes[lane] = topic
                        return lane
                lane += 1


def run_trial(config: TrialConfig) -> TrialResult:
    """One trial on a bench of its own (a campaign should share one :class:`Bench`)."""
    with Bench() as bench:
        return bench.run(config)


class Trial:
    """One update attempt; see the module docstring."""

    def __init__(self, bench: Bench, config: TrialConfig, *, lane: int = 0) -> None:
        self.bench = bench
        self.config = config
        #: the app id and MQTT client id of this trial's board (the config's and the bench's in lane 0)
        self.app_id = lane_app_id(config.app_id, lane)
        self.client_id = lane_client_id(bench.board_client_id, lane)
        self.fault = FaultSpec.parse(config.fault)
        self.clock = _Clock()
        self.phases: dict[str, float | None] = {}
        self.notes: list[str] = []
        self.power_cuts = 0
        self.flags: list[TrialFlag] = []
        self.evidence: set[str] = set()
        self.facts: PackageFacts | None = None
        self.plan = FaultPlan()  # a rate fault's realisation (drawn when the package is known)
        self.fault_events: list[dict[str, Any]] = []  # what fired: kind, t_s, offset (the side table)
        self._updates_before = 0  # the virtual board's update results before this trial's publish
        self._package_size = 0

    # -- set-up --
    def _endpoint(self) -> tuple[str, TlsOptions, str]:
        """(broker URL without topic, TLS options, backend name)."""
        cfg = self.config
        if cfg.broker_url:
            url = parse_url(cfg.broker_url)
            return url.without_credentials() if not url.username else cfg.broker_url, TlsOptions(), "external"
        broker = self.bench.broker(cfg.broker_backend or "auto", cfg.tls)
        tls = TlsOptions(ca=broker.ca_path) if cfg.tls else TlsOptions()
        return broker.url, tls, broker.backend

    def _device_build(self) -> DeviceBuild:
        """The build of the trial's board: one that applies the trial's update mode."""
        cfg = self.config
        version = Version.parse(cfg.version)
        build = DeviceBuild(
            firmware_timestamp=self.bench.build_timestamp,
            profile=cfg.device_profile,
            app_id=self.app_id,
            version=Version(version.major, version.minor, BOARD_PATCH),
            write_current_slot=False,
            layout=virtual_layout(self.bench.firmware),  # the slots of the firmware's ROMs
        )
        return build.accepting(cfg.mode, DeviceKeys.of(self.bench.key))

    def _profile(self) -> LinkProfile | None:
        cfg = self.config
        if math.isnan(cfg.rate_Bps) and not cfg.latency_ms:
            return None
        rate = None if math.isnan(cfg.rate_Bps) else float(cfg.rate_Bps)
        return LinkProfile(rate, cfg.latency_ms / 1000.0, cfg.link or "custom", up_rate_Bps=rate)

    # -- the trial --
    def run(self) -> TrialResult:
        cfg = self.config
        started = datetime.now(timezone.utc)
        real = cfg.board != "virtual"
        if real:
            self._check_real_board()
        base_url, tls, backend = self._endpoint()
        self._check_stop()
        topic = topic_for(self.app_id, cfg.version)
        deploy_url = base_url.rstrip("/") + "/" + topic
        version = Version.parse(cfg.version)
        new_patch = self._patch()
        self.notes.append(f"broker={backend}")
        watch = None if cfg.broker_url else self.bench.broker_log(cfg.broker_backend or "auto", cfg.tls)
        if watch is None:
            self.notes.append(f"no broker log ({backend} broker): readiness and delivery from the console only")
        client = self.client_id
        trial_mark = watch.mark if watch is not None else 0
        with contextlib.ExitStack() as stack:
            deploy(None, deploy_url, tls=tls, clear=True, timeout=10)  # no firmware left by an earlier trial
            stack.callback(self._clear, deploy_url, tls)
            # a virtual board tells its own skip (its update result); only a real board's is silence
            tracker = OutcomeTracker(quiet=math.inf, timeout=cfg.timeout_s)  # a real board: set with the package
            if real:  # a board on a serial port / rfc2217:// server, already running and subscribed
                proxy = None
                board = stack.enter_context(
                    SerialBoard(
                        cfg.board,
                        self.bench.baud,
                        reset_via_rts=self.bench.reset is BoardReset.RTS,
                        power=self.bench.power,
                    )
                )
                cursor = self._fresh_start(board, tracker)
            else:
                proxy = self._start_proxy(stack, base_url)
                board = self._start_board(stack, base_url, tls, proxy)
                cursor = self._until_subscribed(board, tracker)
            if watch is not None:
                self._until_ready(watch, client, topic, READY_S if real else 15.0)

            if self.bench.firmware is not None:  # its own build timestamp, not now
                update = self.bench.firmware.update(cfg.mode, self.bench.key, patch=new_patch)
            else:
                image = make_demo_image(
                    "esp8266", self.app_id, f"{version.major}.{version.minor}.{new_patch}", size=cfg.size
                )
                update = make_update(
                    image,
                    cfg.mode,
                    patch=new_patch,
                    key=self.bench.key,
                    timestamp=timestamp_now() + 1,
                    build=self._device_build(),
                )
            self.phases["t_build"] = self.clock.now()
            rom_sizes = [len(rom.data) for rom in self.bench.firmware.roms] if self.bench.firmware else [len(image)]
            self.facts = PackageFacts.of(update, rom_sizes, self.bench.key)
            if real:
                tracker.quiet = self._quiet(len(update.package))
            if proxy is not None:
                for fault in self._link_faults(len(update.package)):
                    proxy.set_fault(fault, live=True)

            updates_before = self._updates_before = len(getattr(board, "updates", ()))
            publish_mark = watch.mark if watch is not None else 0
            self._package_size = len(update.package)
            tracker.published(time.time())
            t_call = self.clock.now()
            record = deploy(update.package, deploy_url, tls=tls, timeout=max(30.0, cfg.timeout_s))
            self.phases["t_publish_start"] = t_call + record.publish_start
            self.phases["t_pubcomp"] = t_call + record.pubcomp_s
            handover = _Handover(self, watch, publish_mark, client, deploy_url, tls, update.package, board)
            handover.poll()  # a subscribed board: the broker forwarded the message before it sent PUBCOMP

            outcome = self._watch(board, tracker, cursor, proxy, updates_before, handover)
            if real and self.fault.kind == "power-loss" and not self.power_cuts:
                self.notes.append("power not cut: the console showed no byte counts (debug level 3) up to the fault")
            self.phases["t_end"] = self.clock.now()
            link = proxy.stats if proxy is not None else None
            delivered = _last_delivered(link or {}, len(update.package))
            if delivered is not None and outcome.kind is OutcomeKind.UPDATED:
                self.phases["t_delivered"] = delivered - self.clock.t0
            board_updates = [r for r in getattr(board, "updates", ()) if not _is_clear(r)]
        t_first, t_last = self.phases.get("t_first_byte"), self.phases.get("t_last_byte")
        start = self.phases.get("t_publish_start")
        span = (t_last - start) if (t_last is not None and start is not None) else None
        throughput = len(update.package) / span if span and span > 0 else math.nan
        if t_first is None and outcome.kind is OutcomeKind.UPDATED:
            self.notes.append("no OTA lines on the console (debug level < 3)")
        if watch is not None:
            self._broker_flags(watch, trial_mark, publish_mark, client, topic, len(update.package))
        if t_first is not None and start is not None and t_first < start:
            self._flag(TrialFlag.EARLY_FIRST_BYTE)
        if TrialFlag.FOREIGN_PACKAGE in self.flags:
            throughput = math.nan  # the console measured another package
        return TrialResult(
            cfg,
            phases=self.phases,
            outcome=outcome,
            bytes=len(update.package),
            throughput_Bps=throughput,
            notes="; ".join(self.notes),
            started_at=started,
            duration_s=self.phases["t_end"],
            faults_fired=";".join(
                [f"{kind}@{offset}" for kind, offset, _t in (link or {}).get("faults_fired", [])]
                + ["power-loss"] * self.power_cuts
            ),
            connections=link["connections"] if link is not None else None,
            fault_events=self._events(link),
            events=list(self.fault_events),
            board_updates=";".join(map(_board_update, board_updates)),
            flags=";".join(flag.value for flag in self.flags),
            evidence=",".join(sorted(self.evidence)),
            device_time=_device_time(board_updates),
        )

    def _link_faults(self, payload: int) -> list[Fault]:
        """The proxy faults of the trial; a rate fault's realisation drawn first (seed and trial id)."""
        rate = self.fault.rate
        if rate is None:
            fault = self.fault.link_fault(payload)
            return [fault] if fault is not None else []
        self.plan = rate.draw(trial_rng(rate.seed, self.config.trial_id), payload, self.config.timeout_s)
        self.notes.append(f"fault seed={rate.seed}")
        return self.plan.link_faults()

    def _timed_faults(self, proxy: LinkProxy, handover: _Handover | None, board: Board) -> None:
        """Fire a rate fault's drops (due in seconds of connection from the publish) and outages (due in
        seconds from the publish). A drop resets the link (what it still held is lost); before the board
        took the whole package it republishes it (the retry the retained message gives)."""
        start = self.phases.get("t_publish_start")
        if start is None:
            return
        now = self.clock.now() - start
        stats = proxy.stats
        clock = now
        if self.fault.rate is not None and self.fault.rate.kind is RateKind.DROPS:
            clock = connected_seconds(stats, self.clock.t0 + start)
        done = sum(1 for e in self.fault_events if e["kind"] in ("drop", "outage"))
        for _t, kind, duration in self.plan.due(clock, done):
            offset = payload_forwarded(stats)
            if kind == "drop":
                delivered = _has_package(board, self._updates_before)
                # what the link still held is lost with the connection; the offset: the package bytes the
                # board's TCP stack held at the drop (read, or in its receive window)
                held = proxy.cut_all(abort=True)
                if not held:
                    break  # the board left on its own since the clock was read: the drop waits for its return
                offset = held[-1]  # the newest connection's
                if handover is not None and not delivered:
                    handover.republish()  # the board lost the message: it takes it again at its resubscription
            else:
                proxy.stall(duration)
            self.fault_events.append({"kind": kind, "t_s": now, "offset": offset, "duration_s": duration})
            if kind == "drop":
                break  # the next drop falls on the next connection (two due at once: this tick came late)

    def _events(self, link: dict[str, Any] | None) -> int:
        """Complete the fault events with the link's fired faults and the power cuts; their count."""
        if self.fault.rate is None:
            return 0
        start = self.phases.get("t_publish_start") or 0.0
        resumed = sorted(_retry_starts(link or {}, self._package_size, self.clock.t0 + start))
        for event in self.fault_events:  # a drop's cost: until the package flows again on the next connection
            if event["kind"] == "drop":
                event["duration_s"] = next((t - event["t_s"] for t in resumed if t > event["t_s"]), math.nan)
        kind = {"corrupt": "bitflip", "stall": "power"}
        for name, offset, t in (link or {}).get("faults_fired", []):
            if name in kind:
                t_s = t - self.clock.t0 - start
                self.fault_events.append({"kind": kind[name], "t_s": t_s, "offset": offset, "duration_s": 0.0})
        self.fault_events.sort(key=lambda e: e["t_s"])
        return len(self.fault_events)

    def _check_real_board(self) -> None:
        """What a trial on a real board can and cannot do (no link profile or fault between it and its broker)."""
        cfg = self.config
        if cfg.patch is None and self.bench.firmware is None:
            raise LabError(f"a trial on the real board {cfg.board} needs the patch to publish (newer than it runs)")
        if self.fault.kind == "power-loss":
            check_power_hook(cfg.board, self.bench.power)
        elif self.fault.kind != "none" or not math.isnan(cfg.rate_Bps) or cfg.latency_ms:
            raise LabError("link profiles and faults need the virtual board (a real board connects to its own broker)")
        if self.bench.firmware is None:
            if not self.bench.allow_demo_image:
                raise LabError(
                    f"refusing to publish otalab's demo image (no application code) to the real board {cfg.board}: "
                    "give Bench(firmware=...) its firmware, or allow_demo_image=True"
                )
            self.notes.append("demo image deployed to a real board (allowed)")

    def _patch(self) -> int:
        """The patch the update carries: the trial's, else the firmware's, else one above the virtual board's."""
        if self.config.patch is not None:
            return self.config.patch
        return self.bench.firmware.patch if self.bench.firmware is not None else BOARD_PATCH + 1

    def _quiet(self, package_bytes: int) -> float:
        """The quiet window of a real board: the bench's, or :func:`quiet_window` at the board's link rate."""
        if self.bench.quiet_s is not None:
            return self.bench.quiet_s
        rate = self.bench.board_rate_Bps if math.isnan(self.config.rate_Bps) else self.config.rate_Bps
        return quiet_window(package_bytes, rate, self.bench.restart_delay + BOOT_S)

    def _check_stop(self) -> None:
        if self.bench.stop.is_set():
            raise TrialStopped(f"trial {self.config.trial_id} stopped with its campaign")

    def _flag(self, flag: TrialFlag) -> None:
        if flag not in self.flags:
            self.flags.append(flag)

    def _until_ready(self, watch: BrokerLogWatch, client: str, topic: str, timeout: float) -> None:
        """Wait until the broker's log shows ``client`` subscribed to ``topic`` (a note if it does not)."""
        mark = watch.mark
        if watch.subscribed(client, topic):
            return
        # a new subscription that still holds (the state is the log's latest when the predicate runs)
        seen = watch.wait_for(
            lambda e: _is_subscription(e, client, topic) and watch.subscribed(client, topic), timeout, after=mark
        )
        if seen is None:
            self.notes.append(f"the broker's log shows no subscription of {client!r} to {topic} within {timeout:g}s")

    def _broker_flags(
        self, watch: BrokerLogWatch, mark: int, publish_mark: int, client: str, topic: str, size: int
    ) -> None:
        """Flags from the broker's log: this package not delivered, another package's retained copy sent.
        A board can decide (e.g. reject a corrupt file) before the log's reader has the delivery's line:
        it is waited for (:data:`LOG_LAG_S`) before the trial says the package was not delivered."""
        self.evidence.add("broker")
        if "t_broker_sent" not in self.phases:
            sent = watch.wait_for(lambda e: _is_delivery(e, client, topic, size), LOG_LAG_S, after=publish_mark)
            if sent is None:
                self._flag(TrialFlag.NOT_DELIVERED)
            else:
                self.phases["t_broker_sent"] = self.clock.of_wall(sent.t)
        deliveries = [e for e in watch.events(mark) if _is_delivery(e, client, topic, None) and e.size]
        ours = [e for e in deliveries if e.size == size]
        if any(e.size != size and e.retained for e in deliveries) or len(ours) > 1:
            self._flag(TrialFlag.STALE_RETAINED)

    def _check_package(self, line: ConsoleLine) -> None:
        """Does a console line show this trial's package? A mismatch flags :attr:`TrialFlag.FOREIGN_PACKAGE`."""
        if self.facts is None:
            return
        checked = self.facts.check(line)
        if checked is None:
            return
        name, ok = checked
        self.evidence.add(name)
        if not ok:
            self._flag(TrialFlag.FOREIGN_PACKAGE)
            self.notes.append(f"another package on the console: {line.line.strip()}")

    def _clear(self, url: str, tls: TlsOptions) -> None:
        with contextlib.suppress(OtaLabError):
            deploy(None, url, tls=tls, clear=True, timeout=10)

    def _start_proxy(self, stack: contextlib.ExitStack, base_url: str) -> LinkProxy | None:
        profile = self._profile()
        timed = TimingProfile(self.config.timing) is not TimingProfile.NONE
        if profile is None and self.fault.kind == "none" and not timed:
            # a rate fault needs the proxy too; so does a device-timed trial, whose transfer the proxy times
            # (t_delivered) as it times the faulted trials' it is compared with
            return None
        url = parse_url(base_url)
        proxy = LinkProxy(url.host, url.port, profile)
        stack.enter_context(proxy)
        return proxy

    def _start_board(
        self, stack: contextlib.ExitStack, base_url: str, tls: TlsOptions, proxy: LinkProxy | None
    ) -> VirtualBoard:
        from otalib.board.virtual import VirtualBoard

        cfg = self.config
        flash = self.bench.workdir / f"flash-{cfg.trial_id}-{time.monotonic_ns()}.bin"
        stack.callback(lambda: flash.unlink(missing_ok=True))
        board = VirtualBoard(
            flash,
            base_url,
            self._device_build(),
            tls=tls,
            link=proxy.address if proxy is not None else None,
            restart_delay=self.bench.restart_delay,
            name=f"trial-{cfg.trial_id}",
            timing=cfg.timing,
            timing_seed=self._timing_rng(),
            client_id=self.client_id,
        )
        stack.callback(board.stop)
        board.start()
        return board

    def _timing_rng(self) -> Any:
        """The board's timing draws: from the rate fault's seed (else the bench's) and the trial id, as the faults'."""
        seed = self.fault.rate.seed if self.fault.rate is not None else self.bench.seed
        return trial_rng(seed, f"timing:{self.config.trial_id}")

    def _until_subscribed(self, board: VirtualBoard, tracker: OutcomeTracker, timeout: float = 15.0) -> int:
        """Feed the boot lines to the tracker until the board subscribed; return the console cursor."""
        try:
            return follow_subscription(board, tracker, timeout, suback=board.suback).cursor
        except BoardError as exc:
            raise LabError(f"{exc}: {board.status}") from None

    def _fresh_start(self, board: SerialBoard, tracker: OutcomeTracker, timeout: float = 30.0) -> int:
        """Start a real board's trial from a known state: reset it (RTS -> EN, or the power hook),
        feed its boot to the tracker until it runs and, where its console says so, has subscribed;
        return the console cursor. ``BoardReset.NONE``: the board as it is (its lines so far)."""
        if self.bench.reset is BoardReset.NONE:
            return 0
        start = board.end
        try:
            if self.bench.reset is BoardReset.RTS:
                board.reset()
            else:
                board.power_cycle()
        except BoardError as exc:
            raise LabError(f"cannot reset the board for a fresh start: {exc}") from None
        self.notes.append(f"board reset ({self.bench.reset.value})")
        boot = follow_update(board, tracker, "running", timeout, start=start).run()
        if boot.ending is not Ending.UNTIL:
            last = boot.last.line if boot.last is not None else "(none)"
            raise LabError(f"the board did not boot within {timeout:g}s of its reset; last line: {last!r}")
        try:  # at debug level 3 the console shows the subscription; the retained update waits otherwise
            cursor = follow_subscription(board, tracker, 10.0, start=boot.cursor).cursor
        except BoardError:
            self.notes.append("the subscription did not show on the console")
            return boot.cursor
        return self._until_suback(board, tracker, cursor)

    def _until_suback(self, board: Board, tracker: OutcomeTracker, cursor: int, timeout: float = 10.0) -> int:
        """At debug level 3 the device counts what its TCP connection receives: CONNACK (4 bytes) and
        SUBACK (5 bytes) after it connected mean the broker has its subscription. Returns the cursor."""
        received = 0

        def acked(line: ConsoleLine) -> bool:
            nonlocal received
            if line.event == "tcp_received":
                received += line.fields.get("length", 0)
            return received >= MQTT_CONNACK_SUBACK_BYTES

        follow = follow_update(board, tracker, acked, timeout, start=cursor).run()
        if follow.ending is not Ending.UNTIL:
            self.notes.append("the broker's SUBACK did not show on the console")
        return follow.cursor

    def _power_loss_on_console(self, board: Board, package: int) -> Callable[[ConsoleLine], None]:
        """A real board's power cut: the power hook runs once the console shows the transfer reached the
        fault's fraction (its ``TCP … received`` / ``ota_write`` byte counts: debug level 3)."""
        at = int(package * self.fault.fraction)
        received = 0

        def watch(line: ConsoleLine) -> None:
            nonlocal received
            if self.power_cuts:
                return
            if line.event == "tcp_received":
                received += line.fields.get("length", 0)
            elif line.event == "ota_write":  # standard mode: the running byte count
                received = max(received, line.fields.get("total", 0))
            else:
                return
            if received < at:
                return
            board.power_cycle()
            self.power_cuts += 1
            self.notes.append(f"power cut by the hook at {self.clock.now():.3f}s ({received} bytes received)")

        return watch

    def _watch(
        self,
        board: Board,
        tracker: OutcomeTracker,
        cursor: int,
        proxy: LinkProxy | None,
        seen: int,
        handover: _Handover | None = None,
    ) -> Outcome:
        """Follow the console until the tracker decides (or a virtual board's own result after
        its first ``seen`` says it skipped the message); record the phases."""
        power_cut = switched = False
        results = getattr(board, "updates", None)  # a virtual board's own update results

        power_kinds = ("power-loss", RateKind.POWER.value)

        def side_channels() -> Outcome | None:
            nonlocal power_cut, seen
            self._check_stop()
            if proxy is not None and self.fault.rate is not None:
                self._timed_faults(proxy, handover, board)
            if handover is not None:
                if self.fault.kind in ("cut", *power_kinds) and proxy is not None and proxy.stats["faults_fired"]:
                    handover.republish_once()  # the board lost the message: it takes it again at its resubscription
                handover.poll()
            if self.fault.kind in power_kinds and proxy is not None and not power_cut and proxy.stats["faults_fired"]:
                board.power_cycle()  # power lost mid-transfer, while the link holds the rest back
                proxy.resume()
                power_cut = True
                self.power_cuts += 1
                self.notes.append(f"power cut at {self.clock.now():.3f}s")
            if results is not None and len(results) > seen:
                new, seen = results[seen:], len(results)  # the clear's empty message may follow at once
                if any(r.outcome is Decision.SKIPPED for r in new) and not tracker.outcome:
                    return Outcome(OutcomeKind.SKIPPED)  # the board read the patch and ignored the message
            return None

        cut_on_console = (
            self._power_loss_on_console(board, self._package_size)
            if self.fault.kind == "power-loss" and proxy is None
            else None
        )

        def phase(line: ConsoleLine) -> None:
            nonlocal switched, power_cut
            self._check_package(line)
            if cut_on_console is not None and not power_cut:
                cut_on_console(line)
                power_cut = self.power_cuts > 0
                if power_cut and handover is not None:
                    handover.republish_once()  # the board lost the message: it takes it again at its resubscription
            self._phase(line, switched)
            switched |= line.event in ("switch_ok", "rom_activated", "swapping")

        def keep(outcome: Outcome, line: ConsoleLine | None) -> bool:
            if outcome.kind is OutcomeKind.RESTARTED and power_cut and line is not None:
                tracker.rearm()  # the reboot after the power cut: the update comes again (retained)
                tracker.published(line.t)
                return False
            return True

        follow = follow_update(
            board,
            tracker,
            DECIDED,
            self.config.timeout_s,
            start=cursor,
            on_tick=side_channels,
            on_line=phase,
            on_outcome=keep,
        ).run()
        return follow.outcome or Outcome(OutcomeKind.TIMEOUT)

    def _phase(self, line: ConsoleLine, switched: bool) -> None:
        t = self.clock.of_wall(line.t)
        ev = line.event
        if ev in ("ota_write", "build_timestamp_current", "ota_started", "update_slot"):
            self.phases.setdefault("t_first_byte", t)
        if ev in ("ota_write", "signature"):
            self.phases["t_last_byte"] = t
        elif ev == "rom_update_complete":
            self.phases["t_verified"] = t
        elif ev in ("switch_ok", "swapping") and "t_switched" not in self.phases:
            self.phases["t_switched"] = t
        elif ev in BOOT_EVENTS and switched and "t_restart" not in self.phases:
            self.phases["t_restart"] = t
        elif ev == "running" and "t_restart" in self.phases:
            self.phases.setdefault("t_new_version", t)


class _Handover:
    """Clears a trial's retained update as soon as the broker has handed it to the board.

    Handed over: the broker's log shows ``Sending PUBLISH to <client>`` of this package after the
    publish (at once for a subscribed board, at its subscription otherwise). Without the broker's log
    (embedded or external broker): at once after PUBCOMP, or for a virtual board reconnecting, at its
    SUBACK (the broker sends the retained copy with it). A fault that cut the transfer (``cut``,
    ``power-loss``) republishes the package once: the retry a retained message gives a board.
    """

    def __init__(
        self,
        trial: Trial,
        watch: BrokerLogWatch | None,
        mark: int,
        client: str,
        url: str,
        tls: TlsOptions,
        package: bytes,
        board: Board,
    ) -> None:
        self.trial, self.watch, self.mark, self.client = trial, watch, mark, client
        self.url, self.tls, self.package, self.board = url, tls, package, board
        self.topic = parse_url(url).topic
        self.cleared = False
        self.republished = False
        self.first_mark = mark

    def poll(self) -> None:
        """Clear the retained update if the broker has handed it over (since the last publish)."""
        if self.cleared:
            return
        phases = self.trial.phases
        if self.watch is not None:
            sent = self._sent()
            if sent is None:
                return
            phases.setdefault("t_broker_sent", self.trial.clock.of_wall(sent.t))
        elif self.republished:
            suback = getattr(self.board, "suback", None)
            if suback is None or not suback.is_set():
                return
        self.trial._clear(self.url, self.tls)
        self.cleared = True
        phases.setdefault("t_cleared", self.trial.clock.now())

    def _sent(self) -> BrokerEvent | None:
        """The broker's delivery of the package to the board after the publish (after a republish:
        on a connection the board opened after the broker saw the cut one go)."""
        assert self.watch is not None
        events = self.watch.events(self.first_mark)
        dropped = self.republished
        for index, event in enumerate(events, start=self.first_mark):
            if event.client != self.client:
                continue
            if event.kind is BrokerEventKind.DISCONNECTED:
                dropped = False
            elif not dropped and index >= self.mark and _is_delivery(event, self.client, self.topic, len(self.package)):
                return event
        return None

    def republish_once(self) -> None:
        """Publish the package again (retained) after a fault cut its transfer; clear it at the next handover."""
        if not self.republished:
            self.republish()

    def republish(self) -> None:
        """Publish the package again (retained), also after an earlier republish (each drop of a rate fault)."""
        self.republished = True
        if self.watch is not None:
            self.mark = self.watch.mark
        suback = getattr(self.board, "suback", None)
        if suback is not None:
            suback.clear()  # the board's next SUBACK is the one after this republish
        deploy(self.package, self.url, tls=self.tls, timeout=max(30.0, self.trial.config.timeout_s))
        self.cleared = False
        self.trial.notes.append("update republished after the fault (the retry the retained message gave)")


@dataclass(frozen=True)
class PackageFacts:
    """What the board's console may show of one trial's package, to tell it from another trial's."""

    size: int  # the package's bytes (what a standard-mode board writes)
    rom_sizes: frozenset[int]  # the ROM images inside (an advanced-mode board's ``Update slot`` ranges)
    timestamp: int | None  # the OTA file's build timestamp (ms since 1900)
    ota: bytes  # the plaintext OTA file (its ending is the signature/checksum the board prints)

    @classmethod
    def of(cls, update: Any, rom_sizes: Iterable[int], key: LabKey | None = None) -> PackageFacts:
        """An encrypted update's OTA file is decrypted with ``key``: the board prints the plaintext's
        signature (without the key its signature is not compared)."""
        ota = update.ota or b""
        if ota and getattr(update, "encrypted", False):
            ota = _decrypted(ota, key)
        return cls(len(update.package), frozenset(rom_sizes), update.timestamp, ota)

    def check(self, line: ConsoleLine) -> tuple[str, bool] | None:
        """``(what was compared, it matches)`` for a line that shows something of a package, else None."""
        ev, f = line.event, line.fields
        if ev == "signature" and self.ota and f.get("signature"):
            return "signature", self.ota.endswith(bytes.fromhex(f["signature"]))
        if ev == "build_timestamp_file" and self.timestamp is not None:
            shown = int(f["timestamp"])
            return "timestamp", shown in (self.timestamp, self.timestamp & 0xFFFFFFFF)
        if ev == "update_slot" and f.get("end"):  # ``..0)``: the device did not know the size
            return "rom-size", f["end"] - f["start"] in self.rom_sizes
        if ev == "ota_write" and not self.ota:
            return "write-size", int(f["total"]) <= self.size
        return None


def _decrypted(ota: bytes, key: LabKey | None) -> bytes:
    """The plaintext of an encrypted OTA file (empty without the key or when it does not decrypt)."""
    if key is None:
        return b""
    plain = bytearray()
    try:
        SecretstreamReader(key.stream_key, plain.extend).feed(memoryview(ota))
    except OtaLabError:
        return b""
    return bytes(plain)


def _has_package(board: Board, before: int) -> bool:
    """Has the (virtual) board taken a whole message since its first ``before`` results (not abandoned)?"""
    results = getattr(board, "updates", ())[before:]
    return any(r.outcome not in (Decision.ABANDONED, Decision.IGNORED) for r in results)


def payload_forwarded(stats: dict[str, Any]) -> int:
    """Payload bytes of the newest non-empty PUBLISH on the newest connection that the proxy forwarded."""
    conns = stats.get("per_connection") or [{}]
    publishes = [p for p in conns[-1].get("publishes") or [] if p[2] > 0]
    if not publishes:
        return 0
    _start, payload, length = publishes[-1]
    return min(length, max(0, conns[-1]["bytes_down"] - payload))


def _last_delivered(stats: dict[str, Any], size: int) -> float | None:
    """When the board's TCP stack last acknowledged the final byte of a ``size``-byte payload (monotonic)."""
    times = [
        t
        for conn in stats.get("per_connection", ())
        for (_s, _p, length), t in zip(conn["publishes"], conn.get("publish_delivered", ()), strict=False)
        if length == size and t is not None
    ]
    return max(times) if times else None


def _retry_starts(stats: dict[str, Any], size: int, since: float) -> list[float]:
    """Seconds after the monotonic ``since`` at which the package's first byte reached the board on each
    connection (a connection that never got it: when it opened)."""
    starts = []
    for conn in stats.get("per_connection", ()):
        firsts = [times[0] for (_s, _p, length), times in zip(conn["publishes"], conn["publish_times"], strict=False)]
        sizes = [length for _s, _p, length in conn["publishes"]]
        first = next((t for t, n in zip(firsts, sizes, strict=False) if n == size and t is not None), None)
        starts.append((first if first is not None else conn["opened_t"]) - since)
    return starts


def _is_subscription(event: BrokerEvent, client: str, topic: str) -> bool:
    return event.kind is BrokerEventKind.SUBSCRIBED and event.client == client and event.topic == topic


def _is_delivery(event: BrokerEvent, client: str, topic: str, size: int | None) -> bool:
    """The broker sending ``client`` a PUBLISH on ``topic`` (of ``size`` bytes unless None)."""
    return (
        event.kind is BrokerEventKind.SENT
        and event.client == client
        and event.topic == topic
        and (size is None or event.size == size)
    )


def _is_clear(result: Any) -> bool:
    """A virtual board's result for an empty message (the cleared retained update): no trial's package."""
    return result.outcome is Decision.IGNORED and not result.payload_bytes


#: What the board's TCP connection receives from connecting to its SUBACK: CONNACK (4) + SUBACK (5 bytes, one topic).
MQTT_CONNACK_SUBACK_BYTES = 9


def check_power_hook(board: str, power: PowerHook | None) -> None:
    """Refuse a power-loss trial on the real board ``board`` without a power hook."""
    if power is None:
        raise LabError(
            f"a power-loss trial on the real board {board} needs a power hook (a command switching its USB hub "
            "port or relay: the campaign's 'power', e.g. 'uhubctl -a cycle -p 2')"
        )


def _device_time(results: list[Any]) -> dict[str, float]:
    """The device time per phase the trial's messages took, summed (an attempt cut short counts too)."""
    total: dict[str, float] = {}
    for result in results:
        for name, seconds in (getattr(result, "device_time", None) or {}).items():
            total[name] = total.get(name, 0.0) + seconds
    return total


def _board_update(result: Any) -> str:
    """``outcome[:error]@patch`` of a virtual board's :class:`~otalib.board.sim.device.UpdateResult`."""
    error = f":{result.error}" if result.error else ""
    return f"{result.outcome}{error}@{'-' if result.patch is None else result.patch}"


def run_campaign_on_bench(
    spec,
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    config: LabConfig | None = None,
    parallel: int | None = None,
):
    """Run a :class:`~otalib.lab.campaign.CampaignSpec` on one shared :class:`Bench`.

    The spec's key and firmware are loaded (or built) first (:func:`~otalib.lab.inputs.prepare_inputs`,
    ``config``: the lab configuration for ``OTA_KEY``), then the managed brokers the grid needs are
    started, so the run's metadata names their backends and versions; it also records the device
    profiles, the key's fingerprint and the firmware's patch, hashes and build timestamp.
    ``parallel``: trials at once (default the spec's ``parallel``).
    """
    from otalib.lab.campaign import run_campaign
    from otalib.lab.metadata import inputs_metadata

    trials = spec.trials()
    inputs = prepare_inputs(spec, config)  # before anything starts: bad input leaves nothing behind
    if resume:
        from otalib.lab import store

        check_resume(inputs, store.read_metadata(Path(out_dir)), Path(out_dir))
    bench = Bench(
        build_timestamp=spec.build_timestamp,
        key=inputs.key,
        firmware=inputs.firmware,
        allow_demo_image=inputs.allow_demo_image,
        power=PowerHook.from_spec(spec.power),
        reset=spec.board_reset,
        seed=spec.seed or 0,
    )
    with bench:
        for backend, tls in sorted({(t.broker_backend or "auto", t.tls) for t in trials if not t.broker_url}):
            bench.broker(backend, tls)
        metadata = {
            "brokers": bench.describe(),
            "device_profiles": sorted({t.device_profile for t in trials}),
            "board": sorted({t.board for t in trials}),
            **inputs_metadata(inputs),
            "restart_delay_s": bench.restart_delay,
            "firmware_build_timestamp": bench.build_timestamp,
        }
        return run_campaign(
            spec,
            Path(out_dir),
            bench.run,
            progress=progress,
            resume=resume,
            metadata=metadata,
            parallel=parallel,
            stop=bench.stop,
        )
