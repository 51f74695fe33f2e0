"""Trials on the virtual board through a real Mosquitto: every outcome, phases on one clock, a real campaign."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from otalib.board.serial_board import BoardReset
from otalib.cli import cli
from otalib.lab.schema import PHASES, TrialConfig, validate_frame
from otalib.lab.store import load_run
from otalib.lab.trial import Bench, FaultSpec

pytestmark = pytest.mark.timeout(120)


#: Console silence that means "skipped" for a board on a serial port (generous: a loaded machine is slow).
QUIET_S = 10.0


@pytest.fixture(scope="module")
def bench():
    with Bench(quiet_s=QUIET_S) as shared:
        yield shared


def trial(bench, **params):
    config = TrialConfig(campaign="t", size=params.pop("size", 32 * 1024), broker_backend="mosquitto", **params)
    return bench.run(config)


def test_signed_update_is_applied_with_ordered_phases(bench):
    result = trial(bench, mode="signed")
    assert result.outcome.text == "updated" and result.error == ""
    ph = result.phases
    # causal order; PUBCOMP and the board's first byte race (the broker forwards before it completes QoS 2)
    assert ph["t_build"] <= ph["t_publish_start"] <= ph["t_pubcomp"]
    chain = [
        ph[p]
        for p in PHASES
        if p not in ("t_build", "t_pubcomp", "t_broker_sent", "t_cleared") and ph.get(p) is not None
    ]
    assert chain == sorted(chain)
    for name in (
        "t_build",
        "t_publish_start",
        "t_pubcomp",
        "t_first_byte",
        "t_verified",
        "t_switched",
        "t_new_version",
    ):
        assert result.phases.get(name) is not None, name
    assert result.bytes > 32 * 1024 and result.throughput_Bps > 0
    # the device restarts 1 s after switching, as the real one does
    assert result.phases["t_restart"] - result.phases["t_switched"] >= 0.9
    row = validate_frame(__import__("pandas").DataFrame([result.to_row()]))
    assert row.loc[0, "outcome"] == "updated"


def test_older_patch_is_skipped(bench):
    result = trial(bench, mode="signed", patch=3)
    # the board itself received the message, read patch 3 and ignored it (not just silence)
    assert (result.outcome.text, result.board_updates) == ("skipped", "skipped@3")


def test_equal_patch_reinstalls_only_on_sming_61(bench):
    result = trial(bench, mode="standard", patch=5, device_profile="sming-6.1")
    assert result.outcome.text == "updated" and result.board_updates.startswith("applied@5")
    result = trial(bench, mode="standard", patch=5, device_profile="reference")
    assert (result.outcome.text, result.board_updates) == ("skipped", "skipped@5")


def test_varint_quirk_patch_129_reads_as_2_on_sming_61(bench):
    # the board runs patch 5; 129 is packed 81 01, which the sming-6.1 decoder ADDS: 1 + 1 = 2, older
    quirk = trial(bench, mode="standard", patch=129, device_profile="sming-6.1")
    assert (quirk.outcome.text, quirk.board_updates) == ("skipped", "skipped@2")
    reference = trial(bench, mode="standard", patch=129, device_profile="reference")
    assert reference.outcome.text == "updated" and reference.board_updates == "applied@129"


def test_corrupted_byte_rejected_in_advanced_bricks_in_standard(bench):
    signed = trial(bench, mode="signed", fault="corrupt@0.5")
    assert signed.outcome.text == "rejected:VerificationFailed" and signed.error == "VerificationFailed"
    assert trial(bench, mode="encrypted", fault="corrupt@0.5").outcome.text == "rejected:DecryptionFailed"
    assert trial(bench, mode="standard", fault="corrupt@0.5").outcome.text == "bricked"


@pytest.mark.parametrize("fault", ["cut@0.5", "power-loss@0.5"])
def test_transient_faults_end_updated_because_the_message_is_retained(bench, fault):
    result = trial(bench, mode="signed", fault=fault)
    assert result.outcome.text == "updated"
    # the fault really struck mid-payload, the board came back on a second connection, and the
    # retained message was then installed on it
    kind = {"cut@0.5": "cut", "power-loss@0.5": "stall"}[fault]
    fired = result.faults_fired.split(";")
    assert fired[0].startswith(f"{kind}@") and len(fired) == (2 if kind == "stall" else 1)
    if kind == "stall":
        assert fired[1] == "power-loss"
    # a second connection took the update (a third may follow: the reconnect after the restart)
    assert result.connections >= 2
    assert result.board_updates.split(";") == ["abandoned@6", "applied@6"]


def test_slow_link_times_out(bench):
    result = trial(bench, mode="signed", rate_Bps=2000.0, link="slow", timeout_s=2.0)
    assert result.outcome.text == "timeout"
    assert math.isnan(result.phases.get("t_new_version") or math.nan)


def test_tls_trial(bench):
    assert trial(bench, mode="signed+encrypted", tls=True).outcome.text == "updated"


def test_fault_spec_parsing():
    assert FaultSpec.parse("corrupt@0.9") == FaultSpec("corrupt", 0.9)
    assert FaultSpec.parse("none").link_fault(100) is None
    with pytest.raises(Exception, match="unknown fault"):
        FaultSpec.parse("meteor")


def test_campaign_cli_writes_tidy_data_and_a_report(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text(
        "name: cli\nrepeats: 1\nfixed: {broker_backend: mosquitto, size: 16KiB}\n"
        "grid:\n  mode: [standard, signed]\n  fault: [none, corrupt]\n"
    )
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["campaign", str(spec), "-o", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    df, meta = load_run(run)
    assert len(df) == 4
    outcomes = dict(zip(zip(df["mode"], df["fault"], strict=True), df["outcome"], strict=True))
    assert outcomes[("signed", "none")] == "updated"
    assert outcomes[("signed", "corrupt")] == "rejected:VerificationFailed"
    assert outcomes[("standard", "corrupt")] == "bricked"
    assert "mosquitto" in str(meta)
    report = CliRunner().invoke(cli, ["report", str(run)])
    assert report.exit_code == 0, report.output
    assert any(line.endswith(".png") for line in report.stdout.splitlines())


def test_a_board_on_a_serial_port_is_watched_like_a_real_one(bench):
    """A trial with ``board=<port>``: the board (here a virtual one, reached only via its pty) is not managed."""
    from otalib.board.sim.build import DeviceBuild
    from otalib.board.virtual import VirtualBoard
    from otalib.keys import DeviceKeys

    broker = bench.broker("mosquitto", False)
    flash = bench.workdir / "real-board.bin"
    board = VirtualBoard(flash, broker.url, DeviceBuild(keys=DeviceKeys(bench.key.verify_key), version="4.3.5"))
    board.start()
    bench.reset = BoardReset.NONE  # a pty has no RTS line (tests/test_real_board_e2e.py resets through power)
    try:
        board.expect("subscribing", 15)
        with pytest.raises(Exception, match="refusing to publish otalab's demo image"):
            trial(bench, mode="signed", board=board.console_path, patch=6)
        bench.allow_demo_image = True  # the board here takes otalab's demo images
        try:
            result = trial(bench, mode="signed", board=board.console_path, patch=6)
        finally:
            bench.allow_demo_image = False
        assert result.outcome.text == "updated", result.notes
        assert "demo image" in result.notes
        assert board.status["slot"] == 1
        with pytest.raises(Exception, match="needs the patch"):
            trial(bench, mode="signed", board=board.console_path)
        with pytest.raises(Exception, match="virtual board"):
            trial(bench, mode="signed", board=board.console_path, patch=7, fault="cut")
        with pytest.raises(Exception, match="needs a power hook"):
            trial(bench, mode="signed", board=board.console_path, patch=7, fault="power-loss")
    finally:
        bench.reset = BoardReset.RTS
        board.stop()
