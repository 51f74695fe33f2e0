"""A fleet's results as tidy data: one row per board, the timeline of state changes, the load.

Written to a folder: ``boards.parquet`` (one row per board: its group's fields, outcome,
times in seconds from the publish, device-time phases, fault event count),
``timeline.parquet`` (board, group, ``t_s``, event, detail), ``load.parquet`` (per shard
and sample: boards connected, bytes the broker delivered), ``fault_events.parquet`` and
``metadata.json`` (as a campaign's, plus ``status``: ``running`` while the fleet runs,
then ``complete`` or ``incomplete``). :func:`load_fleet` reads them back.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from otalib.errors import LabError
from otalib.fleet.shard import DEVICE_PHASES, ShardResult
from otalib.lab.metadata import collect_metadata
from otalib.lab.store import read_metadata, write_file, write_metadata

if TYPE_CHECKING:
    from otalib.fleet.session import FleetSession

BOARDS = "boards.parquet"
TIMELINE = "timeline.parquet"
LOAD = "load.parquet"
FAULT_EVENTS = "fault_events.parquet"
#: Group fields copied onto each board's row.
GROUP_FIELDS = ("chip", "version", "app_id", "mode", "key", "profile", "timing", "link", "fault")
TIME_COLUMNS = ("t_boot", "t_connected", "t_subscribed", "t_first_byte", "t_decided", "t_done", "t_updated")


@dataclass
class FleetResult:
    """A fleet's frames and metadata; ``complete`` False: stopped early (outcomes missing are None)."""

    boards: pd.DataFrame
    timeline: pd.DataFrame
    load: pd.DataFrame
    fault_events: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    consoles: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.meta.get("status") == "complete"

    @classmethod
    def concat(cls, results: list[FleetResult]) -> FleetResult:
        """Several fleets' frames as one (to chart them side by side; group names should differ)."""
        frames = [[getattr(r, name) for r in results] for name in ("boards", "timeline", "load", "fault_events")]
        return cls(*(pd.concat(f, ignore_index=True) for f in frames), meta={"fleets": [r.meta for r in results]})

    def outcomes(self) -> pd.DataFrame:
        """Boards per group and outcome."""
        return self.boards.groupby(["group", "outcome"], dropna=False).size().unstack(fill_value=0)

    def time_to(self, fraction: float, group: str | None = None) -> float:
        """Seconds from the publish until ``fraction`` of the boards (of ``group``) were updated (NaN: never)."""
        boards = self.boards if group is None else self.boards[self.boards["group"] == group]
        return time_to_fraction(boards["t_updated"], fraction)


def time_to_fraction(t_updated: pd.Series, fraction: float) -> float:
    """When ``fraction`` of these boards had updated (NaN if fewer ever did)."""
    n = len(t_updated)
    need = math.ceil(fraction * n - 1e-9)
    times = t_updated.dropna().sort_values().to_numpy()
    if n == 0 or need < 1 or len(times) < need:
        return math.nan
    return float(times[need - 1])


def assemble(
    session: FleetSession,
    shards: list[ShardResult],
    t_publish: float | None,
    deploys: list[dict[str, Any]],
    broker: dict[str, Any],
    *,
    complete: bool,
) -> FleetResult:
    """One :class:`FleetResult` from the shards' rows (times made relative to the publish)."""
    complete = complete and all(s.complete for s in shards) and len(shards) == (session._shard_total or len(shards))
    t0 = (
        t_publish
        if t_publish is not None
        else min((s.t_ready for s in shards if not math.isnan(s.t_ready)), default=0.0)
    )
    groups = {g.name: g.describe() for g in session.spec.groups}
    rows = [row for s in shards for row in s.boards]
    boards = pd.DataFrame(rows, columns=_board_columns())
    for name in GROUP_FIELDS:
        boards[name] = boards["group"].map(
            lambda g, n=name: groups[g][n] if groups[g][n] is not None else session.spec.update.mode.value
        )
    for col in TIME_COLUMNS:
        boards[col] = boards[col].astype("float64") - t0
    boards = boards.sort_values("board", kind="stable").reset_index(drop=True)
    timeline = pd.DataFrame([r for s in shards for r in s.timeline], columns=["board", "group", "t", "event", "detail"])
    timeline.insert(2, "t_s", timeline.pop("t").astype("float64") - t0)
    timeline = timeline.sort_values(["t_s", "board"], kind="stable").reset_index(drop=True)
    load = pd.DataFrame(
        [r for s in shards for r in s.samples], columns=["shard", "t", "connected", "bytes_received", "done"]
    )
    load.insert(1, "t_s", load.pop("t").astype("float64") - t0)
    events = pd.DataFrame(
        [r for s in shards for r in s.fault_events], columns=["board", "group", "kind", "t_s", "offset", "duration_s"]
    )
    meta = collect_metadata(
        {
            "kind": "fleet",
            "status": "complete" if complete else "incomplete",
            "spec": session.spec.to_dict(),
            "boards": session.spec.count,
            "shards": len(shards),
            "workers": session.workers,
            "scheduler": session.scheduler,
            "broker": broker,
            "t_publish": t_publish,
            "packages": {
                topic: {
                    "bytes": p.size,
                    "sha256": p.update.sha256,
                    "mode": p.update.mode.value,
                    "patch": p.update.patch,
                }
                for topic, p in session.packages.items()
            },
            "deploys": deploys,
            "verify_key_sha256": _fingerprint(session.key.verify_key),
            "estimate": session.estimate.describe(),
            "peak_rss_bytes": max((s.peak_rss_bytes for s in shards), default=0),  # the largest shard process
            "peak_rss_total_bytes": sum(s.peak_rss_bytes for s in shards),  # every shard process's peak, summed
            "dashboard": getattr(session._executor, "dashboard_link", None),
        }
    )
    consoles = {k: v for s in shards for k, v in s.consoles.items()}
    return FleetResult(boards, timeline, load, events, meta, consoles)


def _fingerprint(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _board_columns() -> list[str]:
    return [
        "board", "group", "shard", "outcome", "error", "detail", *TIME_COLUMNS[:6], "t_updated",
        "connects", "deliveries", "bytes_received", "fault_events", *DEVICE_PHASES,
    ]  # fmt: skip


def _parquet(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()


def check_out_dir(out: Path) -> None:
    """A fleet writes into a new (or empty) folder."""
    if out.exists() and not out.is_dir():
        raise LabError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise LabError(f"{out} is not empty: choose a new folder for the fleet's results")


def write_started(out: Path, session: FleetSession) -> None:
    """Make the folder and mark it ``running`` (a fleet killed outright leaves it so: incomplete)."""
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    write_metadata(out, collect_metadata({"kind": "fleet", "status": "running", "spec": session.spec.to_dict()}))


def write_result(out: Path, result: FleetResult) -> None:
    """Write the frames, then the metadata (its status last)."""
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / BOARDS, _parquet(result.boards))
    write_file(out / TIMELINE, _parquet(result.timeline))
    write_file(out / LOAD, _parquet(result.load))
    write_file(out / FAULT_EVENTS, _parquet(result.fault_events))
    write_metadata(out, result.meta)


def load_fleet(out: str | Path) -> FleetResult:
    """A fleet's results from its folder."""
    out = Path(out)
    meta = read_metadata(out)
    if meta.get("kind") != "fleet":
        raise LabError(f"{out} holds no fleet results")
    frames = {}
    for name in (BOARDS, TIMELINE, LOAD, FAULT_EVENTS):
        path = out / name
        frames[name] = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    return FleetResult(frames[BOARDS], frames[TIMELINE], frames[LOAD], frames[FAULT_EVENTS], meta)
