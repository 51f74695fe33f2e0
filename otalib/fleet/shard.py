"""A shard: some boards of a fleet on one :class:`~otalib.fleet.loop.FleetLoop`, in one process.

:func:`run_shard` powers its boards on (a few hundred a second), waits until each has
subscribed (or failed), reports ``ready`` through its :class:`ShardControl`, then runs
until every board has its outcome, the time limit passes or a stop is asked for. Its
result is plain rows (picklable: a Dask task returns it). Times are wall-clock seconds.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from otalib.fleet.board import BoardEvent, BoardSettings, FleetBoard
from otalib.fleet.flash import SectorPool
from otalib.fleet.loop import FleetLoop
from otalib.formats.prehash import PrehashPool
from otalib.lab.trial import FaultSpec
from otalib.mqtt.url import parse_url
from otalib.net.faults import FaultPlan, trial_rng

#: Boards powered on per second (the broker's listen backlog stays short).
CONNECT_RATE = 400.0
#: Most seconds the boards of a shard may take to subscribe (plus a second per CONNECT_RATE boards).
SUBSCRIBE_TIMEOUT = 10.0
#: Seconds between two samples of the shard's connections and bytes.
SAMPLE_S = 0.25
#: Seconds between two looks at the stop request.
STOP_POLL_S = 0.2
#: Device-time phases (seconds of device time; NaN without a timing model).
DEVICE_PHASES = ("receive_s", "erase_s", "write_s", "verify_s", "switch_s", "reboot_s", "reconnect_s")


class ShardControl(Protocol):
    """How a shard talks to its coordinator."""

    def ready(self) -> None: ...

    def stop_requested(self) -> bool: ...


@dataclass(frozen=True)
class ShardSpec:
    """What one shard runs (picklable)."""

    index: int
    boards: tuple[tuple[str, str], ...]  # (board, group)
    settings: dict[str, BoardSettings] = field(repr=False)
    broker: str
    expect_patch: int
    payload_bytes: dict[str, int]  # group -> the size of the package it gets
    timeout_s: float
    console_dir: str | None = None
    console_bytes: int = 64 * 1024
    keep_consoles: tuple[str, ...] = ()  # boards whose console text comes back
    pty_board: str | None = None  # a board whose console goes to a pty as well


@dataclass
class ShardResult:
    """One shard's rows; ``complete`` is False when it stopped before every board had its outcome."""

    index: int
    boards: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    fault_events: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    t_ready: float
    complete: bool
    consoles: dict[str, str] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    sectors: int = 0


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's open-file limit to its hard limit (children inherit it); (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def fault_plan(fault: str, board: str, seed: int, payload_bytes: int, horizon_s: float) -> tuple[FaultPlan, int | None]:
    """The board's fault realisation (seeded by the spec's seed and the board's name) and a cut offset."""
    spec = FaultSpec.parse(fault)
    if spec.rate is not None:
        rate = spec.rate
        return rate.draw(trial_rng(rate.seed or seed, board), payload_bytes, horizon_s), None
    at = int(payload_bytes * spec.fraction)
    if spec.kind == "corrupt":
        return FaultPlan(flipped_bits=(at * 8,)), None
    if spec.kind == "power-loss":
        return FaultPlan(power_at=at), None
    if spec.kind == "cut":
        return FaultPlan(), at
    return FaultPlan(), None


def subscribe_timeout(boards: int) -> float:
    """Seconds ``boards`` boards may take to power on and subscribe."""
    return SUBSCRIBE_TIMEOUT + boards / CONNECT_RATE


def peak_rss_bytes() -> int:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_shard(spec: ShardSpec, control: ShardControl) -> ShardResult:
    """Run the shard's boards (see the module docstring)."""
    raise_nofile_limit()
    url = parse_url(spec.broker)
    credentials = (url.username, url.password) if url.username is not None else None
    loop = FleetLoop()
    pool, prehash_pool = SectorPool(), PrehashPool()  # equal flash sectors stored once, equal hash steps done once
    console_dir = Path(spec.console_dir) if spec.console_dir else None
    boards: list[FleetBoard] = []
    for name, group in spec.boards:
        settings = spec.settings[group]
        plan, cut_at = fault_plan(settings.fault, name, settings.seed, spec.payload_bytes[group], spec.timeout_s)
        board = FleetBoard(
            name,
            settings,
            loop,
            host=url.host,
            port=url.port,
            credentials=credentials,
            pool=pool,
            prehash_pool=prehash_pool,
            expect_patch=spec.expect_patch,
            plan=plan,
            cut_at=cut_at,
            console_bytes=spec.console_bytes,
            console_log=console_dir / f"{name}.log" if console_dir else None,
        )
        boards.append(board)
        if name == spec.pty_board:
            path = board.console.attach_pty()
            attached = getattr(control, "console_attached", None)
            if attached is not None:
                attached(name, path)
    samples: list[dict[str, Any]] = []
    stop = {"asked": False}

    def sample() -> None:
        samples.append(
            {
                "shard": spec.index,
                "t": time.time(),
                "connected": sum(b.connected for b in boards),
                "bytes_received": sum(b.bytes_received for b in boards),
                "done": sum(b.done for b in boards),
            }
        )
        loop.call_later(SAMPLE_S, sample)

    def poll_stop() -> None:
        if control.stop_requested():
            stop["asked"] = True
            loop.stopped = True
        else:
            loop.call_later(STOP_POLL_S, poll_stop)

    t_ready = math.nan
    complete = False
    try:
        for i, board in enumerate(boards):
            loop.call_later(i / CONNECT_RATE, board.power_on)
        sample()
        poll_stop()
        deadline = time.monotonic() + subscribe_timeout(len(boards))
        loop.run(lambda: all(b.subscribed or b.done for b in boards), deadline)
        if not stop["asked"]:
            t_ready = time.time()
            control.ready()
            loop.run(lambda: all(b.done for b in boards), time.monotonic() + spec.timeout_s)
        complete = not stop["asked"]
        sample()
    finally:
        for board in boards:
            board.stop()
        loop.close()
    return ShardResult(
        spec.index,
        [_board_row(b, spec.index, complete) for b in boards],
        [
            {"board": b.name, "group": b.group, "t": t, "event": event.value, "detail": detail}
            for b in boards
            for t, event, detail in b.timeline
        ],
        [{"board": b.name, "group": b.group, **e} for b in boards for e in b.fault_events],
        samples,
        t_ready,
        complete,
        {b.name: b.console.text() for b in boards if b.name in spec.keep_consoles},
        peak_rss_bytes(),
        pool.sectors,
    )


def _first(board: FleetBoard, event: BoardEvent) -> float:
    return next((t for t, e, _ in board.timeline if e is event), math.nan)


def _board_row(board: FleetBoard, shard: int, complete: bool) -> dict[str, Any]:
    if board.outcome is not None:
        outcome, error = board.outcome.kind.value, board.outcome.error.value if board.outcome.error else None
    elif complete:  # the time limit passed: no decision
        outcome, error = "timeout", None
    else:  # stopped before the end: unknown
        outcome, error = None, None
    detail = board.detail or (board.last_error or "")
    phases = board.device_time()
    done = _first(board, BoardEvent.DONE)
    return {
        "board": board.name,
        "group": board.group,
        "shard": shard,
        "outcome": outcome,
        "error": error,
        "detail": detail,
        "t_boot": _first(board, BoardEvent.BOOT),
        "t_connected": _first(board, BoardEvent.CONNECTED),
        "t_subscribed": _first(board, BoardEvent.SUBSCRIBED),
        "t_first_byte": _first(board, BoardEvent.RECEIVING),
        "t_decided": _first(board, BoardEvent.DECIDED),
        "t_done": done,
        "t_updated": done if outcome == "updated" else math.nan,
        "connects": board.connects,
        "deliveries": board.deliveries,
        "bytes_received": board.bytes_received,
        "fault_events": len(board.fault_events),
        **{phase: float(phases.get(phase, math.nan)) for phase in DEVICE_PHASES},
    }
