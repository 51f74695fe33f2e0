"""The live console: the update's progress from the device's own console lines, the notebook view
updated in place as lines come, the terminal view (plain text when not a terminal)."""

from __future__ import annotations

import io
import re
import threading
import time
from html import escape
from pathlib import Path

import pytest

from otalib.board.console import ConsoleParser
from otalib.board.protocol import ConsoleLine
from otalib.board.sim.build import DeviceBuild
from otalib.broker import find_mosquitto
from otalib.errors import UsageError
from otalib.firmware.demo import make_demo_image
from otalib.formats.version import Version
from otalib.keys import DeviceKeys, generate_key_file
from otalib.lab.live_console import (
    ANSI_STYLES,
    HTML_STYLES,
    EventKind,
    NotebookConsole,
    TerminalConsole,
    event_kind,
    live_view,
    printable,
)
from otalib.lab.progress import UpdateProgress
from otalib.lab.session import LabSession, link_profile
from otalib.net.link import Fault, LinkProxy
from otalib.update import make_update
from otalib.vocabulary import Outcome, OutcomeKind, UpdateMode

CONSOLES = Path(__file__).parent / "consoles"
TOPIC = "a/test/u/4.3"
#: Package sizes of the recordings (their ``## case:`` lines).
A1_PACKAGE, S1_PACKAGE = 317805, 280853
#: Control characters a plain (non-terminal) output must not contain.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def recorded(name: str) -> list[ConsoleLine]:
    """A real device's console (tests/consoles/oracle-6.1.1), parsed, one line per 10 ms."""
    parser = ConsoleParser()
    text = (CONSOLES / "oracle-6.1.1" / name).read_text()
    return [parser.parse(line, i * 0.01) for i, line in enumerate(text.splitlines()) if not line.startswith("## ")]


class Published:
    """Records what a :class:`NotebookConsole` publishes."""

    def __init__(self) -> None:
        self.bundles: list[tuple[dict[str, str], bool]] = []

    def __call__(self, bundle: dict[str, str], first: bool) -> None:
        self.bundles.append((bundle, first))

    @property
    def html(self) -> str:
        return self.bundles[-1][0]["text/html"]


def fraction_of(html: str) -> float:
    return float(re.search(r'data-fraction="([0-9.]+)"', html).group(1))


# -- progress ----------------------------------------------------------------------------------------------------


def test_progress_of_a_recorded_signed_update_reaches_the_whole_packet_at_its_last_segment():
    lines = recorded("A1.log")
    progress = UpdateProgress.for_package(A1_PACKAGE, TOPIC)
    assert progress.packet == 1 + 3 + 2 + len(TOPIC) + A1_PACKAGE  # type, 3-byte length, topic, payload (QoS 0)
    segments = [i for i, line in enumerate(lines) if line.event == "tcp_received"]
    for i, line in enumerate(lines):
        progress.feed(line)
        if i < segments[-1]:
            assert progress.fraction < 1.0, (i, line.line)
    assert progress.fraction == 1.0 and progress.received == sum(lines[i].fields["length"] for i in segments)
    assert progress.written is None  # advanced mode prints no write count
    text = progress.describe()
    assert text.startswith("100% received (310.4 / 310.4 KiB)") and text.endswith(" KB/s"), text


def test_progress_stops_at_the_restart():
    """S2: the retained update taken again at the next two boots; the progress is the first update's."""
    lines = recorded("S2.log")
    restart = next(i for i, line in enumerate(lines) if line.event == "restart")
    first = sum(line.fields["length"] for line in lines[:restart] if line.event == "tcp_received")
    assert sum(line.fields["length"] for line in lines if line.event == "tcp_received") > 2 * first
    progress = UpdateProgress.for_package(S1_PACKAGE, TOPIC)
    for line in lines:
        progress.feed(line)
    assert progress.restarted and progress.received == first and progress.fraction == 1.0


def test_progress_in_standard_mode_keeps_the_bytes_written():
    progress = UpdateProgress.for_package(S1_PACKAGE, TOPIC)
    for line in recorded("S1.log"):
        progress.feed(line)
    assert progress.written == S1_PACKAGE - 1  # all but the package's one-byte patch header
    progress.decided(Outcome(OutcomeKind.UPDATED))
    assert progress.describe().endswith(f", {(S1_PACKAGE - 1) / 1024:.1f} KiB written; outcome: updated")


def test_progress_stays_unknown_at_the_default_debug_level_and_says_why():
    parser = ConsoleParser()
    text = (CONSOLES / "std-p1-L2-v5.log").read_text().splitlines()
    progress = UpdateProgress.for_package(S1_PACKAGE, TOPIC)
    for i, line in enumerate(text):
        progress.feed(parser.parse(line, i * 0.01))
    assert not progress.known and progress.fraction == 0.0
    progress.decided(Outcome(OutcomeKind.UPDATED))
    assert "verbose debug level" in progress.describe()


def test_progress_rate_waits_for_three_segments():
    progress = UpdateProgress.for_package(10_000, TOPIC)
    for i, t in enumerate((0.0, 0.1, 0.2)):
        progress.feed(ConsoleLine(t, f"{i} TCP 1 received: 1000 bytes", "tcp_received", {"length": 1000}))
        if i < 2:
            assert progress.rate_KBps is None
    assert progress.rate_KBps == pytest.approx(2000 / 0.2 / 1000)  # the bytes after the first segment, over 0.2 s


# -- the notebook view -------------------------------------------------------------------------------------------


def test_notebook_console_shows_each_line_as_it_comes_in_one_output_updated_in_place():
    published = Published()
    progress = UpdateProgress.for_package(A1_PACKAGE, TOPIC)
    view = NotebookConsole(progress, publish=published, min_interval=0, html_rate=None)
    assert published.bundles == [(published.bundles[0][0], True)]  # the output exists before the first line
    lines = recorded("A1.log")
    fractions = []
    for line in lines:
        view.add(line)
        html = published.html
        if line.line.strip():  # the newest line, whole, at the bottom of the console box
            assert html.endswith(escape(printable(line.line)) + "</div></div></div></div>"), line.line
        fractions.append(fraction_of(html))
    assert [first for _bundle, first in published.bundles].count(True) == 1
    assert fractions == sorted(fractions) and 0 < fractions[len(fractions) // 2] < 1 and fractions[-1] == 1.0
    # each event highlighted by its kind, the whole line in one left-aligned block
    slot = next(line for line in lines if line.event == "update_slot")
    update = HTML_STYLES[EventKind.UPDATE]
    assert f'<div style="{update}" title="update_slot" data-event="update_slot">' in published.html
    assert slot.line.strip() in published.html and "text-align:left" in published.html
    view.decided(Outcome(OutcomeKind.UPDATED))
    view.close()
    assert 'data-outcome="updated"' in published.html and "outcome: updated" in published.bundles[-1][0]["text/plain"]


def test_notebook_console_highlights_errors():
    published = Published()
    view = NotebookConsole(publish=published, min_interval=0, html_rate=None)
    for line in recorded("A3.log"):
        view.add(line)
    view.decided(Outcome(OutcomeKind.REJECTED, "VerificationFailed"))
    view.close()
    error = HTML_STYLES[EventKind.ERROR]
    assert error.endswith("font-weight:bold")
    failed = f'<div style="{error}" title="switch_failed" data-event="switch_failed">486541 Switching failed!</div>'
    assert failed in published.html
    assert "rejected:VerificationFailed" in published.html


def test_notebook_console_renders_at_most_once_per_interval_and_always_the_last_state():
    now = [0.0]
    published = Published()
    view = NotebookConsole(
        UpdateProgress.for_package(A1_PACKAGE, TOPIC), publish=published, min_interval=0.5, clock=lambda: now[0]
    )
    lines = recorded("A1.log")
    for line in lines[:100]:
        view.add(line)
    assert len(published.bundles) == 1  # only the empty first output: the interval has not passed
    now[0] = 0.6
    view.tick()
    assert len(published.bundles) == 2 and lines[99].line.strip() in published.html
    view.tick()
    assert len(published.bundles) == 2  # nothing new, nothing rendered
    view.add(lines[100])
    view.close()  # the final state, whatever the interval
    assert len(published.bundles) == 3 and lines[100].line.strip() in published.html


def test_printable_shows_control_characters_and_undecodable_bytes_as_escapes():
    assert printable("a\x1b[31mb\tc\r\n") == "a\\x1b[31mb\tc"
    assert printable("rom \udcff\udc80 noise") == "rom \\xff\\x80 noise"
    assert event_kind(None) is None and event_kind("my_own_event") is EventKind.OTHER
    assert event_kind("switch_ok") is EventKind.SUCCESS and event_kind("tcp_received") is EventKind.PROGRESS


# -- the terminal view ---------------------------------------------------------------------------------------------


def run_terminal(tty: bool, lines: list[ConsoleLine], package: int) -> str:
    stream = io.StringIO()
    view = TerminalConsole(UpdateProgress.for_package(package, TOPIC), stream, tty=tty, min_interval=0)
    for line in lines:
        view.add(line)
    view.decided(Outcome(OutcomeKind.UPDATED))
    view.close()
    return stream.getvalue()


def test_terminal_console_is_plain_text_when_not_a_terminal():
    lines = recorded("A1.log")
    noisy = ConsoleLine(0.0, "\udcff\x1b[2J ets Jan  8 2013,rst cause:2, boot mode:(3,6)\r", "boot", {})
    out = run_terminal(False, [noisy, *lines], A1_PACKAGE)
    assert not CONTROL.search(out), CONTROL.search(out)
    rows = out.splitlines()
    console = [row for row in rows if row.startswith("  console  ")]
    assert len(console) == len(lines) + 1  # every line, as printed
    assert console[0] == "  console  \\xff\\x1b[2J ets Jan  8 2013,rst cause:2, boot mode:(3,6)    [boot]"
    assert "  console  10724 Update slot rom1 [0x00108000..0x00155914)    [update_slot]" in console
    progress = [row for row in rows if row.startswith("  progress ")]
    assert [row.split("%")[0].split()[-1] for row in progress] == [str(p) for p in range(10, 101, 10)] + ["100"]
    assert progress[-1].endswith("; outcome: updated")
    # each tenth is said once the console shows it, between the lines
    assert rows.index(progress[0]) < rows.index(next(r for r in rows if "Switching was successful" in r))


def test_terminal_console_on_a_terminal_colours_events_and_redraws_the_bar_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = run_terminal(True, recorded("A1.log"), A1_PACKAGE)
    assert f"\x1b[{ANSI_STYLES[EventKind.UPDATE]}m10724 Update slot rom1 [0x00108000..0x00155914)\x1b[0m" in out
    assert f"\x1b[{ANSI_STYLES[EventKind.SUCCESS]}m" in out
    assert "\r\x1b[K" in out  # the bar is cleared before a line, then drawn again under it
    last = out.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.endswith("[####################] 100% received (310.4 / 310.4 KiB), 68.2 KB/s; outcome: updated")
    assert out.endswith("\n")


# -- a session's watch, live ---------------------------------------------------------------------------------------


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
@pytest.mark.timeout(120)
def test_session_watch_shows_the_update_while_the_board_takes_it(tmp_path):
    """The link holds the transfer at half the package until the notebook view has shown it half-way:
    the update can only finish if the view rendered the console before the update ended."""
    key, _ = generate_key_file(tmp_path / "ota.key")
    build = DeviceBuild(app_id="test", version=Version(4, 3, 1)).accepting(UpdateMode.SIGNED, DeviceKeys.of(key))
    midway = threading.Event()
    seen: list[str] = []

    def publish(bundle: dict[str, str], _first: bool) -> None:
        html = bundle["text/html"]
        if 0.45 < fraction_of(html) < 1 and "Update slot rom1" in html and "data-outcome" not in html:
            seen.append(html)
            midway.set()

    def resume_once_shown(link: LinkProxy) -> None:
        """Let the rest through once the view showed the held half (and the link has held it)."""
        if not midway.wait(30):
            return
        deadline = time.monotonic() + 10
        while not link.stats["faults_fired"] and time.monotonic() < deadline:
            time.sleep(0.01)
        link.resume()

    with LabSession(build=build, workdir=tmp_path, link="wifi", backend="mosquitto") as session:
        assert session.link is not None and session.link.profile.name == "wifi"
        session.wait_ready()
        image = make_demo_image("esp8266", "test", "4.3.2", size=64 * 1024)
        update = make_update(image, UpdateMode.SIGNED, patch=2, key=key, build=session.build)
        session.link.set_fault(Fault("stall", at_byte=len(update.package) // 2, within="payload"), live=True)
        session.deploy(update)
        view = NotebookConsole(session.progress(), publish=publish, min_interval=0.05)
        resumer = threading.Thread(target=resume_once_shown, args=(session.link,), daemon=True)
        resumer.start()
        lines = session.watch(30, view=view)
        resumer.join(5)
    assert midway.is_set() and session.outcome == Outcome(OutcomeKind.UPDATED)
    assert fraction_of(seen[0]) < 0.51  # the view showed the held transfer, before it went on
    final = view.to_html()
    assert fraction_of(final) == 1.0 and 'data-outcome="updated"' in final
    events = [line.event for line in lines]
    assert events.index("update_slot") < events.index("switch_ok") < events.index("running")


def test_a_link_profile_needs_the_virtual_board_and_a_known_name():
    with pytest.raises(UsageError, match="unknown link 'wify'"):
        link_profile("wify")
    assert link_profile("unlimited") is None and link_profile("wifi").rate_Bps == 50_000
    with pytest.raises(UsageError, match="needs the virtual board"):
        LabSession(board="/dev/ttyUSB0", broker_url="mqtt://127.0.0.1:1", link="wifi")


def test_live_view_outside_a_notebook_is_a_terminal_console():
    stream = io.StringIO()
    view = live_view(UpdateProgress.for_package(A1_PACKAGE, TOPIC), stream)
    assert isinstance(view, TerminalConsole) and view.stream is stream and not view.tty


def test_terminal_console_cuts_its_bar_to_the_terminal_width(monkeypatch):
    """A bar wider than the terminal would wrap, and "clear the line" would leave its first part behind."""
    monkeypatch.setenv("COLUMNS", "60")
    out = run_terminal(True, recorded("A1.log"), A1_PACKAGE)
    bars = [piece.rsplit("\n", 1)[-1] for piece in out.split("\r\x1b[K")[:-1]]  # the last line, when cleared
    assert len(bars) > 400 and all(bar.startswith("[") and len(bar) <= 59 for bar in bars), max(bars, key=len)
