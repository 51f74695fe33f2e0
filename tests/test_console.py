"""Console patterns, outcome inference and the device console renderer, against recorded real consoles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from otalib.board.console import DEFAULT_PATTERNS, OTA_ACTIVITY, ConsoleParser, OutcomeTracker, Pattern, outcome_of
from otalib.board.protocol import Board, BufferedConsole, ConsoleBuffer, ConsoleLine
from otalib.board.sim.sming_console import DEFAULT_ROMS, SmingConsole
from otalib.errors import BoardError, DeviceErrorCode
from otalib.vocabulary import Outcome

#: Events about an update (the rest is boot information).
#: Update events to compare with the recordings: the parser's OTA activity (minus the many
#: per-chunk ``ota_write`` lines) plus the errors, the subscription and the restart.
OTA_EVENTS = (OTA_ACTIVITY - {"ota_write"}) | {
    "subscribing",
    "device_error",
    "got_error",
    "switch_failed",
    "terminated",
    "restart",
}

EXPECTED = {
    "std-p1-L2-v5.log": ["restart"],
    "std-p1-L3-v5.log": ["subscribing", "swapping", "switch_ok", "restart"],
    "std-p46-L3-v300leb.log": ["subscribing", "swapping", "switch_ok", "restart"],
    "std-p100-L3-v99.log": ["subscribing", "terminated", "restart"],
    "retained-loop-boot1.log": ["subscribing", "swapping", "switch_ok", "restart"],
    "retained-loop-boot2.log": ["subscribing", "swapping", "switch_ok", "restart"],
    "adv32-v5-signed.log": [
        "subscribing",
        "build_timestamp_current",
        "build_timestamp_file",
        "ota_started",
        "update_slot",
        "signature",
        "rom_update_complete",
        "rom_activated",
        "switch_ok",
        "restart",
    ],
    "adv32-v5-tampered.log": [
        "subscribing",
        "build_timestamp_current",
        "build_timestamp_file",
        "ota_started",
        "update_slot",
        "signature",
        "device_error",
        "got_error",
        "switch_failed",
        "terminated",
        "restart",
    ],
    "adv32-v5-oldtimestamp.log": [
        "subscribing",
        "build_timestamp_current",
        "build_timestamp_file",
        "device_error",
        "terminated",
        "restart",
    ],
}
EXPECTED["adv32-v5-otherkey.log"] = EXPECTED["adv32-v5-tampered.log"]


def parse_file(path: Path, parser: ConsoleParser | None = None) -> list[ConsoleLine]:
    """Parse a recording; line i arrives at t = i ms."""
    parser = parser or ConsoleParser()
    text = path.read_bytes().decode("utf-8")
    return [parser.parse(raw, i / 1000) for i, raw in enumerate(text.split("\n")[:-1])]


def boot_part(path: Path) -> list[str]:
    """Raw lines of a recording up to and including ``Currently running …`` (a fresh boot)."""
    lines = path.read_bytes().decode().split("\n")
    end = next(i for i, raw in enumerate(lines) if raw.startswith("Currently running"))
    return lines[: end + 1]


def then_boot(lines: list[ConsoleLine], path: Path) -> list[ConsoleLine]:
    """``lines`` followed by the boot of another recording (the device came back up)."""
    parser, t0 = ConsoleParser(), lines[-1].t
    return lines + [parser.parse(raw, t0 + (i + 1) / 1000) for i, raw in enumerate(boot_part(path))]


def t_of(lines: list[ConsoleLine], event: str) -> float:
    return next(cl.t for cl in lines if cl.event == event)


def test_every_recording_is_covered(consoles: Path) -> None:
    assert {p.name for p in consoles.glob("*.log")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_console_parses_into_expected_events(consoles: Path, name: str) -> None:
    lines = parse_file(consoles / name)
    assert [cl.event for cl in lines if cl.event in OTA_EVENTS] == EXPECTED[name]
    assert [cl.event for cl in lines if cl.event in ("boot", "bootable_roms", "running", "checking")] == [
        "boot",
        "bootable_roms",
        "running",
        "checking",
    ]
    running = next(cl for cl in lines if cl.event == "running")
    assert running.fields["version"] == "4.3"
    assert running.fields["slot"] == (1 if name == "retained-loop-boot2.log" else 0)
    assert running.fields["address"] == (0x108000 if running.fields["slot"] else 0x8000)
    # the raw line is kept (without CR), the microsecond prefix goes into fields
    for cl in lines:
        assert "\r" not in cl.line
        if cl.event == "subscribing":
            assert cl.fields["topic"] == "a/test/u/4.3"
            assert re.match(r"^\d+ Subscribing", cl.line)
            assert cl.line.startswith(str(cl.fields["us"]) + " ")


def test_standard_update_fields(consoles: Path) -> None:
    lines = parse_file(consoles / "std-p1-L3-v5.log")
    totals = [cl.fields["total"] for cl in lines if cl.event == "ota_write"]
    assert totals[0] == 1371 and totals[-1] == 204800
    assert totals == sorted(totals)
    last_write = [cl for cl in lines if cl.event == "ota_write"][-1]
    assert last_write.fields["us"] == 1850852
    swap = next(cl for cl in lines if cl.event == "swapping")
    assert swap.fields == {
        "from_name": "rom0",
        "from_slot": 0,
        "from_addr": 0x8000,
        "to_name": "rom1",
        "to_slot": 1,
        "to_addr": 0x108000,
        "us": 1850863,
    }


def test_advanced_fields_and_device_errors(consoles: Path) -> None:
    signed = parse_file(consoles / "adv32-v5-signed.log")
    sig = next(cl for cl in signed if cl.event == "signature")
    assert len(bytes.fromhex(sig.fields["signature"])) == 64
    assert sig.fields["signature"].startswith("f153f38f")
    slot = next(cl for cl in signed if cl.event == "update_slot")
    assert (slot.fields["slot"], slot.fields["start"], slot.fields["end"]) == (1, 0x108000, 0)
    assert next(cl for cl in signed if cl.event == "build_timestamp_file").fields["timestamp"] == 1897653446

    tampered = parse_file(consoles / "adv32-v5-tampered.log")
    errors = [cl.fields["error"] for cl in tampered if cl.event in ("device_error", "got_error")]
    assert errors == ["VerificationFailed", "VerificationFailed"]
    old = parse_file(consoles / "adv32-v5-oldtimestamp.log")
    assert [cl.fields["error"] for cl in old if cl.event == "device_error"] == ["DowngradeNotAllowed"]


@pytest.mark.parametrize(("name", "size"), [("retained-loop-boot1.log", 0xF8000), ("oracle-6.1.1/A6.log", 0xF8000)])
def test_a_thread_line_spliced_into_another_is_taken_apart(consoles: Path, name: str, size: int) -> None:
    # "spiFlash/rom0, … size 0xThread 'keyboard' running" + "f8000" (boot1), "…, sizThread …" + "e 0xf8000" (A6)
    lines = parse_file(consoles / name)
    partitions = [cl for cl in lines if cl.event == "partition"]
    assert [(cl.fields["slot"], cl.fields["size"]) for cl in partitions] == [(0, size), (1, size)]
    assert partitions[0].line == "spiFlash/rom0, app/ota0 @ 0x8000, size 0xf8000"
    threads = [cl for cl in lines if cl.event == "thread" and cl.fields["thread"] == "keyboard"]
    assert threads and threads[0].line == "Thread 'keyboard' running" and threads[0].fields["state"] == "running"
    assert not any("Thread '" in cl.line and cl.event != "thread" for cl in lines)


def test_splice_repair_keeps_one_line_out_per_line_in() -> None:
    parser = ConsoleParser()
    raw = ["12 Subscribing to topic: a/tThread 'Timer1' running", "est/u/4.3", "Thread 'Timer1' complete", "x"]
    out = [parser.parse(r, float(i)) for i, r in enumerate(raw)]
    assert [cl.event for cl in out] == ["thread", "subscribing", "thread", None]
    assert out[1].fields == {"topic": "a/test/u/4.3", "us": 12} and out[1].t == 0.0
    # a debug line that is only a thread line is not a splice
    assert parser.parse("5 Thread 'keyboard' running", 9.0).event == "thread"
    assert parser.parse("Checking for a new application firmware...", 9.0).event == "checking"


# -- outcomes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("adv32-v5-tampered.log", "rejected:VerificationFailed"),
        ("adv32-v5-otherkey.log", "rejected:VerificationFailed"),
        ("adv32-v5-oldtimestamp.log", "rejected:DowngradeNotAllowed"),
        ("oracle-6.1.1/A3.log", "rejected:VerificationFailed"),
        # errors found mid-stream: the one `Error: …` line is all the device prints
        ("oracle-6.1.1/A5.log", "rejected:DowngradeNotAllowed"),
        ("oracle-6.1.1/A9.log", "rejected:InvalidFormat"),
        ("oracle-6.1.1/A10.log", "rejected:DecryptionFailed"),
    ],
)
def test_rejections(consoles: Path, name: str, outcome: str) -> None:
    lines = parse_file(consoles / name)
    assert outcome_of(lines, published=t_of(lines, "checking"), now=lines[-1].t) == Outcome.parse(outcome)
    if name.startswith("oracle") and outcome != "rejected:VerificationFailed":
        assert not any(cl.event in ("got_error", "switch_failed") for cl in lines)


def test_skipped_update_is_silence_without_restart(consoles: Path) -> None:
    lines = parse_file(consoles / "std-p100-L3-v99.log")
    published = t_of(lines, "subscribing")
    # still waiting inside the quiet period; decided after it (the SIGTERM exit is not a restart)
    assert outcome_of(lines, published, now=published + 5, quiet=10.0) is None
    assert outcome_of(lines, published, now=published + 10, quiet=10.0) == Outcome.parse("skipped")


@pytest.mark.parametrize("name", ["std-p1-L2-v5.log", "std-p1-L3-v5.log", "std-p46-L3-v300leb.log"])
def test_updated_needs_restart_and_new_slot(consoles: Path, name: str) -> None:
    lines = parse_file(consoles / name)
    published = t_of(lines, "checking")
    # restart seen but the board never came back: no decision until the timeout
    assert outcome_of(lines, published, now=published + 1, quiet=0.5, timeout=60) is None
    assert outcome_of(lines, published, now=published + 61, quiet=0.5, timeout=60) == Outcome.parse("timeout")
    # the board boots again from rom1 (as in retained-loop-boot2): updated
    both = then_boot(lines, consoles / "retained-loop-boot2.log")
    assert outcome_of(both, published, now=both[-1].t, quiet=0.5) == Outcome.parse("updated")
    # ... from the same slot with the same version: restarted, not updated
    same = then_boot(lines, consoles / "std-p1-L3-v5.log")
    assert outcome_of(same, published, now=same[-1].t, quiet=0.5) == Outcome.parse("restarted")


def test_default_level_shows_only_restart_and_new_slot(consoles: Path) -> None:
    lines = then_boot(parse_file(consoles / "std-p1-L2-v5.log"), consoles / "retained-loop-boot2.log")
    assert not any(cl.event in ("ota_write", "swapping", "switch_ok") for cl in lines)
    tracker = OutcomeTracker(quiet=30.0)
    results = []
    for cl in lines:
        if cl.event == "checking":
            tracker.published(cl.t)
        results.append(tracker.feed(cl))
    assert results[-1] == Outcome.parse("updated")
    assert [cl.event for cl in tracker.evidence] == ["restart", "boot", "running"]
    assert tracker.slot == 1 and tracker.version == "4.3"


def test_retained_loop_updates_at_both_boots_alternating_slots(consoles: Path) -> None:
    boot1 = parse_file(consoles / "retained-loop-boot1.log")
    boot2 = parse_file(consoles / "retained-loop-boot2.log")
    slots = []
    for first, second in ((boot1, consoles / "retained-loop-boot2.log"), (boot2, consoles / "retained-loop-boot1.log")):
        tracker = OutcomeTracker()
        for cl in then_boot(first, second):
            if cl.event == "subscribing":
                tracker.published(cl.t)
            tracker.feed(cl)
        assert tracker.outcome == Outcome.parse("updated")
        slots.append(next(cl.fields["to_slot"] for cl in first if cl.event == "swapping"))
        assert tracker.slot == slots[-1]
    assert slots == [1, 0]


def test_tracker_arms_itself_on_first_ota_line(consoles: Path) -> None:
    tracker = OutcomeTracker()
    outcomes = {tracker.feed(cl) for cl in parse_file(consoles / "adv32-v5-tampered.log")}
    assert Outcome.parse("rejected:VerificationFailed") in outcomes
    tracker.rearm()
    assert tracker.outcome is None and tracker.poll(1e12) is None


# -- user patterns -----------------------------------------------------------------------------------------------


def test_user_patterns_extend_and_override() -> None:
    parser = ConsoleParser(extra=[Pattern("wifi_missing", r"^SSID '(?P<ssid>[^']*)' not found$")])
    line = parser.parse("522 SSID 'PleaseEnterSSID' not found\r", 1.0)
    assert (line.event, line.fields) == ("wifi_missing", {"ssid": "PleaseEnterSSID", "us": 522})
    parser.add(Pattern("my_restart", ">> Normal Exit <<"))
    assert parser.parse(">> Normal Exit <<", 2.0).event == "my_restart"
    unknown = parser.parse("1234 MemoryDataStream::realloc 0 -> 19", 3.0)
    assert (unknown.event, unknown.fields) == (None, {"us": 1234})
    assert all(isinstance(p.regex, re.Pattern) for p in DEFAULT_PATTERNS)


def test_a_repeated_message_parses_the_same_each_time_and_a_later_pattern_counts() -> None:
    """The parser remembers matches (a device repeats its per-segment lines); each line gets its own fields."""
    parser = ConsoleParser()
    first = parser.parse("1000 ota_write_flash: item.size: 1460\r", 1.0)
    again = parser.parse("2000 ota_write_flash: item.size: 1460\r", 2.0)
    assert first.event == again.event == "ota_write" and first.fields["total"] == 1460
    assert first.fields["us"] == 1000 and again.fields["us"] == 2000  # not one shared dict
    assert {k: v for k, v in first.fields.items() if k != "us"} == {k: v for k, v in again.fields.items() if k != "us"}
    assert parser.parse("3000 my own line", 3.0).event is None
    parser.add(Pattern("mine", r"^my own line$"))  # a pattern added after the message was seen
    assert parser.parse("4000 my own line", 4.0).event == "mine"
    parser.patterns = [Pattern("only", r"^TCP ")]  # the table replaced
    assert parser.parse("5000 TCP 0x3ffef4a0 received: 1460 bytes", 5.0).event == "only"


# -- the renderer ------------------------------------------------------------------------------------------------


def rendered(debug_level: int, script) -> str:
    out: list[str] = []
    clock = iter(range(1000, 10**9, 7))
    console = SmingConsole(out.append, debug_level=debug_level, clock_us=lambda: next(clock))
    script(console)
    return "".join(out)


def boot_script(c: SmingConsole, slot: int = 0) -> None:
    c.banner("flash.bin", DEFAULT_ROMS, current_slot=slot)
    c.show_info(0xC001BEAF, DEFAULT_ROMS, slot, DEFAULT_ROMS[slot][0], "4.3")


def test_renderer_reproduces_a_recording_byte_for_byte(consoles: Path) -> None:
    def script(c: SmingConsole) -> None:
        boot_script(c)
        c.serial("591 SSID 'PleaseEnterSSID' not found\r\nIF_UP, AP: Host WiFi\n")
        c.serial("IP_CHANGE, ip: 192.168.13.10, netmask: 255.255.255.0, gateway: 192.168.13.1\n")
        c.checking()
        c.subscribing("a/test/u/4.3")  # debug level: hidden at level 2
        c.ota_write(1371)
        c.swapping(0, 0x8000, 1, 0x108000)
        c.switching_ok()
        c.normal_exit()

    assert rendered(2, script).encode() == (consoles / "std-p1-L2-v5.log").read_bytes()


def test_renderer_lines_match_recorded_text(consoles: Path) -> None:
    recorded = {cl.line for name in EXPECTED for cl in parse_file(consoles / name)}
    recorded |= {cl.line for path in (consoles / "oracle-6.1.1").glob("*.log") for cl in parse_file(path)}
    sig = bytes.fromhex(
        "f153f38f0ce2e2b26eac6004a6de793f37fa3f1edc3d072e28b62369d6796c52"
        "a9458842b050fb3439494dcc084c7cd8427d35f859a55a2135f4cba530ea8607"
    )
    clock = iter(
        [
            1490,
            1850852,
            1850863,
            1850874,
            1551521,
            1551542,
            1551544,
            10724,
            1856478,
            1856780,
            1856798,
            1856800,
            2907434,
            2907439,
            2907440,
            1600616,
        ]
    )
    out: list[str] = []
    c = SmingConsole(out.append, debug_level=3, clock_us=lambda: next(clock))
    c.debug(3, "Subscribing to topic: a/test/u/4.3")
    c.ota_write(204800)
    c.swapping(0, 0x8000, 1, 0x108000)
    c.switching_ok()
    c.build_timestamps(current=(400 << 32) + 1897641308, file=(401 << 32) + 1897653446)
    c.starting_upgrade(1)
    c.update_slot(1, 0x108000, 0x108000 + 0x4D914)  # start and start + image size
    c.signature(sig)
    c.rom_update_complete()
    c.rom_activated(1)
    c.switching_ok()
    c.device_error(DeviceErrorCode.VerificationFailed)
    c.got_error("VerificationFailed")
    c.switching_failed()
    c.device_error("DowngradeNotAllowed")
    lines = "".join(out).split("\r\n")
    assert lines[-1] == ""
    for line in lines[:-1]:
        assert line in recorded, line


CONN = "5660c5c0"
SCRIPT_EVENTS = [
    ("network_up", {"ip": "192.168.13.10", "netmask": "255.255.255.0", "gateway": "192.168.13.1"}),
    ("connecting", {}),
    ("tcp_connect", {"conn": CONN, "host": "192.168.13.1", "port": 1883}),
    ("subscribing", {"topic": "a/test/u/4.3"}),
    ("tcp_connected", {"conn": CONN, "ssl": 0, "code": 0}),
    ("subscribed", {"topic": "a/test/u/4.3"}),
    ("tcp_received", {"conn": CONN, "length": 1390}),
    ("ota_write", {"total": 1024}),
    ("ota_write", {"total": 2048}),
    ("build_timestamp_current", {"timestamp": 5}),
    ("build_timestamp_file", {"timestamp": 6}),
    ("ota_started", {"count": 2}),
    ("skip_rom", {"start": 0x2000, "end": 0x3000}),
    ("update_slot", {"name": "rom1", "slot": 1, "start": 0x108000, "end": 0x110000}),
    ("signature", {"signature": "00ff10"}),
    ("rom_update_complete", {}),
    ("rom_activated", {"value": 1471560480}),
    ("device_error", {"message": "ROM image too large", "error": "RomTooLarge"}),
    ("got_error", {"message": "ROM image too large", "error": "RomTooLarge"}),
    ("switch_failed", {}),
    (
        "swapping",
        {
            "from_name": "rom1",
            "from_slot": 1,
            "from_addr": 0x108000,
            "to_name": "rom0",
            "to_slot": 0,
            "to_addr": 0x8000,
        },
    ),
    ("switch_ok", {}),
]
LEVEL = {"network_up": 0, "device_error": 0, "got_error": 0, "switch_failed": 0, "build_timestamp_current": 2,
         "build_timestamp_file": 2, "ota_started": 2, "skip_rom": 2, "update_slot": 2,
         "rom_update_complete": 2, "rom_activated": 2}  # fmt: skip


def full_script(c: SmingConsole) -> None:
    boot_script(c, slot=1)
    c.ip_change()
    c.checking()
    c.mqtt_connecting(CONN, "192.168.13.1", 1883)
    c.subscribing("a/test/u/4.3")
    c.tcp_connected(CONN)
    c.subscribed("a/test/u/4.3")
    c.tcp_received(CONN, 1390)
    c.ota_write(1024)
    c.ota_write(2048)
    c.build_timestamps(5, 6)
    c.starting_upgrade(2)
    c.skip_rom(0x2000, 0x3000)
    c.update_slot(1, 0x108000, 0x110000)
    c.signature(b"\x00\xff\x10")
    c.rom_update_complete()
    c.rom_activated(1)
    c.device_error("RomTooLarge")
    c.got_error("RomTooLarge")
    c.switching_failed()
    c.swapping(1, 0x108000, 0, 0x8000)
    c.switching_ok()
    c.normal_exit()


@pytest.mark.parametrize("level", [3, 2])
def test_renderer_round_trip(level: int) -> None:
    text = rendered(level, full_script)
    parser = ConsoleParser()
    events = [parser.parse(raw, 0.0) for raw in text.split("\n")[:-1]]
    got = [(cl.event, {k: v for k, v in cl.fields.items() if k != "us"}) for cl in events if cl.event]
    boot = [e for e, _ in got[:15]]
    assert boot[:4] == ["boot", "rom_found", "rom_found", "rom_count"]
    assert ("running", {"name": "rom1", "slot": 1, "address": 0x108000, "version": "4.3"}) in got
    ota = [(e, f) for e, f in got if e in {n for n, _ in SCRIPT_EVENTS}]
    assert ota == [(e, f) for e, f in SCRIPT_EVENTS if LEVEL.get(e, 3) <= level]
    assert [e for e, _ in got][-2:] == ["exit_code", "restart"]
    # every debug line carries the microsecond counter, and only debug lines do
    for cl in events:
        if cl.event in {n for n, _ in SCRIPT_EVENTS} - {"network_up"}:
            assert "us" in cl.fields
        if cl.event in ("running", "checking", "boot", "restart", "network_up"):
            assert "us" not in cl.fields


def test_renderer_level2_hides_standard_update() -> None:
    def script(c: SmingConsole) -> None:
        c.subscribing("a/test/u/4.3")
        c.ota_write(1371)
        c.swapping(0, 0x8000, 1, 0x108000)
        c.switching_ok()

    assert rendered(2, script) == ""
    assert rendered(3, script).count("\r\n") == 5  # subscribing, write, swap + blank, switch


# -- the console buffer both boards use --------------------------------------------------------------------------


class ListBoard(BufferedConsole):
    """The smallest Board: a console buffer fed by the test."""

    name = "list"

    def __init__(self) -> None:
        self._console = ConsoleBuffer()

    def reset(self) -> None: ...

    def power_cycle(self) -> None: ...

    def current_version(self):
        return None

    def close(self) -> None:
        self._console.close()


def test_console_buffer_expect_semantics() -> None:
    board = ListBoard()
    assert isinstance(board, Board)
    parser = ConsoleParser()
    for i, raw in enumerate(["Checking for a new application firmware...\r", "12 Switching failed!", "x 42 y"]):
        board._console.push(parser.parse(raw, float(i)))
    assert board.expect("checking", 1).t == 0.0  # lines before the call count
    assert board.expect(["switch_ok", "switch_failed"], 1).event == "switch_failed"
    hit = board.expect(re.compile(r"x (?P<n>\d+)"), 1)
    assert hit.fields == {"n": "42"}
    with pytest.raises(BoardError, match=r"timed out after 0.05s waiting for checking; last line: 'x 42 y'"):
        board.expect("checking", 0.05)  # consumed: does not match again
    board.close()
    with pytest.raises(BoardError, match="console closed"):
        board.expect("checking", 5)
    board._console.fail(BoardError("port gone"))
    with pytest.raises(BoardError, match="port gone"):
        board.line_at(board.end, 1)


@pytest.mark.parametrize("totals", [(), (1460, 2920, 4380)])
def test_segments_printed_together_read_as_printed_one_by_one(totals) -> None:
    """The lines of segments handed over at once: the per-segment lines, in their order, with
    non-decreasing stamps (one clock reading, 2 µs apart), parsed into the same events."""
    ticks = iter(range(1000, 10**6, 7))
    one, together = [], []
    single = SmingConsole(one.append, 3, clock_us=lambda: next(ticks))
    wires = [1460, 1460, 1460]
    for i, wire in enumerate(wires):
        if totals:
            single.ota_write(totals[i])
        single.tcp_received("3fff0a28", wire)
    SmingConsole(together.append, 3, clock_us=lambda: 5000).segments_received("3fff0a28", wires, totals)
    assert len(together) == 1  # one write
    lines = together[0].splitlines()
    assert [re.sub(r"^\d+ ", "", x) for x in lines] == [re.sub(r"^\d+ ", "", x) for x in "".join(one).splitlines()]
    stamps = [int(x.split()[0]) for x in lines]
    assert stamps == sorted(stamps) and stamps[0] == 5000
    parser = ConsoleParser()
    assert [parser.parse(x, 0.0).event for x in lines] == [
        parser.parse(x, 0.0).event for x in "".join(one).splitlines()
    ]
