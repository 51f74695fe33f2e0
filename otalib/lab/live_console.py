"""Watch a board's console live: each line as the device prints it, its event highlighted, and a
progress bar of the update's bytes (:class:`~otalib.lab.progress.UpdateProgress`).

One model (:class:`LiveConsole`: the lines, the progress, the outcome), two views:

- :class:`NotebookConsole`: an HTML output updated in place through an IPython display
  handle (JupyterLab shows it as it changes; a notebook run headless by nbclient keeps the
  final state in its saved output), with a ``text/plain`` fallback;
- :class:`TerminalConsole`: lines on a text stream, events in colour and a progress bar
  redrawn on the last line when the stream is a terminal; plain text (no control
  characters) otherwise, with a progress line at every tenth of the transfer.

:func:`live_view` picks the view for where the code runs. Feed a view with :meth:`LiveConsole.add` (or give it to
:meth:`~otalib.lab.session.LabSession.watch` / ``follow``), :meth:`LiveConsole.decided` and
:meth:`LiveConsole.close`; :meth:`LiveConsole.tick` renders what is pending when the console
is quiet.
"""

from __future__ import annotations

import enum
import html
import re
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from otalib.board.protocol import ConsoleLine
from otalib.lab.progress import UpdateProgress
from otalib.vocabulary import Outcome, OutcomeKind


class EventKind(enum.Enum):
    """What a console event is about: it picks the line's highlight."""

    BOOT = "boot"
    RUNNING = "running"
    NETWORK = "network"
    PROGRESS = "progress"
    UPDATE = "update"
    SUCCESS = "success"
    ERROR = "error"
    OTHER = "other"  # an event of a user's own pattern


_KIND_EVENTS: dict[EventKind, tuple[str, ...]] = {
    EventKind.BOOT: (
        *("boot", "bootloader", "rom_boot", "rom_found", "rom_count", "show_info", "partition"),
        *("bootable_roms", "restart", "exit_code", "terminated", "thread"),
    ),
    EventKind.RUNNING: ("running",),
    EventKind.NETWORK: (
        *("network_up", "checking", "connecting", "tcp_connect", "tcp_connected", "subscribing", "subscribed"),
    ),
    EventKind.PROGRESS: ("tcp_received", "ota_write"),
    EventKind.UPDATE: (
        *("build_timestamp_current", "build_timestamp_file", "ota_started", "update_slot", "skip_rom", "signature"),
    ),
    EventKind.SUCCESS: ("rom_update_complete", "rom_activated", "swapping", "switch_ok"),
    EventKind.ERROR: ("device_error", "got_error", "switch_failed", "crash", "no_good_rom", "rom_bad"),
}

#: Event name -> its kind (events not listed are :attr:`EventKind.OTHER`).
EVENT_KINDS: dict[str, EventKind] = {event: kind for kind, events in _KIND_EVENTS.items() for event in events}


def event_kind(event: str | None) -> EventKind | None:
    """The kind of a line's event; None for a line that is no event."""
    if event is None:
        return None
    return EVENT_KINDS.get(event, EventKind.OTHER)


#: Inline CSS per kind (inline: JupyterLab keeps ``style`` attributes of untrusted outputs, not ``<style>``).
HTML_STYLES: dict[EventKind | None, str] = {
    None: "color:#444",
    EventKind.BOOT: "color:#6a4fa3",
    EventKind.RUNNING: "color:#6a4fa3;font-weight:bold",
    EventKind.NETWORK: "color:#1f6fb2",
    EventKind.PROGRESS: "color:#8a8a8a",
    EventKind.UPDATE: "color:#b25f00;font-weight:bold",
    EventKind.SUCCESS: "color:#1b7f2a;font-weight:bold",
    EventKind.ERROR: "color:#c0152f;font-weight:bold",
    EventKind.OTHER: "color:#b25f00",
}

#: The progress bar's colour: running, then the outcome's.
BAR_COLOURS: dict[EventKind | None, str] = {None: "#4a90d9", EventKind.SUCCESS: "#1b7f2a", EventKind.ERROR: "#c0152f"}

#: ANSI SGR codes per kind for a terminal.
ANSI_STYLES: dict[EventKind | None, str] = {
    None: "",
    EventKind.BOOT: "35",
    EventKind.RUNNING: "1;35",
    EventKind.NETWORK: "34",
    EventKind.PROGRESS: "2",
    EventKind.UPDATE: "1;33",
    EventKind.SUCCESS: "1;32",
    EventKind.ERROR: "1;31",
    EventKind.OTHER: "33",
}

#: Control characters and the surrogate escapes of undecodable bytes (an ESP8266 ROM's 74880-baud noise).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (a surrogate escape)
        code -= 0xDC00
    elif code > 0xFF:  # any other lone surrogate
        return "\\x??"
    return f"\\x{code:02x}"


def printable(text: str) -> str:
    """``text`` without its line end, each control character or undecodable byte (a surrogate escape) shown as
    ``\\xNN``; tabs kept."""
    return _UNPRINTABLE.sub(_escape, text.rstrip("\r\n"))


def outcome_colour(outcome: Outcome | None) -> EventKind:
    """The highlight of an outcome: success for ``updated``, error for the rest."""
    return EventKind.SUCCESS if outcome is not None and outcome.kind is OutcomeKind.UPDATED else EventKind.ERROR


class LiveConsole:
    """The state of a live console: its lines, the update's progress, the outcome; views render it.

    ``progress``: the bytes of the update to follow (None: lines only). ``min_interval``:
    the least time in seconds between two renders (lines come by hundreds a second on a
    fast link; the last state is always rendered by :meth:`tick` and :meth:`close`).
    """

    def __init__(
        self,
        progress: UpdateProgress | None = None,
        *,
        min_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress = progress
        self.lines: list[ConsoleLine] = []
        self.outcome: Outcome | None = None
        self.min_interval = min_interval
        self.clock = clock
        self.renders = 0
        self.closed = False
        self._pending = False
        self._last_render: float | None = None

    def add(self, line: ConsoleLine) -> None:
        """One console line (as the device printed it)."""
        self.lines.append(line)
        if self.progress is not None:
            self.progress.feed(line)
        self._line_added(line)
        self._pending = True
        self.tick()

    def decided(self, outcome: Outcome) -> None:
        """The update's outcome is known."""
        self.outcome = outcome
        if self.progress is not None:
            self.progress.decided(outcome)
        self._pending = True
        self.tick()

    def tick(self) -> None:
        """Render what is pending once ``min_interval`` has passed since the last render."""
        now = self.clock()
        if self._pending and (self._last_render is None or now - self._last_render >= self.min_interval):
            self._render(final=False)
            self._mark_rendered(now)

    def close(self) -> None:
        """Render the final state (once)."""
        if self.closed:
            return
        self.closed = True
        self._render(final=True)
        self._mark_rendered(self.clock())

    def _mark_rendered(self, now: float) -> None:
        self._pending = False
        self._last_render = now
        self.renders += 1

    def status(self) -> str:
        """The progress line (or the outcome when no progress is followed)."""
        if self.progress is not None:
            return self.progress.describe()
        return f"outcome: {self.outcome}" if self.outcome is not None else "watching"

    # -- for the views --
    def _line_added(self, line: ConsoleLine) -> None:
        """A view's hook: a line was added (before the render)."""

    def _render(self, *, final: bool) -> None:
        raise NotImplementedError


# -- notebooks -----------------------------------------------------------------------------------------------------

#: Console box height in lines; the box scrolls, its bottom (the newest line) in view.
BOX_LINES = 24


def html_line(line: ConsoleLine) -> str:
    """One console line as HTML: the whole line, left-aligned, its event's style, the event named on hover."""
    kind = event_kind(line.event)
    text = html.escape(printable(line.line)) or "&nbsp;"
    title = f' title="{html.escape(line.event)}"' if line.event else ""
    return f'<div style="{HTML_STYLES[kind]}"{title} data-event="{html.escape(line.event or "")}">{text}</div>'


def progress_html(console: LiveConsole) -> str:
    """The progress bar and its line (received share of the PUBLISH packet)."""
    progress = console.progress
    fraction = progress.fraction if progress is not None else (1.0 if console.outcome else 0.0)
    colour = BAR_COLOURS[None if console.outcome is None else outcome_colour(console.outcome)]
    attrs = f'data-fraction="{fraction:.4f}"'
    if progress is not None:
        attrs += f' data-received="{min(progress.received, progress.packet)}" data-total="{progress.packet}"'
    if console.outcome is not None:
        attrs += f' data-outcome="{html.escape(console.outcome.text)}"'
    return (
        f'<div class="otalab-progress" {attrs} style="margin:0 0 4px 0">'
        '<div style="background:#e6e6e6;width:100%;height:12px;border-radius:3px;overflow:hidden">'
        f'<div style="background:{colour};width:{fraction * 100:.1f}%;height:12px"></div></div>'
        f'<div style="font-family:monospace;font-size:12px;text-align:left">{html.escape(console.status())}</div>'
        "</div>"
    )


class NotebookConsole(LiveConsole):
    """A live console in a notebook: one HTML output, updated in place (an IPython display handle).

    ``publish(bundle, first)`` replaces the display for tests or other front ends
    (``first`` is True for the first render, which creates the output). ``html_rate``: most
    bytes of HTML per second sent while the console grows (renders further apart as it gets
    long: each render sends the whole view; a 1 MiB update prints about 150 KB of HTML); None: no limit.
    """

    def __init__(
        self,
        progress: UpdateProgress | None = None,
        *,
        min_interval: float = 0.25,
        html_rate: float | None = 400_000,
        publish: Callable[[dict[str, str], bool], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(progress, min_interval=min_interval, **kwargs)
        self.html_rate = html_rate
        self._html_lines: list[str] = []
        self._publish = publish or _ipython_publisher()
        self._published = False
        self._render(final=False)  # the (empty) output appears at once, where the cell's output is
        self._mark_rendered(self.clock())

    def _line_added(self, line: ConsoleLine) -> None:
        self._html_lines.append(html_line(line))

    def to_html(self) -> str:
        """The whole view: progress bar, console box (newest line at the bottom), outcome."""
        box = (
            '<div class="otalab-console" style="max-height:{h}em;overflow:auto;display:flex;'
            "flex-direction:column-reverse;border:1px solid #d0d0d0;border-radius:3px;background:#fbfbfb;"
            'padding:2px 6px"><div style="font-family:monospace;font-size:12px;line-height:1.35;'
            'white-space:pre-wrap;word-break:break-all;text-align:left">{lines}</div></div>'
        ).format(h=f"{BOX_LINES * 1.35:.1f}", lines="".join(self._html_lines) or "<div>(no console line yet)</div>")
        return f'<div class="otalab-live" style="text-align:left">{progress_html(self)}{box}</div>'

    def to_text(self, tail: int = 20) -> str:
        """Plain-text fallback: the progress line and the last ``tail`` console lines."""
        shown = self.lines[-tail:]
        more = len(self.lines) - len(shown)
        head = [self.status()] + ([f"... {more} earlier console lines"] if more else [])
        return "\n".join(head + [printable(line.line) for line in shown])

    def _render(self, *, final: bool) -> None:
        bundle = {"text/html": self.to_html(), "text/plain": self.to_text()}
        self._publish(bundle, not self._published)
        self._published = True
        if self.html_rate:
            self.min_interval = max(self.min_interval, len(bundle["text/html"]) / self.html_rate)


def _ipython_publisher() -> Callable[[dict[str, str], bool], None]:
    """Publish through an IPython display handle (a new output, then updates of it)."""
    from IPython.display import DisplayHandle

    handle = DisplayHandle()

    def publish(bundle: dict[str, str], first: bool) -> None:
        if first:
            handle.display(bundle, raw=True)
        else:
            handle.update(bundle, raw=True)

    return publish


def in_notebook() -> bool:
    """Does this code run in a Jupyter kernel (where display handles reach a notebook)?"""
    if "IPython" not in sys.modules:  # not loaded: no kernel
        return False
    from IPython import get_ipython

    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def live_view(progress: UpdateProgress | None = None, stream: TextIO | None = None) -> LiveConsole:
    """A :class:`NotebookConsole` in a Jupyter kernel, else a :class:`TerminalConsole` on ``stream`` (stdout)."""
    if in_notebook():
        return NotebookConsole(progress)
    return TerminalConsole(progress, stream)


# -- terminals -----------------------------------------------------------------------------------------------------

BAR_WIDTH = 20


class TerminalConsole(LiveConsole):
    """A live console on a text stream (the demo's terminal).

    Each console line is written as it comes (``prefix`` + the line, then ``[event]`` for an
    event). On a terminal (``tty``, default: ``stream.isatty()``) events are coloured and a
    progress bar is redrawn in place on the last line; otherwise the output is plain text
    without any control character, with a progress line each time the transfer passes a
    tenth of its bytes.
    """

    def __init__(
        self,
        progress: UpdateProgress | None = None,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        prefix: str = "  console  ",
        min_interval: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(progress, min_interval=min_interval, **kwargs)
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.prefix = prefix
        self._bar_shown = False
        self._tenths_said = 0

    def _line_added(self, line: ConsoleLine) -> None:
        text = printable(line.line)
        tag = f"    [{line.event}]" if line.event else ""
        if self.tty:
            style = ANSI_STYLES[event_kind(line.event)]
            text = f"\x1b[{style}m{text}\x1b[0m" if style else text
            tag = f"\x1b[2m{tag}\x1b[0m" if tag else ""
            self._clear_bar()
            self.stream.write(f"{self.prefix}{text}{tag}\n")
            self._show_bar()
        else:
            self.stream.write(f"{self.prefix}{text}{tag}\n")
            self._plain_progress()
        self.stream.flush()

    def bar(self) -> str:
        """``[#########...............]`` and the progress line."""
        fraction = self.progress.fraction if self.progress is not None else 0.0
        filled = round(fraction * BAR_WIDTH)
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.status()}"

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False

    def _show_bar(self) -> None:
        """The progress bar on the last line, without a newline (the next line clears it), cut to the
        terminal's width: a wrapped line could not be cleared."""
        if self.progress is not None:
            self.stream.write(self.bar()[: max(20, shutil.get_terminal_size().columns - 1)])
            self._bar_shown = True

    def _plain_progress(self) -> None:
        progress = self.progress
        if progress is None or not progress.known:
            return
        tenths = int(progress.fraction * 10)
        if tenths > self._tenths_said:
            self._tenths_said = tenths
            self.stream.write(f"  progress {progress.describe()}\n")

    def _render(self, *, final: bool) -> None:
        if self.tty:
            self._clear_bar()
            self._show_bar()
            if final:
                self.stream.write("\n" if self._bar_shown else f"{self.status()}\n")
                self._bar_shown = False
        elif final:
            self.stream.write(f"  progress {self.status()}\n")
        self.stream.flush()
