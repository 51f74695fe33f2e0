"""Faults that happen at rates: seeded stochastic schedules for the link and the board.

A rate fault is written ``KIND:NAME=VALUE[,NAME=VALUE]`` (``seed=N`` optional in every kind):

- ``drops:rate=R``: disconnects as a Poisson process, R per second of connection: its clock
  (:func:`connected_seconds`) runs from the publish while the board's connection is open, so no drop
  falls while it reconnects (the process :mod:`otalib.lab.analytic` predicts);
- ``outages:every=S,for=D``: link outages with exponential gaps (mean S s) and lengths (mean D s),
  stalling traffic (longer than the keepalive they become disconnects);
- ``power:p=P``: with probability P, power is lost at a uniformly random byte of the payload;
- ``bitflips:ber=B``: independent bit errors on the downstream payload at bit error rate B.

:func:`trial_rng` makes a trial's generator from the seed and the trial id, so the same campaign
spec draws the same realisations; :meth:`RateFault.draw` draws a :class:`FaultPlan`.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

from otalib.errors import UsageError
from otalib.net.link import Fault


class RateKind(enum.Enum):
    """The kinds of stochastic fault."""

    DROPS = "drops"
    OUTAGES = "outages"
    POWER = "power"
    BITFLIPS = "bitflips"


#: Parameters of each kind: name -> (check, what it must be).
_PARAMS: dict[RateKind, dict[str, tuple[str, str]]] = {
    RateKind.DROPS: {"rate": ("positive", "disconnects per second, > 0")},
    RateKind.OUTAGES: {
        "every": ("positive", "mean seconds between outages, > 0"),
        "for": ("positive", "mean seconds, > 0"),
    },
    RateKind.POWER: {"p": ("probability", "a probability, 0..1")},
    RateKind.BITFLIPS: {"ber": ("probability", "a bit error rate, 0..1")},
}
RATE_KINDS: tuple[str, ...] = tuple(kind.value for kind in RateKind)
#: Most events one schedule may hold (a bad rate fails at parse time, not as a million-event plan).
MAX_EVENTS = 100_000


def is_rate_fault(text: str) -> bool:
    """Whether ``text`` names a rate fault (``KIND:...`` with a rate kind)."""
    return (text or "").partition(":")[0] in RATE_KINDS


@dataclass(frozen=True)
class FaultPlan:
    """One realisation: drop times (s of connection from the publish), outages (s from the publish), a
    power-loss byte, flipped bits."""

    drops_s: tuple[float, ...] = ()
    outages_s: tuple[tuple[float, float], ...] = ()  # (start, duration)
    power_at: int | None = None  # payload byte offset
    flipped_bits: tuple[int, ...] = ()  # payload bit offsets (byte = bit // 8, mask = 0x80 >> bit % 8)

    def link_faults(self) -> list[Fault]:
        """The proxy faults of the payload-offset events: the power loss (a stall held until the power
        is cut, as ``power-loss``) and one ``corrupt`` per byte with flipped bits (its XOR mask)."""
        faults = (
            [Fault("stall", at_byte=self.power_at, duration_s=None, within="payload")]
            if self.power_at is not None
            else []
        )
        masks = sorted(self.byte_masks().items())
        return faults + [Fault("corrupt", at_byte=at, xor=mask, within="payload") for at, mask in masks if mask]

    def timed(self) -> list[tuple[float, str, float]]:
        """The time-based events in order: (seconds, ``drop`` or ``outage``, outage length)."""
        return sorted([(t, "drop", 0.0) for t in self.drops_s] + [(t, "outage", d) for t, d in self.outages_s])

    def due(self, now_s: float, fired: int) -> list[tuple[float, str, float]]:
        """The time-based events due by ``now_s`` after the first ``fired`` of them."""
        return [event for event in self.timed()[fired:] if event[0] <= now_s]

    def byte_masks(self) -> dict[int, int]:
        """Flipped bits as {payload byte offset: XOR mask}."""
        masks: dict[int, int] = {}
        for bit in self.flipped_bits:
            masks[bit // 8] = masks.get(bit // 8, 0) ^ (0x80 >> (bit % 8))
        return masks


@dataclass(frozen=True)
class RateFault:
    """A parsed rate fault; see the module docstring."""

    kind: RateKind
    params: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> RateFault:
        """Parse ``KIND:NAME=VALUE,...``; :class:`UsageError` (one line) on anything bad."""
        head, _, body = text.partition(":")
        try:
            kind = RateKind(head)
        except ValueError:
            raise UsageError(f"unknown rate fault {text!r}: one of {', '.join(RATE_KINDS)}") from None
        spec = _PARAMS[kind]
        values: dict[str, float] = {}
        seed = 0
        for item in filter(None, body.split(",")):
            name, eq, value = item.partition("=")
            name = name.strip()
            if not eq:
                raise UsageError(f"bad rate fault {text!r}: expected NAME=VALUE, got {item!r}")
            if name == "seed":
                try:
                    seed = int(value)
                except ValueError:
                    raise UsageError(f"bad seed in {text!r}: an integer >= 0") from None
                if seed < 0:
                    raise UsageError(f"bad seed in {text!r}: an integer >= 0")
                continue
            if name in values:
                raise UsageError(f"bad rate fault {text!r}: {name} given twice")
            if name not in spec:
                raise UsageError(f"unknown parameter {name!r} in {text!r}: {kind.value} takes {', '.join(spec)}")
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            check, what = spec[name]
            ok = math.isfinite(number) and (number > 0 if check == "positive" else 0 <= number <= 1)
            if not ok:
                raise UsageError(f"bad {name} in {text!r}: {what}")
            values[name] = number
        missing = [name for name in spec if name not in values]
        if missing:
            example = ",".join(f"{n}=..." for n in spec)
            raise UsageError(f"rate fault {text!r} needs {', '.join(missing)} (e.g. {kind.value}:{example})")
        return cls(kind, values, seed)

    def draw(self, rng: np.random.Generator, payload_bytes: int, horizon_s: float) -> FaultPlan:
        """A realisation for a payload of ``payload_bytes`` over ``horizon_s`` seconds of transfer."""
        p = self.params
        if self.kind is RateKind.DROPS:
            return FaultPlan(drops_s=tuple(_poisson_times(rng, p["rate"], horizon_s)))
        if self.kind is RateKind.OUTAGES:
            outages, t = [], 0.0
            while len(outages) < MAX_EVENTS:
                t += float(rng.exponential(p["every"]))
                if t >= horizon_s:
                    break
                length = float(rng.exponential(p["for"]))
                outages.append((t, length))
                t += length
            return FaultPlan(outages_s=tuple(outages))
        if self.kind is RateKind.POWER:
            fires = rng.random() < p["p"] and payload_bytes > 0
            return FaultPlan(power_at=int(rng.integers(0, payload_bytes)) if fires else None)
        return FaultPlan(flipped_bits=tuple(_geometric_positions(rng, p["ber"], payload_bytes * 8)))


def _poisson_times(rng: np.random.Generator, rate: float, horizon_s: float) -> list[float]:
    times, t = [], 0.0
    while len(times) < MAX_EVENTS:
        t += float(rng.exponential(1.0 / rate))
        if t >= horizon_s:
            break
        times.append(t)
    return times


def _geometric_positions(rng: np.random.Generator, ber: float, n_bits: int) -> list[int]:
    """Bit positions of independent errors at rate ``ber`` in ``n_bits``: geometric gaps, no per-bit loop."""
    if ber <= 0 or n_bits <= 0:
        return []
    positions: list[int] = []
    pos = -1
    while len(positions) < MAX_EVENTS:
        batch = rng.geometric(ber, size=max(16, min(4096, int(n_bits * ber * 1.2) + 16)))
        for step in np.cumsum(batch) + pos:
            if step >= n_bits:
                return positions
            positions.append(int(step))
        pos = positions[-1]
    return positions


def connected_seconds(stats: dict, since: float, now: float | None = None) -> float:
    """Seconds the link's connections (a :attr:`~otalib.net.link.LinkProxy.stats`) were open between the
    monotonic times ``since`` and ``now`` (default: now): the clock of ``drops:rate=R``."""
    now = time.monotonic() if now is None else now
    total = 0.0
    for conn in stats.get("per_connection", ()):
        end = conn["closed_t"] if conn["closed_t"] is not None else now
        total += max(0.0, min(end, now) - max(conn["opened_t"], since))
    return total


def trial_rng(seed: int, trial_id: str) -> np.random.Generator:
    """The generator of one trial: from the spec's ``seed`` and the trial id (same spec, same draws)."""
    digest = hashlib.sha256(f"{seed}:{trial_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))
