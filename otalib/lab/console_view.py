"""Console lines as a DataFrame and a chart of their events over time (for notebooks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from otalib.board.protocol import ConsoleLine

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def console_frame(lines: Sequence[ConsoleLine], *, events_only: bool = False) -> pd.DataFrame:
    """One row per line: ``t`` (s from the first line), ``event``, ``line`` and the parsed fields."""
    rows = [{"t": ln.t, "event": ln.event, "line": ln.line.rstrip(), **ln.fields} for ln in lines]
    frame = pd.DataFrame(rows, columns=None if rows else ["t", "event", "line"])
    if len(frame):
        frame["t"] = frame["t"] - frame["t"].iloc[0]
    if events_only:
        frame = frame[frame["event"].notna()].reset_index(drop=True)
    return frame


def plot_console_events(frame: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Each event type on its own row, a mark at each time it was seen."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    events = frame[frame["event"].notna()]
    names = list(dict.fromkeys(events["event"]))
    for row, name in enumerate(names):
        times = events.loc[events["event"] == name, "t"]
        ax.scatter(times, [row] * len(times), marker="|", s=200)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("seconds since the first line")
    ax.set_title("console events")
    ax.grid(axis="x", alpha=0.3)
    return ax
