"""Device time: how long a chip takes to erase, program, hash, decrypt, verify, boot and reconnect.

The figures come from ONE data file, :file:`chips.toml` (package data beside this module), each
with its source (datasheet section, published measurement) or, where nothing is published, an
estimate and its method. :func:`chip` loads a :class:`ChipProfile`; :func:`figures_frame` lists them.

Two parts, kept apart on purpose:

- :class:`TimingModel` is PURE: given a profile and a seeded ``numpy`` generator it RETURNS
  durations (seconds of device time) of operations — :meth:`~TimingModel.erase_sectors`,
  :meth:`~TimingModel.program`, :meth:`~TimingModel.stream_crypto`, :meth:`~TimingModel.verify_signature`,
  :meth:`~TimingModel.boot`, :meth:`~TimingModel.wifi`, :meth:`~TimingModel.mqtt_connect` — and never
  waits. An operation with a typical and a maximum time takes ``typical + (max - typical) * B``,
  ``B ~ Beta(1, beta)`` (``beta`` from the data file); one with a typical only is constant.
- A :class:`Pacer` SPENDS device time: :meth:`Pacer.spend` and :meth:`Pacer.now`. The virtual
  board uses :class:`RealTimePacer` (it sleeps, so its socket is read only as fast as the device
  works and TCP back-pressure reaches the broker); :class:`VirtualClock` only advances a number.
  This is the seam for a fleet runner with many boards in one process: it reuses the model
  (and the :class:`~otalib.board.sim.device.Device`) with a pacer of its own that schedules the
  board's next step at ``now + seconds`` on its own event loop instead of sleeping a thread.

:func:`update_breakdown` is the model's prediction of one whole update (the phases of the
``receive_s`` … ``reconnect_s`` columns) without a board; :func:`calibration_table` compares the
model with the published device figures in the data file.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import numpy as np
import pandas as pd

from otalib.errors import UsageError
from otalib.vocabulary import TimingProfile, UpdateMode

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: The device-time phases of one update, in the order the device passes them (the trial columns).
PHASES = ("receive_s", "erase_s", "write_s", "verify_s", "switch_s", "reboot_s", "reconnect_s")
#: Bytes of the rBoot configuration the switch writes (one page program after one sector erase).
BOOT_CONFIG_BYTES = 16


@dataclass(frozen=True)
class Figure:
    """One figure of the data file: a value (seconds, B/s or bytes) and where it comes from."""

    name: str
    typical: float
    max: float | None = None
    unit: str = "s"
    source: str = ""
    estimate: str = ""

    @property
    def varies(self) -> bool:
        return self.max is not None and self.max > self.typical


@dataclass(frozen=True)
class ChipProfile:
    """The figures of one chip (and its flash) from :file:`chips.toml`."""

    name: str
    description: str
    cpu_mhz: float
    figures: dict[str, Figure]
    beta: float
    sector_bytes: int = 4096
    page_bytes: int = 256
    block_bytes: int = 65536

    def __getitem__(self, name: str) -> Figure:
        return self.figures[name]

    @property
    def tcp_window(self) -> int:
        return int(self.figures["tcp_window"].typical)

    @property
    def tcp_mss(self) -> int:
        return int(self.figures["tcp_mss"].typical)


def _figure(name: str, data: dict[str, Any]) -> Figure:
    if "Bps" in data:
        value, unit, top = float(data["Bps"]), "B/s", None
    elif "bytes" in data:
        value, unit, top = float(data["bytes"]), "B", None
    else:
        value, unit, top = float(data["typical"]), "s", data.get("max")
    return Figure(
        name,
        value,
        None if top is None else float(top),
        unit,
        str(data.get("source", "")),
        str(data.get("estimate", "")),
    )


@functools.cache
def _data() -> dict[str, Any]:
    text = resources.files("otalib.board.sim").joinpath("chips.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def chip(profile: TimingProfile | str) -> ChipProfile:
    """The :class:`ChipProfile` of ``profile`` (:class:`~otalib.errors.UsageError` for ``none`` or unknown)."""
    profile = TimingProfile.parse(profile)
    if profile is TimingProfile.NONE:
        raise UsageError("timing profile 'none' has no chip figures")
    data = _data()
    entry = data["chip"][profile.value]
    figures: dict[str, Figure] = {}
    base = entry.get("base")
    if base is not None:  # a clock variant: the base chip's figures, the CPU-bound ones scaled
        parent = chip(base)
        ratio = float(entry["cpu_mhz"]) / parent.cpu_mhz
        note = str(entry["cpu_scaled_estimate"])
        for name, fig in parent.figures.items():
            if name in entry.get("cpu_scaled", ()):
                scale = ratio if fig.unit == "B/s" else 1.0 / ratio
                top = None if fig.max is None else fig.max * scale
                how = f"{parent.name} x {ratio:g} (clock): {note}; {fig.estimate or fig.source}"
                fig = Figure(name, fig.typical * scale, top, fig.unit, "", how)
            figures[name] = fig
    flash = data["flash"][entry["flash"]]
    for name, value in flash.items():
        if isinstance(value, dict):
            figures.setdefault(name, _figure(name, value))
    for name, value in entry.items():
        if isinstance(value, dict):
            figures[name] = _figure(name, value)
    return ChipProfile(
        profile.value,
        str(entry["description"]),
        float(entry["cpu_mhz"]),
        figures,
        float(data["variation"]["beta"]),
        int(flash["sector_bytes"]),
        int(flash["page_bytes"]),
        int(flash["block_bytes"]),
    )


def profiles() -> list[TimingProfile]:
    """The profiles that have chip figures (all but ``none``)."""
    return [p for p in TimingProfile if p is not TimingProfile.NONE]


def figures_frame() -> pd.DataFrame:
    """Every figure of every chip profile: chip, figure, typical, max, unit, source, estimate."""
    rows = []
    for profile in profiles():
        for fig in chip(profile).figures.values():
            rows.append(
                {
                    "chip": profile.value,
                    "figure": fig.name,
                    "typical": fig.typical,
                    "max": math.nan if fig.max is None else fig.max,
                    "unit": fig.unit,
                    "source": fig.source,
                    "estimate": fig.estimate,
                }
            )
    rows.append(
        {
            "chip": "all",
            "figure": "variation.beta",
            "typical": float(_data()["variation"]["beta"]),
            "max": math.nan,
            "unit": "",
            "source": "",
            "estimate": str(_data()["variation"]["estimate"]),
        }
    )
    return pd.DataFrame(rows)


#: The figures drawn at random, each from a generator of its own: a total then depends only on how
#: many operations of a kind ran, not on how they interleaved (TCP segmentation is not reproducible).
DRAWN = ("sector_erase_s", "page_program_s", "block_erase_64k_s", "ed25519_verify_s", "boot_s", "wifi_dhcp_s")
DRAWN += ("mqtt_connect_s",)


#: Spreads drawn at once per figure (the same values, in the same order, as one draw per operation).
SPREAD_BLOCK = 512


class _Spreads:
    """One figure's durations from its own generator, drawn in blocks of :data:`SPREAD_BLOCK`.

    ``Generator.beta`` draws element by element from the generator's stream, so a block holds the
    values single draws would have given, in order; :meth:`take` sums them as ``ndarray.sum`` does
    (left to right below 8 values, numpy's pairwise sum from 8), so totals stay bit-identical to
    drawing ``rng.beta(1, beta, size=count)`` per call.
    """

    __slots__ = ("_at", "_beta", "_rng", "_values", "span", "typical")

    def __init__(self, fig: Figure, rng: np.random.Generator | None, beta: float) -> None:
        self.typical = fig.typical
        self.span = (fig.max - fig.typical) if fig.varies and fig.max is not None else None
        self._rng = rng
        self._beta = beta
        self._values: list[float] = []
        self._at = 0

    def take(self, count: int) -> float:
        span = self.span
        if span is None:
            return self.typical * count
        at, end = self._at, self._at + count
        values = self._values
        if end > len(values):
            assert self._rng is not None
            values = self._values = values[at:] + self._rng.beta(1.0, self._beta, max(SPREAD_BLOCK, count)).tolist()
            at, end = 0, count
        self._at = end
        if count < 8:
            total = -0.0
            for value in values[at:end]:
                total += value
        else:
            total = float(np.array(values[at:end]).sum())
        return count * self.typical + span * total


class TimingModel:
    """Durations of device operations for one chip, drawn from ``rng`` (pure: it never waits).

    ``rng``: a seed or a generator; each drawn figure gets a generator of its own made from it.
    """

    def __init__(self, profile: ChipProfile | TimingProfile | str, rng: np.random.Generator | int | None = 0) -> None:
        self.chip = profile if isinstance(profile, ChipProfile) else chip(profile)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        seeds = rng.integers(0, 2**63, size=len(DRAWN))
        self._rngs = {name: np.random.default_rng(int(seed)) for name, seed in zip(DRAWN, seeds, strict=True)}
        self._spreads: dict[str, _Spreads] = {}
        self._rates: dict[str, float] = {}

    # -- draws --
    def draw(self, name: str, count: int = 1) -> float:
        """Seconds that ``count`` operations ``name`` take together (each drawn on its own)."""
        if count <= 0:
            return 0.0
        spreads = self._spreads.get(name)
        if spreads is None:
            spreads = self._spreads[name] = _Spreads(self.chip[name], self._rngs.get(name), self.chip.beta)
        return spreads.take(count)

    def mean(self, name: str) -> float:
        """The mean time of one operation ``name`` under the model's distribution."""
        fig = self.chip[name]
        if not fig.varies:
            return fig.typical
        assert fig.max is not None
        return fig.typical + (fig.max - fig.typical) / (self.chip.beta + 1.0)

    # -- flash --
    def erase_sectors(self, count: int = 1) -> float:
        """``count`` 4 KiB sector erases."""
        return self.draw("sector_erase_s", count)

    def erase_blocks(self, count: int = 1) -> float:
        """``count`` 64 KiB block erases."""
        return self.draw("block_erase_64k_s", count)

    def pages(self, size: int) -> int:
        """Page programs needed for ``size`` bytes written in sequence (a started page counts)."""
        return math.ceil(size / self.chip.page_bytes) if size > 0 else 0

    def program(self, size: int) -> float:
        """Programming ``size`` bytes (whole pages; a partly filled page takes a page program)."""
        return self.draw("page_program_s", self.pages(size))

    def program_pages(self, count: int) -> float:
        """``count`` page programs."""
        return self.draw("page_program_s", count)

    # -- crypto --
    def throughput(self, name: str, size: int) -> float:
        """Seconds to run ``size`` bytes through the algorithm ``name`` (sha512, md5, xchacha20poly1305)."""
        if size <= 0:
            return 0.0
        rate = self._rates.get(name)
        if rate is None:
            rate = self._rates[name] = self.chip[name].typical
        return size / rate

    def stream_crypto(self, size: int, *, signed: bool, encrypted: bool, checksum: bool) -> float:
        """The per-byte crypto of an incoming ``.ota`` stream: SHA-512 for the Ed25519ph signature,
        XChaCha20-Poly1305 (secretstream) decryption, or the MD5 checksum of an unsigned file."""
        seconds = 0.0
        if signed:
            seconds += self.throughput("sha512", size)
        elif checksum:
            seconds += self.throughput("md5", size)
        if encrypted:
            seconds += self.throughput("xchacha20poly1305", size)
        return seconds

    def verify_signature(self) -> float:
        """The Ed25519 verify at the end of a signed file."""
        return self.draw("ed25519_verify_s")

    # -- switch, boot, network --
    def switch(self) -> float:
        """rBoot's boot slot switch: its configuration sector erased and written again."""
        return self.erase_sectors(1) + self.program(BOOT_CONFIG_BYTES)

    def boot(self) -> float:
        """From reset to the application running."""
        return self.draw("boot_s")

    def wifi(self) -> float:
        """Wi-Fi association and DHCP."""
        return self.draw("wifi_dhcp_s")

    def mqtt_connect(self) -> float:
        """TCP connect, MQTT CONNECT/CONNACK and SUBSCRIBE/SUBACK."""
        return self.draw("mqtt_connect_s")


# -- spending device time --
class Pacer(Protocol):
    """Spends device time: a real board sleeps, a simulation advances its clock."""

    def spend(self, seconds: float) -> None: ...

    def now(self) -> float: ...


class VirtualClock:
    """A pacer that never waits: :meth:`now` is the device time spent so far (for models and fleets)."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def spend(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    def now(self) -> float:
        return self.t


@dataclass
class RealTimePacer:
    """Spends device time by sleeping the calling thread until a deadline.

    The deadline carries over between calls, so Python's own work between them counts toward the
    device's time (up to ``slack`` seconds behind: time spent waiting for data is not banked).
    :meth:`interrupt` (a power cut, a stop) ends the current and every later wait at once, until
    :meth:`resume`.
    """

    slack: float = 0.005
    _due: float = 0.0
    _cancel: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        return time.monotonic()

    def spend(self, seconds: float) -> None:
        if seconds <= 0:
            return
        now = time.monotonic()
        self._due = max(self._due, now - self.slack) + seconds
        wait = self._due - now
        if wait > 0:
            self._cancel.wait(wait)

    def interrupt(self) -> None:
        self._cancel.set()

    def resume(self) -> None:
        self._cancel.clear()
        self._due = 0.0


# -- the model's prediction of one update --
def update_breakdown(
    profile: TimingProfile | str,
    size: int,
    mode: UpdateMode | str = UpdateMode.SIGNED,
    *,
    seed: int = 0,
    link_Bps: float | None = None,
    erase: str = "sector",
) -> dict[str, float]:
    """Device time per phase of one ``size``-byte update in ``mode`` (the trial's phase columns).

    ``link_Bps``: the link's rate (None: faster than the device; ``receive_s`` is then 0, else the
    time the device waits for data beyond its own work). ``erase``: ``sector`` (erase as the stream
    arrives, as Sming's writer does) or ``block`` (64 KiB blocks, e.g. a partition erased first).
    """
    model = TimingModel(profile, seed)
    mode = UpdateMode.parse(mode)
    sectors = math.ceil(size / model.chip.sector_bytes)
    if erase == "block":
        erase_s = model.erase_blocks(math.ceil(size / model.chip.block_bytes))
    elif erase == "sector":
        erase_s = model.erase_sectors(sectors)
    else:
        raise UsageError(f"erase {erase!r}: sector or block")
    write_s = model.program(size)
    verify_s = 0.0
    if mode.advanced:
        verify_s = model.stream_crypto(size, signed=mode.signed, encrypted=mode.encrypted, checksum=True)
        if mode.signed:
            verify_s += model.verify_signature()
    busy = erase_s + write_s + verify_s
    receive_s = 0.0 if link_Bps is None else max(0.0, size / link_Bps - busy)
    return {
        "receive_s": receive_s,
        "erase_s": erase_s,
        "write_s": write_s,
        "verify_s": verify_s,
        "switch_s": model.switch(),
        "reboot_s": model.boot(),
        "reconnect_s": model.wifi() + model.mqtt_connect(),
    }


def breakdown_frame(size: int = 1 << 20, mode: UpdateMode | str = UpdateMode.SIGNED, seed: int = 0) -> pd.DataFrame:
    """:func:`update_breakdown` of every chip profile: one row per profile, a column per phase and the total."""
    rows = []
    for profile in profiles():
        phases = update_breakdown(profile, size, mode, seed=seed)
        rows.append(
            {"timing": profile.value, "size": size, "mode": str(mode), **phases, "total_s": sum(phases.values())}
        )
    return pd.DataFrame(rows)


def calibration_table(seed: int = 0) -> pd.DataFrame:
    """The model against the published device figures of the data file, one row per figure.

    Columns: name, chip, bytes, published_s, model_s, ratio (model / published), includes (what the
    published time covers), source. ``model_s`` is the model's erase + write of the bytes (the
    erase strategy of the row), or the whole cycle (download at the device's pace, verify of a
    signed file, switch, the 1 s restart delay, boot, reconnect) for a whole-cycle figure.
    """
    rows = []
    for entry in _data()["calibration"]:
        model = TimingModel(entry["chip"], seed)
        size = int(entry["bytes"])
        how = entry["erase"]
        if how == "cycle":
            phases = update_breakdown(entry["chip"], size, UpdateMode.SIGNED, seed=seed)
            predicted = sum(phases.values()) + 1.0  # the Upgrade sample's restart delay
        elif how == "block":
            predicted = model.erase_blocks(math.ceil(size / model.chip.block_bytes)) + model.program(size)
        else:
            predicted = model.erase_sectors(math.ceil(size / model.chip.sector_bytes)) + model.program(size)
        published = float(entry["published_s"])
        rows.append(
            {
                "name": entry["name"],
                "chip": entry["chip"],
                "bytes": size,
                "published_s": published,
                "model_s": predicted,
                "ratio": predicted / published,
                "includes": entry["includes"],
                "source": entry["source"],
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "PHASES",
    "ChipProfile",
    "Figure",
    "Pacer",
    "RealTimePacer",
    "TimingModel",
    "VirtualClock",
    "breakdown_frame",
    "calibration_table",
    "chip",
    "figures_frame",
    "update_breakdown",
]
