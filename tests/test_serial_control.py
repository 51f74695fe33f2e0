"""A real board's control lines and power hook (issue 14 item 4) and its ESP8266 boot banners (item 5).

The control lines are read through pyserial's own ``loop://`` port with its logging on: every
change of RTS/DTR pyserial applies is logged, open included. The banners are the composed
fixtures of tests/consoles/esp8266 (see its README), fed through the serial line splitter in
every split, with CRLF and LF line ends and noise around the ROM's line.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest

from otalib.board.console import ConsoleParser, OutcomeTracker
from otalib.board.serial_board import LineSplitter, PowerHook, SerialBoard
from otalib.board.sim.sming_console import ConsolePlatform, SmingConsole
from otalib.errors import BoardError
from otalib.vocabulary import OutcomeKind

ESP8266 = Path(__file__).parent / "consoles" / "esp8266"
LOOP = "loop://?logging=debug"
_LINE_STATE = re.compile(r"_update_(rts|dtr)_state\((True|False)\)")


def line_changes(caplog: pytest.LogCaptureFixture) -> list[tuple[str, bool]]:
    """The RTS/DTR states pyserial applied, in order."""
    out = []
    for record in caplog.records:
        m = _LINE_STATE.search(record.getMessage())
        if m:
            out.append((m.group(1), m.group(2) == "True"))
    return out


# --------------------------------------------------------------------------- control lines


def test_port_opens_with_rts_and_dtr_released(caplog: pytest.LogCaptureFixture) -> None:
    """A board wired RTS -> EN is not held in reset (nor DTR -> GPIO0 low) by opening the port."""
    with caplog.at_level(logging.DEBUG, logger="pySerial.loop"), SerialBoard(LOOP):
        opened = line_changes(caplog)
    assert sorted(opened) == [("dtr", False), ("rts", False)]


def test_reset_is_esptools_hard_reset_into_the_application(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pySerial.loop"), SerialBoard(LOOP) as board:
        caplog.clear()
        board.reset()
        changes = line_changes(caplog)
    # GPIO0 released (DTR off) first, then EN low (RTS on) and released; DTR never asserted,
    # so the chip boots its application, not the ROM's download mode
    assert changes[0] == ("dtr", False)
    rts = [state for line, state in changes if line == "rts"]
    assert rts == [True, False]
    assert ("dtr", True) not in changes


def test_reset_without_the_line_wired_is_refused() -> None:
    with SerialBoard(LOOP, reset_via_rts=False) as board, pytest.raises(BoardError, match="no reset line"):
        board.reset()


def test_power_cycle_without_a_hook_is_refused() -> None:
    with SerialBoard(LOOP) as board, pytest.raises(BoardError, match="no power hook"):
        board.power_cycle()


def test_power_hook_runs_its_commands_in_order(tmp_path: Path) -> None:
    log = tmp_path / "power.log"
    py = sys.executable
    cycle = PowerHook(cycle=f"{py} -c \"open({str(log)!r}, 'a').write('cycle\\n')\"")
    with SerialBoard(LOOP, power=cycle) as board:
        board.power_cycle()
    assert log.read_text() == "cycle\n"
    off_on = PowerHook.from_spec(
        {
            "off": f"{py} -c \"open({str(log)!r}, 'a').write('off\\n')\"",
            "on": f"{py} -c \"open({str(log)!r}, 'a').write('on\\n')\"",
            "off_s": 0,
        }
    )
    assert off_on is not None
    off_on.power_cycle()
    assert log.read_text() == "cycle\noff\non\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"off": "true"}, "both an off and an on"),
        ({"cycle": "true", "on": "true"}, "not both"),
        ({"cycle": "true", "volts": 5}, "unknown power hook key"),
        ({"cycle": 3}, "must be a command string"),
        ({"cycle": "true", "off_s": "long"}, "numbers of seconds"),
        ({"cycle": "'unclosed"}, "bad power cycle command"),
        ({"cycle": "   "}, "empty power cycle command"),
        (["true"], "a command string or a mapping"),
    ],
)
def test_bad_power_hooks_are_refused(spec: object, message: str) -> None:
    with pytest.raises(BoardError, match=message):
        PowerHook.from_spec(spec)


def test_failing_power_commands_say_which(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match="power cycle command not found: no-such-relay-tool"):
        PowerHook(cycle="no-such-relay-tool --port 2").power_cycle()
    failing = PowerHook(cycle=f"{sys.executable} -c \"import sys; sys.exit('relay 2 not found')\"")
    with pytest.raises(BoardError, match=r"exit 1\): relay 2 not found"):
        failing.power_cycle()


# --------------------------------------------------------------------------- ESP8266 boot banners

FIXTURES = {
    # file: (boot events in order, rBoot's slot, the running slot)
    "power-on-rom0.bin": (["boot", "bootloader", "rom_boot"], 0, 0),
    "update-restart-garbled-rom.bin": (["bootloader", "rom_boot"], 1, 1),
    "reset-rom1-lf.bin": (["boot", "bootloader", "rom_boot"], 1, 1),
}


def parse_split(data: bytes, cut: int | None) -> list:
    """The fixture's lines through the serial splitter (in two reads at ``cut``) and the parser."""
    splitter, parser = LineSplitter(), ConsoleParser()
    pieces = [data] if cut is None else [data[:cut], data[cut:]]
    raw = [line for i, piece in enumerate(pieces) for line in splitter.feed(piece, float(i))]
    raw += splitter.end_of_input(9.0)
    return [parser.parse(text, t) for t, text in raw]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_esp8266_banners_are_boots_in_every_split(name: str) -> None:
    data = (ESP8266 / name).read_bytes()
    boots, rboot_slot, running_slot = FIXTURES[name]
    for cut in [None, *range(1, len(data))]:
        lines = parse_split(data, cut)
        events = [line.event for line in lines if line.event in ("boot", "bootloader", "rom_boot")]
        assert events == boots, (name, cut)
        [rom_boot] = [line for line in lines if line.event == "rom_boot"]
        assert rom_boot.fields["slot"] == rboot_slot
        assert [line.fields["slot"] for line in lines if line.event == "running"][-1] == running_slot


def test_rom_line_fields_with_noise_around() -> None:
    lines = parse_split((ESP8266 / "reset-rom1-lf.bin").read_bytes(), None)
    [rom] = [line for line in lines if line.event == "boot"]
    assert rom.fields == {"rst_cause": 2, "boot_mode": "3,6"}
    assert "\ufffd" in rom.line  # the noise is kept in the line, replaced where not UTF-8
    [rboot] = [line for line in lines if line.event == "bootloader"]
    assert rboot.fields == {"rboot_version": "1.4.2"}


def test_update_decided_from_the_esp8266_restart_banners() -> None:
    """Default debug level too: the first boot only teaches the slot; the restart into rom1 is the update."""
    lines = parse_split((ESP8266 / "power-on-rom0.bin").read_bytes(), None)
    tracker = OutcomeTracker(quiet=60)
    assert {tracker.feed(line) for line in lines} == {None}  # a first boot is not an update
    assert (tracker.slot, tracker.version) == (0, "4.3")
    tracker.published(0.0)
    later = parse_split((ESP8266 / "update-restart-garbled-rom.bin").read_bytes(), None)
    outcomes = [tracker.feed(line) for line in later]
    assert outcomes[-1] is not None and outcomes[-1].kind is OutcomeKind.UPDATED
    assert [line.event for line in tracker.evidence][:3] == ["swapping", "switch_ok", "bootloader"]


def test_reset_into_the_same_rom_is_a_restart_not_an_update() -> None:
    tracker = OutcomeTracker(quiet=60)
    for line in parse_split((ESP8266 / "reset-rom1-lf.bin").read_bytes(), None):
        tracker.feed(line)
    assert tracker.slot == 1
    outcomes = [tracker.feed(line) for line in parse_split((ESP8266 / "reset-rom1-lf.bin").read_bytes(), None)]
    assert outcomes[-1] is not None and outcomes[-1].kind is OutcomeKind.RESTARTED


def test_rboot_slot_decides_when_the_application_does_not_say() -> None:
    """A firmware that prints no ``Currently running`` line: rBoot's ``Booting rom N.`` gives the slot."""
    tracker = OutcomeTracker(quiet=60)
    banner = b"\r\nrBoot v1.4.2 - richardaburton@gmail.com\r\nBooting rom %d.\r\n"
    for line in parse_split(banner % 1, None):
        tracker.feed(line)
    assert tracker.slot == 1
    tracker.published(0.0)  # an update, then a restart into rom0
    for line in parse_split(banner % 0, None):
        assert tracker.feed(line) is None
    assert tracker.slot == 0


def test_virtual_esp8266_console_prints_the_documented_banners() -> None:
    out: list[str] = []
    console = SmingConsole(out.append, platform=ConsolePlatform.ESP8266)
    console.normal_exit()  # an ESP8266 restart prints no exit lines
    assert out == []
    console.chip_start(2)
    console.banner(current_slot=1)
    data = "".join(out).encode("utf-8", "surrogateescape")
    assert b" ets Jan  8 2013,rst cause:2, boot mode:(3,6)\r\n" in data
    assert b"\r\nrBoot v1.4.2 - richardaburton@gmail.com\r\n" in data and data.endswith(b"\r\n")
    lines = parse_split(data, None)
    assert [line.event for line in lines if line.event] == ["boot", "bootloader", "rom_boot"]
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the ROM's noise is raw bytes, as on the wire


# --------------------------------------------------------------------------- the campaign's power hook


def real_board_spec(**extra: object) -> dict:
    grid = {"fault": ["none", "power-loss"]}
    fixed = {"board": "/dev/ttyUSB0", "patch": 2}
    return {"name": "real", "grid": grid, "fixed": fixed, "allow_demo_image": True, **extra}


def test_power_loss_on_a_real_board_without_a_hook_is_refused_in_the_spec() -> None:
    from otalib.errors import LabError
    from otalib.lab.campaign import CampaignSpec

    with pytest.raises(LabError, match="power-loss trial on the real board /dev/ttyUSB0 needs a power hook"):
        CampaignSpec.from_dict(real_board_spec())
    spec = CampaignSpec.from_dict(real_board_spec(power="uhubctl -a cycle -p 2", board_reset="power"))
    assert spec.to_dict()["power"] == "uhubctl -a cycle -p 2" and spec.to_dict()["board_reset"] == "power"
    # the virtual board cuts its own power
    CampaignSpec.from_dict({"name": "virtual", "grid": {"fault": ["power-loss"]}})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"board_reset": "power"}, "needs a 'power' hook"),
        ({"power": "true", "board_reset": "jumper"}, "'board_reset' must be one of rts, power, none"),
        ({"power": {"off": "true"}}, "'power': a power hook needs"),
    ],
)
def test_bad_board_control_in_the_spec(extra: dict, message: str) -> None:
    from otalib.errors import LabError
    from otalib.lab.campaign import CampaignSpec

    with pytest.raises(LabError, match=message):
        CampaignSpec.from_dict({"name": "x", "grid": {}, "fixed": {"board": "/dev/ttyUSB0"}, **extra})


def test_trial_refuses_power_loss_on_a_real_board_without_a_hook(tmp_path: Path) -> None:
    from otalib.errors import LabError
    from otalib.lab.schema import TrialConfig
    from otalib.lab.trial import Bench

    config = TrialConfig(board=str(tmp_path / "no-such-port"), patch=2, fault="power-loss")
    with Bench(tmp_path / "bench", firmware=b"\xe9" + bytes(255)) as bench:
        with pytest.raises(LabError, match="needs a power hook"):
            bench.run(config)
        assert bench.describe() == {}  # refused before a broker started
