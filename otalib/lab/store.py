"""A run directory on disk: one parquet file per finished trial, plus metadata.

Layout of ``RUN_DIR``::

    metadata.json            versions, machine, campaign spec, status (written at start, updated at end)
    trials/<trial_id>.parquet  one row per finished trial, each written atomically
    trials.parquet           all trials, consolidated when a campaign completes
    fault_events/<trial_id>.parquet  what a rate fault fired in that trial, one row per event
    fault_events.parquet     all fault events, consolidated when a campaign completes

Every file is written atomically, so an interrupted campaign loses at most the
trial that was running, and :func:`load_run` reads partial runs.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from otalib.errors import InputError, LabError, OutputError
from otalib.fileio import read_input, write_atomic
from otalib.lab.schema import empty_frame, validate_frame

TRIALS_DIR = "trials"
CONSOLIDATED = "trials.parquet"
METADATA = "metadata.json"
EVENTS_DIR = "fault_events"
EVENTS = "fault_events.parquet"
#: The fault-events side table: one row per fired event of a rate fault, name -> pandas dtype.
EVENT_COLUMNS: dict[str, str] = {
    "trial_id": "str",
    "kind": "str",  # drop, outage, bitflip, power
    "t_s": "float64",  # seconds from the publish
    "offset": "int64",  # downstream byte offset on the link
    "duration_s": "float64",  # an outage's length; a drop's cost: until the package flows again; else 0
}


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OS error while writing ``path`` becomes an :class:`OutputError` naming it (``strerror: PATH``)."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"{exc.strerror or type(exc).__name__}: {path}") from None


def write_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; an OS error names ``path``."""
    with writing(path):
        return write_atomic(path, data)


def frame_to_parquet(df: pd.DataFrame) -> bytes:
    """``df`` as parquet bytes (validated against the schema first)."""
    buffer = io.BytesIO()
    validate_frame(df).to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_trial(run_dir: Path, row: dict[str, Any]) -> Path:
    """Write one finished trial's row to ``run_dir/trials/<trial_id>.parquet`` atomically."""
    folder = Path(run_dir) / TRIALS_DIR
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    data = frame_to_parquet(pd.DataFrame([row]))
    return write_file(folder / f"{row['trial_id']}.parquet", data)


def trial_files(run_dir: Path) -> list[Path]:
    """The per-trial parquet files of a run (temp files of unfinished writes excluded)."""
    folder = Path(run_dir) / TRIALS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def done_trial_ids(run_dir: Path) -> set[str]:
    """Ids of the trials a run has finished (from its per-trial files and consolidated file)."""
    done = {p.stem for p in trial_files(run_dir)}
    consolidated = Path(run_dir) / CONSOLIDATED
    if consolidated.is_file():
        done |= set(_read_parquet(consolidated)["trial_id"].astype(str))
    return done


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(read_input(path, "trial data")))
    except InputError as exc:
        raise LabError(str(exc)) from None
    except (pa.ArrowException, OSError, ValueError) as exc:  # what pyarrow raises for a damaged file
        raise LabError(f"cannot read trial data {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    return _read_table(path).to_pandas()


def read_trials(run_dir: Path) -> pd.DataFrame:
    """All trials of a run, once each, ordered by start time (empty frame if none)."""
    run_dir = Path(run_dir)
    paths = trial_files(run_dir)
    consolidated = run_dir / CONSOLIDATED
    if consolidated.is_file():
        paths.insert(0, consolidated)
    tables = [t for t in map(_read_table, paths) if t.num_rows]
    if not tables:
        return empty_frame()
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise LabError(f"trial files of {run_dir} do not share one schema: {str(exc).splitlines()[0]}") from None
    df = validate_frame(table.to_pandas())
    df = df.drop_duplicates("trial_id", keep="last")  # a per-trial file wins over the consolidated copy
    return df.sort_values(["started_at", "trial_id"], kind="stable").reset_index(drop=True)


def consolidate(run_dir: Path) -> pd.DataFrame:
    """Write all of a run's trials to ``run_dir/trials.parquet`` (and its fault events); return the trials."""
    df = read_trials(run_dir)
    write_file(Path(run_dir) / CONSOLIDATED, frame_to_parquet(df))
    events = read_fault_events(run_dir)
    if len(events):
        buffer = io.BytesIO()
        events.to_parquet(buffer, index=False)
        write_file(Path(run_dir) / EVENTS, buffer.getvalue())
    return df


def events_frame(trial_id: str, events: list[dict[str, Any]]) -> pd.DataFrame:
    """One trial's fault events as a frame of :data:`EVENT_COLUMNS`."""
    rows = [{**{"duration_s": 0.0}, **event, "trial_id": trial_id} for event in events]
    df = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    return df.astype(EVENT_COLUMNS)


def write_fault_events(run_dir: Path, trial_id: str, events: list[dict[str, Any]]) -> Path | None:
    """Write one trial's fault events to ``run_dir/fault_events/<trial_id>.parquet`` atomically (none: nothing)."""
    if not events:
        return None
    folder = Path(run_dir) / EVENTS_DIR
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    events_frame(trial_id, events).to_parquet(buffer, index=False)
    return write_file(folder / f"{trial_id}.parquet", buffer.getvalue())


def read_fault_events(run_dir: Path) -> pd.DataFrame:
    """The fault-events side table of a run (per-trial files win over the consolidated copy)."""
    run_dir = Path(run_dir)
    folder = run_dir / EVENTS_DIR
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []
    frames = [_read_parquet(p) for p in files]
    ids = {p.stem for p in files}
    if (run_dir / EVENTS).is_file():
        old = _read_parquet(run_dir / EVENTS)
        frames.insert(0, old[~old["trial_id"].astype(str).isin(ids)])
    frames = [f for f in frames if len(f)]
    if not frames:
        return events_frame("", [])
    df = pd.concat(frames, ignore_index=True)[list(EVENT_COLUMNS)].astype(EVENT_COLUMNS)
    return df.sort_values(["trial_id", "t_s"], kind="stable").reset_index(drop=True)


def write_metadata(run_dir: Path, meta: dict[str, Any]) -> Path:
    """Write ``run_dir/metadata.json`` atomically."""
    text = json.dumps(meta, indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"
    return write_file(Path(run_dir) / METADATA, text.encode())


def read_metadata(run_dir: Path) -> dict[str, Any]:
    """The run's metadata (``{}`` if it has none)."""
    path = Path(run_dir) / METADATA
    if not path.is_file():
        return {}
    try:
        meta = json.loads(read_input(path, "run metadata"))
    except InputError as exc:
        raise LabError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise LabError(f"run metadata {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(meta, dict):
        raise LabError(f"run metadata {path} is not a JSON object")
    return meta


def load_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The trials (tidy frame) and metadata of a run; works on interrupted runs."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LabError(f"no such run directory: {run_dir}")
    has_data = (run_dir / METADATA).is_file() or (run_dir / CONSOLIDATED).is_file() or (run_dir / TRIALS_DIR).is_dir()
    if not has_data:
        raise LabError(f"not a run directory (no {METADATA}, {CONSOLIDATED} or {TRIALS_DIR}/): {run_dir}")
    return read_trials(run_dir), read_metadata(run_dir)


__all__ = [
    "CONSOLIDATED",
    "EVENTS",
    "EVENTS_DIR",
    "EVENT_COLUMNS",
    "METADATA",
    "TRIALS_DIR",
    "consolidate",
    "done_trial_ids",
    "frame_to_parquet",
    "load_run",
    "read_fault_events",
    "read_metadata",
    "read_trials",
    "write_fault_events",
    "write_file",
    "write_metadata",
    "write_trial",
    "writing",
]
