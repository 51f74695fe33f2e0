"""Fixed looks and units of the lab's charts: one colour per outcome and per mode, one marker per link.

Every mapping depends on the category alone, never on which categories a run happens to hold,
so ``bricked`` is the same red and ``wifi`` the same square in every chart of every run.
Sizes are shown in KiB (1024 B), throughputs in KB/s (1000 B/s, as ``otalab deploy`` prints them).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from otalib.errors import DeviceErrorCode
from otalib.net.link import PROFILES
from otalib.vocabulary import Outcome, OutcomeKind, UpdateMode

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Modes in chart order (their colours follow it).
MODES: tuple[str, ...] = tuple(mode.value for mode in UpdateMode)

#: Colours of the outcome kinds (``rejected`` has one per device error: :data:`REJECTED_COLORS`).
OUTCOME_COLORS: dict[str, str] = {
    OutcomeKind.UPDATED.value: "#2ca02c",  # green: the new firmware runs
    OutcomeKind.SKIPPED.value: "#9fb7cc",  # grey-blue: nothing written, old firmware runs (safe)
    OutcomeKind.TIMEOUT.value: "#9467bd",  # purple: no decision seen in time
    OutcomeKind.BRICKED.value: "#d62728",  # red: nothing bootable
    OutcomeKind.RESTARTED.value: "#bcbd22",
}

#: Warm colours for ``rejected:<error>``: a safe refusal (the old firmware keeps running), one per error.
REJECTED_COLORS: dict[str, str] = dict(
    zip(
        (code.value for code in DeviceErrorCode),
        (
            "#ffbb78",  # InvalidFormat
            "#e6a532",  # UnsupportedData
            "#ff7f0e",  # DecryptionFailed
            "#c49c94",  # NoRomFound
            "#dbdb8d",  # RomTooLarge
            "#f7b6d2",  # DowngradeNotAllowed
            "#f0c419",  # VerificationFailed
            "#8c564b",  # FlashWriteFailed
            "#e377c2",  # RomActivationFailed
            "#b5a642",  # OutOfMemory
            "#a0522d",  # Internal
        ),
        strict=True,
    )
)

#: Order of the outcome kinds in a stack (bottom first): the good, the safe, the unknown, the bad.
_KIND_ORDER = (
    OutcomeKind.UPDATED,
    OutcomeKind.SKIPPED,
    OutcomeKind.REJECTED,
    OutcomeKind.RESTARTED,
    OutcomeKind.TIMEOUT,
    OutcomeKind.BRICKED,
)
_ERROR_ORDER = tuple(code.value for code in DeviceErrorCode)

#: Markers of the named link profiles (and of ``unlimited``); other names get one by their hash.
LINK_MARKERS: dict[str, str] = {"unlimited": "o", **dict(zip(PROFILES, "sD^v<>", strict=False))}
_SPARE_MARKERS = "ph*XP8"
#: Six line styles: sizes a factor 2, 4 or 8 apart never share one (log2 of the size, rounded, mod 6).
_LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (3, 1, 1, 1, 1, 1)), (0, (10, 3)))


def _stable_index(text: str, modulo: int) -> int:
    return zlib.crc32(text.encode()) % modulo


def outcome_color(outcome: str) -> str:
    """The colour of a recorded outcome string (``updated``, ``rejected:VerificationFailed``…)."""
    kind, _, error = str(outcome).partition(":")
    if kind == OutcomeKind.REJECTED.value:
        return REJECTED_COLORS.get(error, "#ffd27f")
    return OUTCOME_COLORS.get(kind, "#7f7f7f")


def outcome_sort_key(outcome: str) -> tuple[int, int, str]:
    """Stack order: updated, skipped, rejected (by device error), restarted, timeout, bricked."""
    try:
        parsed = Outcome.parse(outcome)
    except ValueError:
        return (len(_KIND_ORDER), 0, str(outcome))
    error = parsed.error.value if parsed.error else ""
    return (_KIND_ORDER.index(parsed.kind), _ERROR_ORDER.index(error) if error else -1, str(outcome))


def sorted_outcomes(outcomes: Iterable[Any]) -> list[str]:
    """The distinct outcome strings of ``outcomes`` in stack order."""
    return sorted({str(o) for o in outcomes}, key=outcome_sort_key)


def mode_color(mode: str) -> str:
    """One colour per mode, the same in every chart."""
    index = MODES.index(mode) if mode in MODES else len(MODES) + _stable_index(mode, 5)
    return f"C{index % 10}"


def link_marker(link: str) -> str:
    """One marker per link name, the same in every chart."""
    return LINK_MARKERS.get(link) or _SPARE_MARKERS[_stable_index(link, len(_SPARE_MARKERS))]


def size_linestyle(size: Any) -> Any:
    """A line style per image size, fixed by the size alone: sizes a factor 2 to 32 apart differ
    (32 and 128 KiB, 64, 256 and 960 KiB); a matplotlib line style (a name or a dash tuple)."""
    value = _finite(size)
    if value is None or value <= 0:
        return "-"
    return _LINESTYLES[round(math.log2(value)) % len(_LINESTYLES)]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_rate(rate_Bps: Any) -> str:
    """A throughput for people, in KB/s (1000 B/s): ``118 KB/s``; ``n/a`` when unknown."""
    value = _finite(rate_Bps)
    if value is None:
        return "n/a"
    if abs(value) < 1000:
        return f"{value:.3g} B/s"
    kb = value / 1000
    return f"{kb:.3g} KB/s" if abs(float(f"{kb:.3g}")) < 10_000 else f"{kb / 1000:.3g} MB/s"


def format_size(size: Any) -> str:
    """A size in bytes for people (binary units): ``64 KiB``."""
    value = _finite(size)
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:g} {unit}" if unit == "B" else f"{value:.4g} {unit}"
        value /= 1024
    return ""  # pragma: no cover


def sorted_modes(modes: Iterable[Any]) -> list[str]:
    """The distinct modes of ``modes`` in chart order."""
    present = [str(m) for m in pd.unique(pd.Series(list(modes), dtype=object))]
    return sorted(present, key=lambda m: (MODES.index(m) if m in MODES else len(MODES), m))


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (7, 4)) -> Axes:
    """``ax``, or the axes of a new pyplot figure (for notebooks)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, made = plt.subplots(figsize=figsize, layout="constrained")
    return made


def no_data(ax: Axes, what: str) -> Axes:
    """Say on ``ax`` that there is nothing to draw (``no <what>``)."""
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    return ax
