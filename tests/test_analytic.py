"""The analytic check (otalib.lab.analytic): the no-resume formula against a direct simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from otalib.errors import LabError
from otalib.lab.analytic import compare_with_prediction, drop_rate, expected_completion_s, replay_completion_s


def simulate_no_resume(rate: float, tau: float, reconnect: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Completion times of ``n`` transfers needing ``tau`` s of connection, restarted from the start at each
    drop (Poisson, ``rate`` per second of connection), each drop costing ``reconnect`` s without drops."""
    times = np.empty(n)
    for i in range(n):
        elapsed = 0.0
        while True:
            to_drop = rng.exponential(1.0 / rate)
            if to_drop >= tau:
                elapsed += tau
                break
            elapsed += to_drop + reconnect
        times[i] = elapsed
    return times


@pytest.mark.parametrize(
    ("rate", "tau", "reconnect"), [(0.5, 1.5, 0.3), (1.0, 2.0, 0.5), (0.1, 4.0, 2.0), (3.0, 0.5, 0.0)]
)
def test_the_formula_is_the_mean_of_the_simulated_process(rate, tau, reconnect):
    times = simulate_no_resume(rate, tau, reconnect, 20_000, np.random.default_rng(11))
    standard_error = times.std(ddof=1) / math.sqrt(len(times))
    assert abs(times.mean() - expected_completion_s(rate, tau, reconnect)) < 4 * standard_error


def test_the_formula_at_its_limits():
    assert expected_completion_s(0.0, 2.5, 1.0) == 2.5
    assert expected_completion_s(1e-9, 2.5, 1.0) == pytest.approx(2.5, rel=1e-6)
    assert expected_completion_s(1.0, 0.0, 1.0) == 0.0
    with pytest.raises(LabError):
        expected_completion_s(-1.0, 1.0, 0.0)


def test_drop_rates_of_fault_strings():
    assert drop_rate("none") == 0.0 and drop_rate("drops:rate=0.25,seed=3") == 0.25
    assert drop_rate("cut@0.5") is None and drop_rate("outages:every=2,for=1") is None


def _campaign(rng, rates, tau, reconnect, n, process=simulate_no_resume):
    """A campaign frame (and its drop events) whose completion times come from ``process``."""
    rows, events = [], []
    for rate in [0.0, *rates]:
        for i in range(n):
            trial_id = f"{rate}-{i}"
            fault = "none" if rate == 0 else f"drops:rate={rate:g}"
            T = tau if rate == 0 else float(process(rate, tau, reconnect, 1, rng)[0])
            T += rng.normal(0, 0.01)  # the console's clock
            rows.append(
                {"trial_id": trial_id, "size": 65536, "mode": "signed", "fault": fault, "outcome": "updated"}
                | {"t_publish_start": 0.1, "t_last_byte": 0.1 + T}
            )
            if rate:
                events.append({"trial_id": trial_id, "kind": "drop", "t_s": 0.0, "offset": 0, "duration_s": reconnect})
    return pd.DataFrame(rows), pd.DataFrame(events)


def _resumable(rate, tau, reconnect, n, rng):
    """A transfer that resumes after a drop (not Sming's protocol): only the reconnects cost extra."""
    return tau + reconnect * rng.poisson(rate * tau, n)


def test_the_check_holds_for_the_no_resume_process_and_fails_for_a_resumable_one():
    rng = np.random.default_rng(5)
    trials, events = _campaign(rng, [0.5, 1.0], tau=1.5, reconnect=0.3, n=40)
    table = compare_with_prediction(trials, events)
    assert list(table["drop_rate"]) == [0.5, 1.0] and (table["n"] == 40).all() and (table["censored"] == 0).all()
    assert table["tau_s"].iloc[0] == pytest.approx(1.5, abs=0.01) and table["reconnect_s"].iloc[0] == 0.3
    assert (table["ratio_low"] < table["ratio"]).all() and (table["ratio"] < table["ratio_high"]).all()
    # a 95% interval: it holds for most campaigns of Sming's process, for hardly any of a resumable one
    held = [compare_with_prediction(*_campaign(rng, [0.5, 1.0], 1.5, 0.3, 40))["holds"] for _ in range(15)]
    assert np.mean(held) >= 0.8
    resumed = [
        compare_with_prediction(*_campaign(rng, [0.5, 1.0], 1.5, 0.3, 40, _resumable))["holds"] for _ in range(5)
    ]
    assert not np.any(resumed)


def test_the_check_needs_its_baseline():
    rng = np.random.default_rng(1)
    trials, events = _campaign(rng, [0.5], tau=1.0, reconnect=0.2, n=3)
    with pytest.raises(LabError, match="fault-free"):
        compare_with_prediction(trials[trials["fault"] != "none"], events)
    with pytest.raises(LabError, match="to measure D"):
        compare_with_prediction(trials, events.iloc[0:0])
    timed_out = trials.assign(outcome=np.where(trials["trial_id"] == "0.5-0", "timeout", trials["outcome"]))
    assert compare_with_prediction(timed_out, events)["censored"].tolist() == [1]


def test_a_replayed_realisation_follows_the_process():
    # fails at 0.5 s (+0.2), again 0.2 s into the retry (+0.2), then 1 s without a drop: 0.5+0.2+0.2+0.2+1
    assert replay_completion_s([0.5, 0.7, 5.0], 1.0, 0.2) == pytest.approx(2.1)
    assert replay_completion_s([0.5, 0.7, 5.0], 1.0, [0.3, 0.1, 9.0]) == pytest.approx(0.5 + 0.3 + 0.2 + 0.1 + 1.0)
    assert replay_completion_s([], 1.5, 0.2) == 1.5
    rng = np.random.default_rng(3)
    replays = [replay_completion_s(np.cumsum(rng.exponential(2.0, 40)), 1.5, 0.3) for _ in range(20_000)]
    standard_error = np.std(replays, ddof=1) / math.sqrt(len(replays))
    assert abs(np.mean(replays) - expected_completion_s(0.5, 1.5, 0.3)) < 4 * standard_error


def test_the_device_window_after_the_last_delivered_byte_is_added_once_not_exponentiated():
    assert expected_completion_s(0.0, 2.5, 1.0, 0.5) == 3.0
    assert expected_completion_s(1.0, 1.0, 0.5, 0.2) == pytest.approx(0.2 + 1.5 * math.expm1(1.0))
    # a device that works 0.3 s through its TCP window after its stack has the last byte: a drop in those
    # 0.3 s costs nothing, so tau is the time to t_delivered (the check holds) and not to t_last_byte
    rng = np.random.default_rng(9)
    window = 0.3
    trials, events = _campaign(rng, [0.5, 1.0], tau=1.5, reconnect=0.3, n=40)
    trials["t_delivered"] = trials["t_last_byte"]
    trials["t_last_byte"] += window
    table = compare_with_prediction(trials, events)
    assert table["holds"].all() and table["window_s"].to_numpy() == pytest.approx([window, window], abs=1e-9)
    without = compare_with_prediction(trials.drop(columns="t_delivered"), events)
    assert without["ratio_high"].iloc[-1] < 1.0  # tau to the last OTA byte: the exponential over-predicts
