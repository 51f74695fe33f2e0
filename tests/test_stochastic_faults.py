"""Faults at rates (drops, outages, power, bitflips): the parser, seeded schedules, and real trials.

Network tests use a Mosquitto of the module's own on 127.0.0.1 and the link proxy.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from broker_helpers import Probe

from otalib.errors import LabError, UsageError
from otalib.lab import store
from otalib.lab.campaign import CampaignSpec, run_campaign
from otalib.lab.schema import TrialConfig, TrialResult, validate_frame
from otalib.lab.trial import FaultSpec
from otalib.net.faults import RateFault, RateKind, trial_rng
from otalib.net.link import LinkProxy

pytestmark = pytest.mark.timeout(180)


# --- the parser -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "params", "seed"),
    [
        ("drops:rate=0.5", RateKind.DROPS, {"rate": 0.5}, 0),
        ("outages:every=10,for=2.5", RateKind.OUTAGES, {"every": 10.0, "for": 2.5}, 0),
        ("power:p=0", RateKind.POWER, {"p": 0.0}, 0),
        ("power:p=1,seed=7", RateKind.POWER, {"p": 1.0}, 7),
        ("bitflips:ber=1e-5", RateKind.BITFLIPS, {"ber": 1e-5}, 0),
    ],
)
def test_good_rate_faults_parse(text, kind, params, seed):
    fault = RateFault.parse(text)
    assert (fault.kind, fault.params, fault.seed) == (kind, params, seed)
    spec = FaultSpec.parse(text)  # the trial's one parser hands rate faults on
    assert spec.kind == kind.value and spec.rate == fault
    assert TrialConfig(fault=text).fault == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("drops:rate=-1", "bad rate"),
        ("drops:rate=0", "bad rate"),
        ("drops:rate=nan", "bad rate"),
        ("power:p=2", "bad p"),
        ("bitflips:ber=x", "bad ber"),
        ("outages:every=5", "needs for"),
        ("drops:speed=1", "unknown parameter 'speed'"),
        ("drops:rate", "expected NAME=VALUE"),
        ("drops:rate=1,rate=2", "rate given twice"),
        ("power:p=0.5,seed=-3", "bad seed"),
        ("meteor:rate=1", "unknown fault"),
    ],
)
def test_bad_rate_faults_are_one_line_errors(text, message):
    with pytest.raises(LabError, match=message) as caught:
        FaultSpec.parse(text)
    assert "\n" not in str(caught.value)
    if not text.startswith("meteor"):  # a rate fault's trial config fails before a campaign runs
        with pytest.raises(LabError, match=message):
            TrialConfig(fault=text)


def test_rate_fault_parser_raises_usage_error():
    with pytest.raises(UsageError, match="unknown rate fault"):
        RateFault.parse("meteor:x=1")


# --- seeded schedules (no network) ------------------------------------------------------------


@pytest.mark.parametrize("text", ["drops:rate=0.5", "outages:every=2,for=1", "power:p=0.5", "bitflips:ber=1e-4"])
def test_same_seed_same_schedule_other_seed_or_trial_other_schedule(text):
    def plan(seed: int, trial_id: str):
        fault = RateFault.parse(f"{text},seed={seed}")
        return fault.draw(trial_rng(fault.seed, trial_id), 200_000, 60.0)

    plans = [plan(1, f"trial{i}") for i in range(20)]
    assert plans == [plan(1, f"trial{i}") for i in range(20)]
    assert plans != [plan(2, f"trial{i}") for i in range(20)]
    assert len(set(map(repr, plans))) > 1  # trials of one campaign draw different realisations


def test_drops_are_a_poisson_process():
    fault = RateFault.parse("drops:rate=2")
    counts = [len(fault.draw(trial_rng(3, str(i)), 1, 50.0).drops_s) for i in range(200)]
    # 200 trials x 50 s x 2/s: mean 100 per trial; the mean of 200 counts has sd sqrt(100/200)
    assert abs(np.mean(counts) - 100) < 4 * math.sqrt(100 / 200)
    assert abs(np.var(counts) - 100) < 30  # Poisson: variance = mean


def test_power_p1_always_fires_p0_never_at_a_uniform_byte():
    sure, never = RateFault.parse("power:p=1"), RateFault.parse("power:p=0")
    offsets = [sure.draw(trial_rng(0, str(i)), 1000, 1.0).power_at for i in range(400)]
    assert all(o is not None and 0 <= o < 1000 for o in offsets)
    assert 400 < np.mean(offsets) < 600
    assert all(never.draw(trial_rng(0, str(i)), 1000, 1.0).power_at is None for i in range(400))


def test_bitflip_positions_have_the_rate_and_no_repeats():
    fault = RateFault.parse("bitflips:ber=1e-3")
    bits = fault.draw(trial_rng(5, "x"), 1_000_000, 1.0).flipped_bits
    expected = 8_000_000 * 1e-3
    assert abs(len(bits) - expected) < 5 * math.sqrt(expected)
    assert list(bits) == sorted(set(bits)) and bits[-1] < 8_000_000


# --- through the proxy and in trials (Mosquitto on loopback) ---------------------------------


def test_bitflips_through_the_proxy_flip_the_drawn_bits(broker):
    payload = os.urandom(512 * 1024)
    fault = RateFault.parse("bitflips:ber=2e-4,seed=11")
    plan = fault.draw(trial_rng(fault.seed, "proxy"), len(payload), 1.0)
    expected = len(payload) * 8 * 2e-4  # 839 flips
    assert abs(len(plan.flipped_bits) - expected) < 5 * math.sqrt(expected)
    with LinkProxy(broker.host, broker.port) as proxy:
        receiver = Probe(broker, port=proxy.port).connect_ok()
        sender = Probe(broker).connect_ok()
        try:
            receiver.subscribe("flips/t")
            for link_fault in plan.link_faults():
                proxy.set_fault(link_fault, live=True)
            sender.publish("flips/t", payload, retain=False)
            message = receiver.get(timeout=60)
        finally:
            receiver.close()
            sender.close()
    assert message is not None and len(message.payload) == len(payload)
    diff = np.bitwise_xor(np.frombuffer(payload, np.uint8), np.frombuffer(message.payload, np.uint8))
    flipped = np.flatnonzero(np.unpackbits(diff))
    assert flipped.tolist() == list(plan.flipped_bits)


def _config(**params):
    return TrialConfig(campaign="rates", size=params.pop("size", 24 * 1024), broker_backend="mosquitto", **params)


def test_power_p1_cuts_power_mid_transfer_and_p0_does_not(bench):
    struck = bench.run(_config(mode="signed", fault="power:p=1"))
    assert struck.fault_events == 1 and [e["kind"] for e in struck.events] == ["power"]
    assert "power-loss" in struck.faults_fired.split(";")
    assert struck.outcome.text == "updated"  # the retained message came again after the reboot
    assert struck.board_updates.split(";") == ["abandoned@6", "applied@6"]
    spared = bench.run(_config(mode="signed", fault="power:p=0"))
    assert spared.fault_events == 0 and spared.events == [] and spared.faults_fired == ""
    assert spared.outcome.text == "updated" and spared.board_updates == "applied@6"


def test_drops_on_a_slow_transfer_disconnect_and_the_trial_ends(bench, tmp_path):
    # seed 4 draws a drop 1 s into this 3 s transfer, the next after 14 s: the retained message
    # comes again after the drop and the second transfer completes
    spec = CampaignSpec.from_dict(
        {
            "name": "rates",
            "repeats": 1,
            "fixed": {
                "broker_backend": "mosquitto",
                "size": 24 * 1024,
                "mode": "signed",
                "rate_Bps": 8000.0,
                "link": "slow",
                "timeout_s": 40.0,
                "fault": "drops:rate=0.25,seed=4",
            },
        }
    )
    (config,) = spec.trials()
    rate = FaultSpec.parse(config.fault).rate
    drops = rate.draw(trial_rng(rate.seed, config.trial_id), 1, 40.0).drops_s
    assert drops[0] < 1.5 and drops[1] > 14.0  # the schedule the test was written for
    df = run_campaign(spec, tmp_path / "run", bench.run, progress=False)
    row = validate_frame(df).iloc[0]
    assert row["outcome"] == "updated"
    assert row["fault_events"] >= 1 and row["connections"] >= 2
    events = store.read_fault_events(tmp_path / "run")
    assert len(events) == row["fault_events"]
    assert set(events["trial_id"]) == {config.trial_id} and events["kind"].iloc[0] == "drop"
    assert events["t_s"].iloc[0] == pytest.approx(drops[0], abs=0.5)  # fired when due (on the trial's tick)
    assert (tmp_path / "run" / store.EVENTS).is_file()


def test_outages_on_a_slow_transfer_stall_it_and_the_update_completes(bench):
    # seed 1 draws outages at 0.31 s (0.88 s long), 2.26 s (0.70 s), 5.67 s (0.75 s): shorter than the
    # keepalive, so they stall the 3 s transfer without a disconnect
    config = _config(
        mode="signed", rate_Bps=8000.0, link="slow", timeout_s=40.0, fault="outages:every=1.5,for=0.5,seed=1"
    )
    rate = FaultSpec.parse(config.fault).rate
    outages = rate.draw(trial_rng(rate.seed, config.trial_id), 1, 40.0).outages_s
    assert outages[0][0] < 0.5 and 0.8 < outages[0][1] < 1.0  # the schedule the test was written for
    result = bench.run(config)
    assert result.outcome.text == "updated"
    assert result.fault_events >= 2 and {e["kind"] for e in result.events} == {"outage"}
    first = result.events[0]
    assert first["t_s"] == pytest.approx(outages[0][0], abs=0.5) and first["duration_s"] == outages[0][1]
    assert "abandoned" not in result.board_updates  # a stall, not a disconnect: one transfer


def test_old_runs_without_fault_events_load_with_zero():
    row = TrialResult(TrialConfig(), outcome="updated", fault_events=3).to_row()
    assert validate_frame(pd.DataFrame([row]))["fault_events"].tolist() == [3]
    del row["fault_events"]
    assert validate_frame(pd.DataFrame([row]))["fault_events"].tolist() == [0]


# --- otalab link --at-rate ---------------------------------------------------------------------


def _otalab(*args: str, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "otalib", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def test_cli_link_drops_at_a_rate_disconnect_a_client(broker):
    proc = _otalab("link", "--upstream", f"127.0.0.1:{broker.port}", "--at-rate", "drops:rate=2,seed=3")
    try:
        first = proc.stdout.readline()
        port = int(first.split()[1].rsplit(":", 1)[1])
        client = Probe(broker, port=port).connect_ok()
        try:
            lines = [proc.stdout.readline() for _ in range(2)]  # the profile, the events drawn
            assert "at rate: drops:rate=2,seed=3" in lines[1]
            client.disconnected.clear()
            drop = proc.stdout.readline()
            assert drop.startswith("link: drop at ")
            assert client.disconnected.wait(10)  # the drop cut the client's connection
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
    assert "cut@" in out  # the stop line lists the cut


@pytest.mark.parametrize(
    ("fault", "message"),
    [("power:p=1", "needs a payload"), ("drops:rate=-1", "bad rate"), ("meteor:x=1", "unknown rate fault")],
)
def test_cli_link_bad_at_rate_is_one_line(fault, message):
    proc = _otalab("link", "--upstream", "127.0.0.1:1", "--at-rate", fault)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err and out == ""


def _plans(seed):
    spec = CampaignSpec.from_dict(
        {"name": "s", "repeats": 3, "seed": seed, "grid": {"fault": ["drops:rate=1", "power:p=0.5,seed=9", "cut@0.5"]}}
    )
    plans = []
    for config in spec.trials():
        rate = FaultSpec.parse(config.fault).rate
        plans.append(None if rate is None else rate.draw(trial_rng(rate.seed, config.trial_id), 1000, 20.0))
    return [c.fault for c in spec.trials()], plans


def test_the_spec_seed_reaches_rate_faults_and_reproduces_their_draws():
    faults, plans = _plans(7)
    assert faults[:3] == ["drops:rate=1,seed=7", "power:p=0.5,seed=9", "cut@0.5"]  # a fault's own seed wins
    assert _plans(7) == (faults, plans)
    _, other_plans = _plans(8)
    assert other_plans[0::3] != plans[0::3] and other_plans[1::3] == plans[1::3]
    assert len({repr(p) for p in plans[0::3]}) == 3  # each repeat draws its own realisation


@pytest.mark.parametrize("seed", [-1, "x", 1.5, True])
def test_a_bad_spec_seed_is_one_line(seed):
    with pytest.raises(LabError, match="'seed' must be an integer >= 0"):
        CampaignSpec.from_dict({"name": "s", "seed": seed, "grid": {}})
