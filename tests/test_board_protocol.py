"""The board contract: every board satisfies the capability protocols, and one follow_update drives them all.

A serial board (here on a virtual board's pty, as a real board's port would be), the in-process
virtual board and the virtual board process take the same signed update through the same
:func:`~otalib.board.follow.follow_subscription` / :func:`~otalib.board.follow.follow_update`
calls; the loop's own rules (until, timeout, closed, side channels, set-aside decisions,
re-arming) are checked on a console buffer fed by the test.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from board_helpers import KEY, signed_package

from otalib.board.console import ConsoleParser, OutcomeTracker
from otalib.board.follow import DECIDED, Ending, follow_subscription, follow_update, is_decision
from otalib.board.protocol import Board, BufferedConsole, ConsoleBuffer, ConsoleProtocol, PowerProtocol, ResetProtocol
from otalib.board.serial_board import SerialBoard
from otalib.board.sim.build import DeviceBuild
from otalib.board.virtual import VirtualBoard, VirtualBoardProcess
from otalib.broker import find_mosquitto
from otalib.formats.ota import timestamp_now
from otalib.keys import DeviceKeys
from otalib.mqtt.publish import deploy
from otalib.vocabulary import Outcome, OutcomeKind

WAIT = 15.0
_apps = itertools.count()
UPDATED = Outcome(OutcomeKind.UPDATED)
PROTOCOLS = (ConsoleProtocol, ResetProtocol, PowerProtocol, Board)

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


# -- the three boards -----------------------------------------------------------------------------------------------


@pytest.fixture(params=["serial", "virtual", "process"])
def any_board(request: pytest.FixtureRequest, broker, tmp_path: Path) -> Iterator[tuple[Board, str]]:
    """Each kind of board, on a fresh flash running 4.3.5 of an app id of its own; yields (board, topic URL)."""
    app = f"bp{next(_apps)}"
    flash = tmp_path / f"{app}.bin"
    url = f"{broker.url}/a/{app}/u/4.3"
    if request.param == "process":
        key_file = tmp_path / "verify.key.bin"
        key_file.write_bytes(KEY.verify_key)
        args = ["--broker", broker.url, "--app-id", app, "--version", "4.3.5", "--flash", str(flash)]
        args += ["--layout", "host", "--verify-key", str(key_file), "--restart-delay", "0.1", "--profile", "reference"]
        with VirtualBoardProcess(args) as proc:
            yield proc, url
    else:
        virtual = VirtualBoard(
            flash,
            broker.url,
            DeviceBuild(DeviceKeys(KEY.verify_key), profile="reference", app_id=app, version="4.3.5", layout="host"),
            restart_delay=0.1,
        )
        monitor = SerialBoard(virtual.console_path, reset_via_rts=False) if request.param == "serial" else None
        virtual.start()
        try:
            yield (monitor or virtual), url
        finally:
            virtual.stop()
            if monitor is not None:
                monitor.close()
    deploy(None, url, clear=True)


@needs_mosquitto
def test_each_board_satisfies_the_capability_protocols(any_board) -> None:
    board, _ = any_board
    for protocol in PROTOCOLS:
        assert isinstance(board, protocol), f"{type(board).__name__} is no {protocol.__name__}"


@needs_mosquitto
def test_the_same_follow_update_takes_each_board_through_an_update(any_board) -> None:
    board, url = any_board
    tracker = OutcomeTracker(quiet=math.inf, timeout=WAIT)
    subscribed = follow_subscription(board, tracker, WAIT, suback=getattr(board, "suback", None))
    assert subscribed.last is not None and subscribed.last.event == "tcp_connected"
    assert tracker.slot == 0  # the boot lines went to the tracker

    tracker.published(time.time())
    deploy(signed_package("4.3.6", 6, timestamp=timestamp_now() + 1000), url)
    seen: list[str | None] = []
    follow = follow_update(
        board, tracker, DECIDED, WAIT, start=subscribed.cursor, on_line=lambda x: seen.append(x.event)
    )
    lines = list(follow)

    assert follow.ending is Ending.UNTIL and follow.outcome == UPDATED == tracker.outcome
    assert is_decision(lines[-1]) and lines[-1].fields["outcome"] == "updated"
    assert [ln.event for ln in lines[:-1]] == seen  # every console line went through the hook, in order
    assert seen.index("switch_ok") < seen.index("restart") < len(seen) - 1 and seen[-1] == "running"
    assert tracker.slot == 1 and board.history(follow.cursor - 1)[0] == lines[-2]  # the cursor is past that line


def test_a_board_without_power_is_no_board() -> None:
    class ConsoleOnly(BufferedConsole):
        def __init__(self) -> None:
            self._console = ConsoleBuffer()

        def reset(self) -> None: ...

    console = ConsoleOnly()
    assert isinstance(console, ConsoleProtocol) and isinstance(console, ResetProtocol)
    assert not isinstance(console, PowerProtocol) and not isinstance(console, Board)


# -- the loop's own rules, on a buffer fed by the test --------------------------------------------------------------

BOOT = [
    "Currently running rom0: 0x00002000. Application version: 4.3.5",
    "Subscribing to topic: a/test/u/4.3",
    "subscription 'a/test/u/4.3' registered",
    "TCP 3fff1234 connected: useSSL: 0, Error: 0",
]
UPDATE = [
    "Starting firmware upgrade, receive 1 image(s)",
    "ROM 1 activated",
    "Switching was successful. Restarting...",
    ">> Normal Exit <<",
    "Currently running rom1: 0x00102000. Application version: 4.3.6",
]


class Fed(BufferedConsole):
    """A console the test writes to."""

    def __init__(self, *texts: str) -> None:
        self._console = ConsoleBuffer()
        self._parser = ConsoleParser()
        self.feed(*texts)

    def feed(self, *texts: str) -> None:
        for text in texts:
            self._console.push(self._parser.parse(text, time.time()))

    def close(self) -> None:
        self._console.close()


def test_until_an_event_stops_at_its_line_and_the_cursor_goes_on_from_there() -> None:
    console = Fed(*BOOT, *UPDATE)
    tracker = OutcomeTracker()
    first = follow_update(console, tracker, "subscribed", 1.0, start=0)
    assert [ln.event for ln in first][-1] == "subscribed" and first.ending is Ending.UNTIL and first.cursor == 3
    rest = follow_update(console, tracker, DECIDED, 1.0, start=first.cursor)
    assert [ln.event for ln in rest][:2] == ["tcp_connected", "ota_started"]
    assert rest.outcome == UPDATED and tracker.outcome == UPDATED


def test_time_runs_out_or_the_console_closes() -> None:
    console = Fed(*BOOT)
    quiet = follow_update(console, OutcomeTracker(), "switch_ok", 0.1, start=0)
    assert len(list(quiet)) == len(BOOT) and quiet.ending is Ending.TIMEOUT and quiet.outcome is None
    console.close()
    closed = follow_update(console, None, "switch_ok", 30.0, start=0).run()
    assert closed.ending is Ending.CLOSED and closed.last is not None and closed.last.event == "tcp_connected"


def test_a_side_channel_decides_and_a_decision_can_be_set_aside() -> None:
    console = Fed(*BOOT)
    follow = follow_update(
        console, OutcomeTracker(), DECIDED, 5.0, start=0, on_tick=lambda: Outcome(OutcomeKind.SKIPPED)
    )
    assert [ln.fields for ln in follow] == [{"outcome": "skipped"}] and follow.outcome == Outcome(OutcomeKind.SKIPPED)

    console = Fed(*BOOT, *UPDATE)
    tracker = OutcomeTracker()
    set_aside: list[Outcome] = []

    def keep(outcome: Outcome, line) -> bool:
        set_aside.append(outcome)
        tracker.rearm()
        return False

    kept = follow_update(console, tracker, DECIDED, 0.2, start=0, on_outcome=keep).run()
    assert set_aside == [UPDATED] and kept.ending is Ending.TIMEOUT and kept.outcome is None


def test_rearm_follows_update_after_update_and_a_quiet_board_is_skipped_by_time() -> None:
    console = Fed(*BOOT, *UPDATE, *UPDATE[:-1], UPDATE[-1].replace("rom1: 0x00102000", "rom0: 0x00002000"))
    monitor = follow_update(console, OutcomeTracker(), None, 0.3, start=0, rearm=True)
    assert [ln.fields["outcome"] for ln in monitor if is_decision(ln)] == ["updated", "updated"]

    tracker = OutcomeTracker(quiet=0.05)
    tracker.published(time.time())
    follow = follow_update(Fed(*BOOT), tracker, DECIDED, 5.0)  # no start: only the lines after the call
    assert [ln.fields["outcome"] for ln in follow] == ["skipped"]
