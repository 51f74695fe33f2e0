"""``drops:rate=R`` counts R per second of CONNECTION: no drop falls while the board reconnects."""

from __future__ import annotations

import itertools
import math

import pytest

from otalib.lab import store
from otalib.lab.analytic import trial_drops
from otalib.lab.campaign import CampaignSpec, run_campaign
from otalib.lab.schema import TrialConfig
from otalib.net.faults import connected_seconds

pytestmark = pytest.mark.timeout(120)


#: The virtual board's least wait before it reconnects (paho's reconnect_delay_set(0.2, 2)).
RECONNECT_DELAY_S = 0.2


def assert_drops_kept_the_connection_clock(drops: list[dict], fault: str, trial_id: str, horizon_s: float) -> None:
    """Drop k fell at the second of connection the trial drew for it plus the board's k absences before it
    (each at least the reconnect delay): the clock stood still while the board was away, and ran no faster."""
    drawn = trial_drops(fault, trial_id, horizon_s)
    assert 0 < len(drops) <= len(drawn)
    for k, (drop, connected_s) in enumerate(zip(drops, drawn, strict=False)):
        if k:
            away_s = drop["t_s"] - connected_s  # the trial's seconds the drop clock did not count
            assert away_s > k * RECONNECT_DELAY_S * 0.75, f"drop {k} at {drop['t_s']:.3f} s, drawn at {connected_s:.3f}"


def cuts(faults_fired: str) -> int:
    """How many connections the drops cut (a drop while the board was away cuts none)."""
    return sum(1 for fired in faults_fired.split(";") if fired.startswith("cut@"))


def test_connected_seconds_counts_only_open_connections_after_the_start():
    stats = {
        "per_connection": [
            {"opened_t": 0.0, "closed_t": 12.0},  # open before the start: counts from 10
            {"opened_t": 13.0, "closed_t": 14.5},
            {"opened_t": 20.0, "closed_t": None},  # still open: counts to now
        ]
    }
    assert connected_seconds(stats, 10.0, now=22.0) == pytest.approx(2.0 + 1.5 + 2.0)
    assert connected_seconds(stats, 10.0, now=13.5) == pytest.approx(2.0 + 0.5)
    assert connected_seconds({"per_connection": []}, 0.0, now=5.0) == 0.0


def test_drops_wait_for_the_board_to_reconnect(bench):
    # a drop every half second of connection on a 3 s transfer: many drops, each after a reconnect
    config = TrialConfig(
        campaign="clock",
        size=24 * 1024,
        mode="signed",
        rate_Bps=8000.0,
        link="slow",
        timeout_s=8.0,
        broker_backend="mosquitto",
        fault="drops:rate=2,seed=1",
    )
    result = bench.run(config)
    drops = [e for e in result.events if e["kind"] == "drop"]
    assert len(drops) >= 3 and result.connections >= len(drops) == cuts(result.faults_fired)
    assert_drops_kept_the_connection_clock(drops, config.fault, config.trial_id, config.timeout_s)
    for before, after in itertools.pairwise(drops):
        assert before["duration_s"] > RECONNECT_DELAY_S  # until the package flowed again on a new connection
        assert after["t_s"] - before["t_s"] > RECONNECT_DELAY_S * 0.75  # not one drop while the board was away
    assert all(math.isfinite(d["duration_s"]) for d in drops[:-1])


def test_a_drop_on_an_unlimited_link_costs_a_slow_device_its_transfer(bench):
    # the esp8266 model reads at flash speed, so an unlimited link (the proxy) has written the whole package
    # toward the board when the drop at ~0.9 s of connection (seed 5) comes: the board keeps only what its
    # TCP stack held, restarts the message from its first byte, and the completion includes the re-transfer
    config = TrialConfig(
        campaign="clock",
        size=64 * 1024,
        mode="signed",
        timing="esp8266",
        timeout_s=30.0,
        broker_backend="mosquitto",
        fault="drops:rate=0.5,seed=5",
    )
    result = bench.run(config)
    drop = result.events[0]
    assert drop["kind"] == "drop" and result.outcome.text == "updated"
    # the offset: the package bytes the board held at the drop (not the proxy's, already past the end)
    assert 0 < drop["offset"] < result.bytes
    assert result.board_updates.split(";")[0].startswith("abandoned") and "applied@6" in result.board_updates
    phases = result.phases
    retry = drop["t_s"] + drop["duration_s"]  # the package flowed again on the next connection
    assert phases["t_first_byte"] < phases["t_publish_start"] + drop["t_s"]
    # the whole package went through the board after the retry (its stack acknowledged the last byte then)
    assert phases["t_delivered"] - phases["t_publish_start"] > retry
    assert phases["t_last_byte"] >= phases["t_delivered"]


def test_each_trial_takes_the_time_the_process_gives_its_own_drops(bench, tmp_path):
    """The trial is the no-resume process on its own drawn drops: each fell at its drawn second of connection
    (the board's absences not counted) on a live connection, each one mid-package cost an abandoned attempt,
    and the time to the last byte counts the whole re-transfer after the last of them."""
    spec = CampaignSpec.from_dict(
        {
            "name": "replay",
            "repeats": 2,
            "seed": 1,  # draws drops at 1.58 and 1.92 s (of connection) into one 1.7 s transfer, more into the other
            "fixed": {"size": "16KiB", "mode": "signed", "broker_backend": "mosquitto", "timeout_s": 60},
            "grid": {"fault": ["none", "drops:rate=0.6"], "rate_Bps": [10_000.0]},
        }
    )
    df = run_campaign(spec, tmp_path / "run", bench.run, progress=False, parallel=2, stop=bench.stop)
    events = store.read_fault_events(tmp_path / "run")
    df["T"] = df["t_last_byte"] - df["t_publish_start"]
    dropped = df[df["fault"] != "none"]
    assert (dropped["outcome"] == "updated").all() and dropped["fault_events"].sum() >= 4
    for _, trial in dropped.iterrows():
        mine = events[(events["trial_id"] == trial["trial_id"]) & (events["kind"] == "drop")]
        assert len(mine) == cuts(trial["faults_fired"])
        assert_drops_kept_the_connection_clock(mine.to_dict("records"), trial["fault"], trial["trial_id"], 60.0)
        # the drops while the package was on its way: each cost an attempt the board abandoned
        mid = mine[(mine["offset"] > 0) & (mine["offset"] < trial["bytes"])]
        assert trial["board_updates"].split(";").count("abandoned@6") == len(mid)
        # no resume: after the last of them the whole package crossed the 10 kB/s link again (a lower bound
        # from the link's rate, which load cannot break), and the trial's time counts that re-transfer
        if len(mid):
            retry = float((mid["t_s"] + mid["duration_s"]).iloc[-1])
            assert trial["T"] > retry + 0.9 * trial["bytes"] / 10_000.0
