"""A campaign's progress: a tqdm bar on a terminal or in Jupyter, plain lines into a pipe or a log.

A bar redraws itself with carriage returns, which a CI log or ``make demo | tee`` keeps as one long
line; where its stream is not a terminal (and not a notebook, whose widget needs none),
:class:`PlainProgress` prints ``NAME: DONE/TOTAL trials (P%), last: OUTCOME`` lines instead: at
each tenth of the campaign, at least every :data:`PLAIN_EVERY_S` seconds, and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

#: Most seconds between two plain progress lines while trials finish.
PLAIN_EVERY_S = 10.0
#: Plain lines per campaign at the least (one per tenth).
PLAIN_STEPS = 10


class CampaignProgress(Protocol):
    """What a campaign tells its progress: one trial done (and its outcome), the end."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def close(self) -> None: ...


class PlainProgress:
    """Progress as whole lines on ``stream`` (no carriage return, no escape sequence)."""

    def __init__(self, total: int, initial: int, desc: str, stream: TextIO) -> None:
        self.total, self.n, self.desc, self.stream = total, initial, desc, stream
        self.last = ""
        self._step = self._step_of(initial)
        self._printed_n = -1
        self._printed_t = time.monotonic()
        self._write()

    def update(self, n: int = 1) -> None:
        """``n`` more trials done: a line when a tenth is passed or :data:`PLAIN_EVERY_S` have gone by."""
        self.n += n
        step = self._step_of(self.n)
        if step > self._step or time.monotonic() - self._printed_t >= PLAIN_EVERY_S:
            self._step = step
            self._write()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """The outcome of the last trial done (shown on the next line)."""
        self.last = s

    def close(self) -> None:
        """The last count, unless it was just printed."""
        if self._printed_n != self.n:
            self._write()

    def _step_of(self, n: int) -> int:
        return n * PLAIN_STEPS // self.total if self.total else PLAIN_STEPS

    def _write(self) -> None:
        percent = 100 * self.n // self.total if self.total else 100
        last = f", last: {self.last}" if self.last else ""
        print(f"{self.desc}: {self.n}/{self.total} trials ({percent}%){last}", file=self.stream, flush=True)
        self._printed_n, self._printed_t = self.n, time.monotonic()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where tqdm draws a widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def campaign_progress(total: int, initial: int, desc: str, stream: TextIO | None = None) -> CampaignProgress:
    """The bar (tqdm's, a widget in Jupyter) when ``stream`` (default stderr) is a terminal or a notebook's,
    else :class:`PlainProgress` on it."""
    stream = sys.stderr if stream is None else stream
    if in_notebook() or stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="trial", file=stream)
    return PlainProgress(total, initial, desc, stream)
