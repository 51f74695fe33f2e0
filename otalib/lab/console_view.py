"""Console lines as a DataFrame, a table of their events and a chart of them over time (for notebooks).

The live view of a console (each line as it comes, and the update's progress) is
:mod:`otalib.lab.live_console`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from otalib.board.protocol import ConsoleLine

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from pandas.io.formats.style import Styler


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
    ax.set_xlabel("s since the first line")
    ax.set_title("console events over time")
    ax.grid(axis="x", alpha=0.3)
    return ax


def event_table(lines: Sequence[ConsoleLine]) -> Styler:
    """The console's events as a table for a notebook: ``t`` (s), event, and each whole line, left-aligned in
    a monospace font (a plain DataFrame would cut long lines and right-align them)."""
    frame = console_frame(lines, events_only=True)
    columns = [c for c in ("t", "event", "line") if c in frame.columns]
    frame = frame[columns].rename(columns={"t": "t (s)"})
    styler = frame.style.format({"t (s)": "{:.3f}"}).hide(axis="index")
    styler = styler.set_properties(subset=["line"], **{"text-align": "left", "font-family": "monospace"})
    styler = styler.set_properties(subset=["line"], **{"white-space": "pre-wrap"})
    return styler.set_table_styles([{"selector": "th", "props": [("text-align", "left")]}])
