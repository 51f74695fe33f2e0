"""The tidy trial schema: one row per trial, parameters and results as columns.

A trial's configuration (:class:`TrialConfig`) and what it observed
(:class:`TrialResult`) become one row with the columns of :data:`TRIAL_COLUMNS`.
Phase timestamps are seconds on ONE monotonic clock, relative to the trial start.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from otalib.errors import LabError, OtaLabError
from otalib.formats.version import DeviceProfile
from otalib.net.faults import RateFault, is_rate_fault
from otalib.vocabulary import Outcome, OutcomeKind, TimingProfile, UpdateMode

#: Outcome kinds a trial records (a restart into the same firmware is no trial's end), in report order;
#: the recorded string is :attr:`Outcome.text <otalib.vocabulary.Outcome.text>`: ``rejected:<DeviceError>``.
OUTCOMES: tuple[OutcomeKind, ...] = tuple(kind for kind in OutcomeKind if kind is not OutcomeKind.RESTARTED)

#: Phase timestamp columns, in the order a successful update passes them.
PHASES = (
    "t_build",
    "t_publish_start",
    "t_pubcomp",
    "t_broker_sent",
    "t_cleared",
    "t_first_byte",
    "t_delivered",
    "t_last_byte",
    "t_verified",
    "t_switched",
    "t_restart",
    "t_new_version",
    "t_end",
)

#: The phases of a trial's timeline (charts' ``plot_timeline``, stats' ``phase_durations``):
#: label, start column (None = trial start), end column.
TIMELINE_PHASES: tuple[tuple[str, str | None, str], ...] = (
    ("build", None, "t_build"),
    ("publish", "t_publish_start", "t_pubcomp"),
    ("transfer", "t_first_byte", "t_last_byte"),
    ("verify", "t_last_byte", "t_verified"),
    ("switch", "t_verified", "t_switched"),
    ("restart", "t_switched", "t_new_version"),  # the device waits 1 s, reboots, reports its version
)

#: Device-time phase columns: seconds of DEVICE time the (virtual) board's timing model spent per phase
#: of the applied update (NaN when not measured: timing ``none``, a real board, no update applied).
DEVICE_PHASES = ("receive_s", "erase_s", "write_s", "verify_s", "switch_s", "reboot_s", "reconnect_s")


#: Configuration columns (the parameters of a trial), name -> pandas dtype.
CONFIG_COLUMNS: dict[str, str] = {
    "campaign": "str",
    "trial_id": "str",
    "repeat": "int64",
    "size": "int64",
    "mode": "str",
    "tls": "bool",
    "link": "str",
    "rate_Bps": "float64",
    "latency_ms": "float64",
    "fault": "str",
    "device_profile": "str",
    "broker_backend": "str",
    "broker_url": "str",
    "board": "str",
    "patch": "Int64",
    "timeout_s": "float64",
    "app_id": "str",
    "version": "str",
    "timing": "str",
}

#: Result columns, name -> pandas dtype.
RESULT_COLUMNS: dict[str, str] = {
    **dict.fromkeys(PHASES, "float64"),
    "outcome": "str",
    "error": "str",
    "bytes": "int64",
    "throughput_Bps": "float64",
    "started_at": "datetime64[us, UTC]",
    "duration_s": "float64",
    "notes": "str",
    "faults_fired": "str",
    "fault_events": "int64",
    "connections": "Int64",
    "board_updates": "str",
    "flags": "str",
    "evidence": "str",
    **dict.fromkeys(DEVICE_PHASES, "float64"),
}

#: Columns added after the first runs were stored: a frame without them gets these values.
LATER_COLUMNS: dict[str, Any] = {
    "faults_fired": "",
    "fault_events": 0,
    "connections": pd.NA,
    "board_updates": "",
    "t_broker_sent": math.nan,
    "t_cleared": math.nan,
    "t_delivered": math.nan,
    "flags": "",
    "evidence": "",
    "timing": TimingProfile.NONE.value,
    **dict.fromkeys(DEVICE_PHASES, math.nan),
}


class TrialFlag(enum.Enum):
    """Something a trial saw that makes its measurement suspect (the ``flags`` column, ``;``-joined)."""

    #: The console showed bytes of another package (signature/checksum, build timestamp, ROM or write size).
    FOREIGN_PACKAGE = "foreign-package"
    #: OTA activity on the console before this trial's publish started (the previous package still arriving).
    EARLY_FIRST_BYTE = "first-byte-before-publish"
    #: The broker sent the board a retained copy of another package during this trial.
    STALE_RETAINED = "stale-retained-delivery"
    #: The broker's log shows no delivery of this trial's package to the board.
    NOT_DELIVERED = "not-delivered"


#: Every column of a trial frame, in order, name -> pandas dtype.
TRIAL_COLUMNS: dict[str, str] = {**CONFIG_COLUMNS, **RESULT_COLUMNS}


@dataclass(frozen=True)
class TrialConfig:
    """The parameters of one trial (one point of a campaign grid, one repeat)."""

    campaign: str = ""
    repeat: int = 0
    size: int = 65536
    mode: UpdateMode = UpdateMode.STANDARD
    tls: bool = False
    link: str = "unlimited"
    rate_Bps: float = math.nan  # NaN = unlimited
    latency_ms: float = 0.0
    fault: str = "none"
    device_profile: DeviceProfile = DeviceProfile.SMING_61
    broker_backend: str = "mosquitto"
    broker_url: str = ""  # "" = the managed broker; else an external mqtt(s):// URL
    board: str = "virtual"  # or a serial port / rfc2217:// URL
    patch: int | None = None  # None = the packer's default
    timeout_s: float = 60.0
    app_id: str = "test"
    version: str = "4.3.0"
    timing: TimingProfile = TimingProfile.NONE  # the virtual board's device timing model

    def __post_init__(self) -> None:
        for name in _FLOAT_FIELDS:  # 1000 and 1000.0 are one parameter (and one trial id)
            value = getattr(self, name)
            if value is None and name == "rate_Bps":
                value = math.nan
            if _is_number(value):
                object.__setattr__(self, name, float(value))
        check_config(self)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters that define the trial (everything but the campaign name)."""
        values = dataclasses.asdict(self)
        values.pop("campaign")
        if values["timing"] == TimingProfile.NONE:  # the trial ids of runs made before timing existed
            values.pop("timing")
        return values

    @property
    def trial_id(self) -> str:
        """Stable id: a hash of the parameters and the repeat number."""
        canon = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.params.items()}
        text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_row(self) -> dict[str, Any]:
        """The configuration columns of this trial (the broker URL without credentials)."""
        row = {name: getattr(self, name) for name in CONFIG_COLUMNS if name != "trial_id"}
        row["mode"], row["device_profile"] = self.mode.value, self.device_profile.value
        row["timing"] = self.timing.value
        row["trial_id"] = self.trial_id
        row["broker_url"] = redact_url(self.broker_url)
        return {name: row[name] for name in CONFIG_COLUMNS}


_FLOAT_FIELDS = ("rate_Bps", "latency_ms", "timeout_s")


def check_config(config: TrialConfig) -> None:
    """Raise :class:`LabError` (one line) if a parameter of ``config`` is out of range."""

    def bad(name: str, why: str) -> LabError:
        return LabError(f"trial parameter {name}={getattr(config, name)!r}: {why}")

    for name, words in (("mode", UpdateMode), ("device_profile", DeviceProfile), ("timing", TimingProfile)):
        try:
            object.__setattr__(config, name, words(getattr(config, name)))
        except ValueError:
            raise bad(name, f"expected one of {', '.join(w.value for w in words)}") from None
    if not _is_int(config.size) or config.size <= 0:
        raise bad("size", "expected a positive integer (bytes)")
    if not _is_int(config.repeat) or config.repeat < 0:
        raise bad("repeat", "expected an integer >= 0")
    if not isinstance(config.tls, bool):
        raise bad("tls", "expected true or false")
    if config.patch is not None and (not _is_int(config.patch) or config.patch < 0):
        raise bad("patch", "expected an integer >= 0 or null")
    for name in _FLOAT_FIELDS:
        value = getattr(config, name)
        if not _is_number(value):
            raise bad(name, "expected a number")
    if not math.isnan(config.rate_Bps) and config.rate_Bps <= 0:
        raise bad("rate_Bps", "expected a positive rate (or NaN/null for unlimited)")
    if math.isnan(config.latency_ms) or config.latency_ms < 0:
        raise bad("latency_ms", "expected a number >= 0")
    if math.isnan(config.timeout_s) or config.timeout_s <= 0:
        raise bad("timeout_s", "expected a positive number of seconds")
    for name in ("campaign", "link", "fault", "broker_backend", "broker_url", "board", "app_id", "version"):
        if not isinstance(getattr(config, name), str):
            raise bad(name, "expected a string")
    if is_rate_fault(config.fault):  # a fault at a rate: checked here, so a campaign spec fails before it runs
        try:
            RateFault.parse(config.fault)
        except OtaLabError as exc:
            raise LabError(str(exc)) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def redact_url(url: str) -> str:
    """``url`` without user and password (what may go into a data file)."""
    if not url or "@" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def parse_outcome(text: str | Outcome) -> Outcome:
    """A recorded outcome string (``rejected:VerificationFailed``) as an :class:`~otalib.vocabulary.Outcome`.

    Raises :class:`LabError` unless it is one a trial records: a kind of :data:`OUTCOMES`, ``rejected``
    always with the device's error name.
    """
    try:
        outcome = text if isinstance(text, Outcome) else Outcome.parse(text)
    except ValueError:
        outcome = None
    if outcome is None or outcome.kind not in OUTCOMES or (outcome.kind is OutcomeKind.REJECTED) != bool(outcome.error):
        expected = ", ".join(kind.value for kind in OUTCOMES)
        raise LabError(f"invalid trial outcome {str(text)!r}: expected one of {expected} (rejected:<error>)")
    return outcome


def outcome_kinds(outcomes: pd.Series) -> pd.Series:
    """The kind (a string) of each recorded outcome string in ``outcomes``."""
    return outcomes.astype(str).map(lambda text: Outcome.parse(text).kind.value)


@dataclass
class TrialResult:
    """What one trial observed: phase timestamps, outcome, bytes and throughput."""

    config: TrialConfig
    phases: dict[str, float | None] = field(default_factory=dict)
    #: What the trial observed (an outcome string is parsed: ``rejected:VerificationFailed``).
    outcome: Outcome = Outcome(OutcomeKind.TIMEOUT)  # noqa: RUF009 (a frozen dataclass)
    bytes: int = 0
    throughput_Bps: float = math.nan
    notes: str = ""
    started_at: datetime | None = None
    duration_s: float | None = None
    #: What the link did: ``kind@offset`` per fired link fault, ``power-loss`` per power cut (``;``-joined).
    faults_fired: str = ""
    #: How many events a rate fault fired (drops, outages, bit flips, power cuts); their rows: :attr:`events`.
    fault_events: int = 0
    #: The fired events, one dict per event (kind, t_s, offset, duration_s): the run's fault-events side table.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Connections the board made through the link proxy (None: no proxy, not counted).
    connections: int | None = None
    #: The virtual board's own results, one per message: ``outcome[:error]@patch`` (``;``-joined).
    board_updates: str = ""
    #: :class:`TrialFlag` values raised by the trial's evidence checks (``;``-joined).
    flags: str = ""
    #: What the package check compared: ``signature``, ``timestamp``, ``rom-size``, ``write-size``, ``broker``.
    evidence: str = ""
    #: Device time per phase of the applied update (:data:`DEVICE_PHASES` names -> seconds); absent = NaN.
    device_time: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outcome = parse_outcome(self.outcome)
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise LabError(f"unknown trial phase(s): {', '.join(sorted(unknown))}")
        unknown = set(self.device_time) - set(DEVICE_PHASES)
        if unknown:
            raise LabError(f"unknown device-time phase(s): {', '.join(sorted(unknown))}")

    @property
    def error(self) -> str:
        """The device's error name when rejected, else ``""`` (the ``error`` column)."""
        return self.outcome.error.value if self.outcome.error else ""

    def to_row(self) -> dict[str, Any]:
        """One tidy row: the configuration columns then the result columns."""
        row = self.config.to_row()
        for name in PHASES:
            value = self.phases.get(name)
            row[name] = math.nan if value is None else float(value)
        row["outcome"] = self.outcome.text
        row["error"] = self.error
        row["bytes"] = int(self.bytes)
        row["throughput_Bps"] = float(self.throughput_Bps)
        started = self.started_at or datetime.now(timezone.utc)
        stamp = pd.Timestamp(started)
        row["started_at"] = stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")
        duration = self.duration_s
        if duration is None:
            duration = row["t_end"]
        row["duration_s"] = float(duration)
        row["notes"] = self.notes
        row["faults_fired"] = self.faults_fired
        row["fault_events"] = int(self.fault_events)
        row["connections"] = pd.NA if self.connections is None else int(self.connections)
        row["board_updates"] = self.board_updates
        row["flags"] = self.flags
        row["evidence"] = self.evidence
        for name in DEVICE_PHASES:
            value = self.device_time.get(name)
            row[name] = math.nan if value is None else float(value)
        return row


def empty_frame() -> pd.DataFrame:
    """A trial frame with no rows and the schema's columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in TRIAL_COLUMNS.items()})


def validate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the schema's dtypes (extra columns kept, after the schema's).

    Raises :class:`LabError` on missing columns, values that do not fit a column's
    dtype, or invalid outcome strings.
    """
    if not isinstance(df, pd.DataFrame):
        raise LabError(f"expected a pandas DataFrame, got {type(df).__name__}")
    absent = {name: value for name, value in LATER_COLUMNS.items() if name not in df.columns}
    if absent:
        df = df.assign(**{name: [value] * len(df) for name, value in absent.items()})
    missing = [name for name in TRIAL_COLUMNS if name not in df.columns]
    if missing:
        raise LabError(f"trial frame lacks column(s): {', '.join(missing)}")
    columns: dict[str, pd.Series] = {}
    for name, dtype in TRIAL_COLUMNS.items():
        column = df[name].reset_index(drop=True)
        target = _target_dtypes()[name]
        exact = column.dtype == target and not pd.api.types.is_object_dtype(target)
        if exact and not (dtype == "str" and column.isna().any()):
            columns[name] = column  # already right: skip the (slow) conversion
            continue
        try:
            if dtype.startswith("datetime64"):
                columns[name] = pd.to_datetime(column, utc=True).astype(dtype)
            elif dtype == "str":
                column = column.astype(object).where(column.notna(), "")
                columns[name] = column.astype(str).astype("str")
            else:
                columns[name] = column.astype(dtype)
        except (TypeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LabError(f"trial frame column {name!r} is not {dtype}: {first}") from None
    for name in df.columns:
        if name not in TRIAL_COLUMNS:
            columns[name] = df[name].reset_index(drop=True)
    out = pd.DataFrame(columns)
    bad = sorted({o for o in out["outcome"].unique() if not _valid_outcome(o)})
    if bad:
        raise LabError(f"trial frame has invalid outcome(s): {', '.join(map(repr, bad))}")
    return out


@functools.cache
def _target_dtypes() -> dict[str, Any]:
    return {name: pd.Series(dtype=dtype).dtype for name, dtype in TRIAL_COLUMNS.items()}


def _valid_outcome(outcome: str) -> bool:
    try:
        parse_outcome(outcome)
    except LabError:
        return False
    return True
