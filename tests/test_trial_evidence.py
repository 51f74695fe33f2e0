"""A trial's evidence (issue 14, items 2 and 3), on a real Mosquitto: the broker's log as a witness of the
board's subscription and deliveries, the retained update cleared at the handover (each trial measures its
own package), and the quiet window made from the board's link rate (a slow transfer is not ``skipped``)."""

from __future__ import annotations

import contextlib
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from otalib.board.sim.build import DeviceBuild
from otalib.board.virtual import VirtualBoard
from otalib.broker.log_watch import BrokerEventKind, BrokerLogWatch, parse_log_line
from otalib.formats.version import Version
from otalib.keys import DeviceKeys
from otalib.lab.schema import TrialConfig
from otalib.lab.trial import QUIET_BASE_S, Bench, quiet_window
from otalib.mqtt.publish import deploy
from otalib.net.link import LinkProfile, LinkProxy
from otalib.vocabulary import UpdateMode

pytestmark = pytest.mark.timeout(180)

#: The board's link in these tests: slow enough that a transfer takes longer than the old 1.5 s window.
SLOW_BPS = 16_000.0
SIZE = 40 * 1024
TOPIC = "a/test/u/4.3"


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.split("://", 1)[1].partition(":")
    return host, int(port.split("/")[0])


@pytest.fixture
def bench(tmp_path):
    with Bench(tmp_path / "bench", board_rate_Bps=SLOW_BPS, reset="none") as shared:
        yield shared


@contextlib.contextmanager
def slow_board(bench: Bench, mode: UpdateMode, *, debug_level: int, version: str = "4.3.5"):
    """A virtual board reached only through its pty (a "real" board to the trial), behind a slow link."""
    broker = bench.broker("mosquitto", False)
    with LinkProxy(*_host_port(broker.url), LinkProfile(SLOW_BPS, 0.0, "slow", up_rate_Bps=SLOW_BPS)) as proxy:
        build = DeviceBuild(version=Version.parse(version)).accepting(mode, DeviceKeys.of(bench.key))
        board = VirtualBoard(
            bench.workdir / f"board-{time.monotonic_ns()}.bin",
            broker.url,
            build,
            link=proxy.address,
            debug_level=debug_level,
        )
        board.start()
        try:
            yield board
        finally:
            board.stop()


def real_trial(bench: Bench, board: VirtualBoard, **params):
    bench.allow_demo_image = True  # the virtual board takes otalab's demo images
    config = TrialConfig(campaign="evidence", size=SIZE, broker_backend="mosquitto", board=board.console_path, **params)
    return bench.run(config)


# -- the broker's log ------------------------------------------------------------------------------------------------


def test_log_lines_of_mosquitto_2_are_parsed():
    """Lines as Mosquitto 2.0 prints them (read off a running broker), with and without the timestamp."""
    sent = parse_log_line(
        "1795889552: Sending PUBLISH to sming (d0, q0, r1, m0, 'a/test/u/4.3', ... (5000 bytes))", 1.0
    )
    assert sent is not None and (sent.kind, sent.client, sent.topic, sent.size, sent.retained) == (
        BrokerEventKind.SENT,
        "sming",
        TOPIC,
        5000,
        True,
    )
    sub = parse_log_line("sming 0 a/test/u/4.3", 2.0)
    assert sub is not None and (sub.kind, sub.client, sub.topic) == (BrokerEventKind.SUBSCRIBED, "sming", TOPIC)
    gone = parse_log_line("1795889552: Client sming closed its connection.", 3.0)
    assert gone is not None and gone.kind is BrokerEventKind.DISCONNECTED
    assert parse_log_line("1795889552: Sending SUBACK to sming", 4.0) is None
    assert parse_log_line("1795889552: Received PUBLISH from auto-1 (d0, q2, r1, m1, 't', ... (0 bytes))", 5.0) is None


def test_the_broker_log_reader_sees_the_boards_subscription_and_deliveries(bench):
    """A client with a configured id subscribes; the reader sees it, the live and the retained delivery."""
    broker = bench.broker("mosquitto", False)
    client_id = "board-7"
    watch = bench.broker_log("mosquitto", False)
    assert watch is not None
    mark = watch.mark
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(*_host_port(broker.url))
    client.loop_start()
    try:
        client.subscribe(TOPIC, qos=0)
        subscribed = watch.wait_for(lambda e: e.kind is BrokerEventKind.SUBSCRIBED and e.client == client_id, 10)
        assert subscribed is not None and subscribed.topic == TOPIC and watch.subscribed(client_id, TOPIC)
        payload = b"\xe9" + b"x" * 4999
        deploy(payload, broker.url + "/" + TOPIC, timeout=10, check_package=False)
        live = watch.wait_for(lambda e: e.kind is BrokerEventKind.SENT and e.client == client_id, 10, after=mark)
        assert live is not None and (live.size, live.retained, live.topic) == (5000, False, TOPIC)
    finally:
        client.loop_stop()
        client.disconnect()
    gone = watch.wait_for(lambda e: e.kind is BrokerEventKind.DISCONNECTED and e.client == client_id, 10, after=mark)
    assert gone is not None and not watch.subscribed(client_id, TOPIC)
    again = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    again.connect(*_host_port(broker.url))
    again.loop_start()
    try:
        again.subscribe(TOPIC, qos=0)
        retained = watch.wait_for(
            lambda e: e.kind is BrokerEventKind.SENT and e.client == client_id and e.retained, 10, after=mark
        )
        assert retained is not None and retained.size == 5000
    finally:
        again.loop_stop()
        again.disconnect()
        deploy(None, broker.url + "/" + TOPIC, clear=True, timeout=10)


def test_the_embedded_broker_has_no_log_to_watch(tmp_path):
    with Bench(tmp_path / "b", reset="none") as bench:
        assert bench.broker_log("embedded", False) is None


def test_the_log_watch_is_bounded(tmp_path):
    log = tmp_path / "mosquitto.log"
    log.write_text("".join(f"1: sming 0 t/{i}\n" for i in range(50)))
    with BrokerLogWatch(log, maxlen=10) as watch:
        last = watch.wait_for(lambda e: e.topic == "t/49", 10)
        assert last is not None
        assert len(watch.events()) == 10 and watch.mark == 50
        assert [e.topic for e in watch.events(45)] == [f"t/{i}" for i in range(45, 50)]


# -- the quiet window ------------------------------------------------------------------------------------------------


def test_the_quiet_window_grows_with_the_transfer_time():
    assert quiet_window(0, SLOW_BPS, 1.0) == pytest.approx(QUIET_BASE_S + 1.0)
    assert quiet_window(SIZE, SLOW_BPS, 1.0) > SIZE / SLOW_BPS + 1.0 + QUIET_BASE_S


def test_a_slow_standard_transfer_at_the_default_debug_level_is_not_called_skipped(bench):
    """Level 2: the board prints nothing from the publish to its restart, a transfer of several seconds."""
    with slow_board(bench, UpdateMode.STANDARD, debug_level=2) as board:
        result = real_trial(bench, board, mode="standard", patch=6)
    assert result.outcome.text == "updated", result.notes
    assert "no OTA lines" in result.notes  # the silence the old fixed 1.5 s window called "skipped"
    assert result.flags == ""
    assert result.phases["t_broker_sent"] is not None  # the broker's log: the board got the message


# -- each trial measures its own package -----------------------------------------------------------------------------


def test_two_consecutive_trials_on_one_board_each_measure_their_own_package(bench):
    """The retained update is cleared at the handover, before the board reboots and resubscribes; each
    trial checks what the console shows (signature, build timestamp, ROM size) against its own package."""
    with slow_board(bench, UpdateMode.SIGNED, debug_level=3) as board:
        first = real_trial(bench, board, mode="signed", patch=6)
        second = real_trial(bench, board, mode="signed", patch=7)
        delivered = [(u.outcome.value, u.patch) for u in board.updates if u.payload_bytes]
    for result in (first, second):
        assert result.outcome.text == "updated", result.notes
        assert result.flags == "", result.notes
        assert {"signature", "timestamp", "rom-size", "broker"} <= set(result.evidence.split(","))
        assert result.phases["t_cleared"] < result.phases["t_new_version"]
    # the board took each package once: no retained copy of the first after its reboot
    assert delivered == [("applied", 6), ("applied", 7)]


def test_a_foreign_package_on_the_console_is_flagged():
    """Another package's signature in the console: a flag (and no throughput), not a measurement."""
    from otalib.board.protocol import ConsoleLine
    from otalib.lab.trial import PackageFacts

    facts = PackageFacts(size=100, rom_sizes=frozenset({64}), timestamp=1234, ota=b"\x00" * 10 + bytes(range(4)))
    ours = ConsoleLine(0.0, "", "signature", {"signature": bytes(range(4)).hex()})
    theirs = ConsoleLine(0.0, "", "signature", {"signature": "ffeeddcc"})
    assert facts.check(ours) == ("signature", True)
    assert facts.check(theirs) == ("signature", False)
    assert facts.check(ConsoleLine(0.0, "", "build_timestamp_file", {"timestamp": 99})) == ("timestamp", False)
    assert facts.check(ConsoleLine(0.0, "", "update_slot", {"start": 0x2000, "end": 0x2040})) == ("rom-size", True)


def test_an_encrypted_package_is_known_by_its_plaintext_signature():
    """The board prints the DECRYPTED file's signature: an encrypted trial's own package is not foreign
    (it was, and its throughput was lost); another key (or none) cannot vouch for it."""
    from otalib.board.protocol import ConsoleLine
    from otalib.firmware.demo import make_demo_image
    from otalib.keys import LabKey
    from otalib.lab.trial import PackageFacts
    from otalib.update import make_update

    key = LabKey.generate()
    image = make_demo_image("esp8266", "test", "4.3.2", size=4096)
    update = make_update(image, "signed+encrypted", patch=2, key=key, timestamp=7)
    signed = make_update(image, "signed", patch=2, key=key, timestamp=7)
    printed = ConsoleLine(0.0, "", "signature", {"signature": signed.ota[-64:].hex()})
    assert PackageFacts.of(update, [4096], key).check(printed) == ("signature", True)
    assert PackageFacts.of(update, [4096], LabKey.generate()).check(printed) is None
    assert PackageFacts.of(update, [4096]).check(printed) is None


def test_a_trial_that_sees_another_package_arrive_flags_it(bench):
    """The old race, staged: another package is still streaming to the board when the trial starts. The
    trial may well decide ``updated`` on it; the console's signature says whose bytes they were."""
    from otalib.firmware.demo import make_demo_image
    from otalib.update import make_update

    broker = bench.broker("mosquitto", False)
    with slow_board(bench, UpdateMode.SIGNED, debug_level=3) as board:
        watch = bench.broker_log("mosquitto", False)
        assert watch is not None
        mark = watch.mark
        other = make_update(make_demo_image("esp8266", "test", "4.3.6", size=SIZE), "signed", patch=6, key=bench.key)
        deploy(other.package, f"{broker.url}/{TOPIC}", timeout=30)
        started = watch.wait_for(lambda e: e.client == "sming" and e.size == len(other.package), 10, after=mark)
        assert started is not None  # the board is receiving it (at the slow link's pace) as the trial starts
        result = real_trial(bench, board, mode="signed", patch=7)
    flags = result.flags.split(";")
    assert "foreign-package" in flags, (result.outcome, result.notes)
    assert result.throughput_Bps != result.throughput_Bps  # NaN: no measurement from another package's bytes


def test_a_run_stored_before_the_evidence_columns_still_loads():
    import math

    import pandas as pd

    from otalib.lab.schema import TrialResult, validate_frame

    row = TrialResult(TrialConfig(campaign="old"), outcome="updated", flags="foreign-package").to_row()
    old = pd.DataFrame([row]).drop(columns=["flags", "evidence", "t_broker_sent", "t_cleared"])
    loaded = validate_frame(old)
    assert loaded.loc[0, "flags"] == "" and loaded.loc[0, "evidence"] == ""
    assert math.isnan(loaded.loc[0, "t_broker_sent"]) and math.isnan(loaded.loc[0, "t_cleared"])
    assert validate_frame(pd.DataFrame([row])).loc[0, "flags"] == "foreign-package"
