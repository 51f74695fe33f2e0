"""Campaigns with trials at once (``parallel: K``): the same run as a serial one, honest evidence.

The machinery (order, resume, interrupt, a failing trial) is driven by the FAKE runner of
``lab_helpers``; the trials themselves run on virtual boards through one real Mosquitto.
"""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest
from click.testing import CliRunner
from lab_helpers import fake_trial, small_spec

from otalib.broker.log_watch import BrokerEventKind
from otalib.cli import cli
from otalib.errors import LabError
from otalib.firmware.image import check_app_id
from otalib.lab import store
from otalib.lab.campaign import CampaignSpec, max_parallel, run_campaign
from otalib.lab.schema import CONFIG_COLUMNS
from otalib.lab.trial import TrialStopped, lane_app_id, lane_client_id

pytestmark = pytest.mark.timeout(180)


# --- the spec and the command line -----------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", True, None])
def test_a_bad_parallel_is_one_line(k):
    with pytest.raises(LabError, match=r"'parallel' must be an integer >= 1") as caught:
        small_spec(parallel=k)
    assert "\n" not in str(caught.value)


def test_a_parallel_beyond_the_machine_is_refused_naming_the_limit():
    limit = max_parallel()
    assert small_spec(parallel=limit).parallel == limit
    with pytest.raises(LabError, match=rf"{limit + 1} is more than this machine's limit of {limit} trials at once"):
        small_spec(parallel=limit + 1)


def test_parallel_needs_virtual_boards():
    with pytest.raises(LabError, match=r"parallel 2 needs virtual boards: the real board /dev/ttyUSB0"):
        small_spec(parallel=2, fixed={"board": "/dev/ttyUSB0", "patch": 7}, allow_demo_image=True)


@pytest.mark.parametrize(("k", "needle"), [("0", "must be an integer >= 1"), ("100000", "this machine's limit")])
def test_cli_bad_parallel_is_one_line_and_leaves_nothing(tmp_path, k, needle):
    (tmp_path / "c.yaml").write_text("name: x\nfixed: {size: 1024}\n")
    result = CliRunner().invoke(
        cli, ["campaign", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "run"), "--parallel", k]
    )
    assert result.exit_code != 0 and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_parallel_is_how_a_spec_runs_not_what_it_is():
    serial, parallel = small_spec(), small_spec(parallel=3)
    assert parallel.to_dict()["parallel"] == 3 and "parallel" not in serial.to_dict()
    assert parallel.sha256() == serial.sha256()  # a run resumes with another parallel
    assert parallel.trials() == serial.trials()


def test_lane_app_ids_are_other_ids_of_the_same_length():
    ids = [lane_app_id("test", lane) for lane in range(max_parallel())]
    assert ids[0] == "test" and len(set(ids)) == len(ids) and {len(i) for i in ids} == {4}
    for app_id in ids:
        check_app_id(app_id)
    assert (
        lane_app_id("t", 64) != "t"
        and lane_client_id("sming", 0) == "sming"
        and lane_client_id("sming", 3) == "sming_p3"
    )
    with pytest.raises(LabError, match=r"app id 't' is too short for 66 trials at once"):
        lane_app_id("t", 65)


# --- the campaign machinery (fake trials) ----------------------------------------------------


class Gate:
    """A fake runner whose first ``k`` trials wait until ``k`` run at once (a barrier: fails if they never do)."""

    def __init__(self, k: int) -> None:
        self.barrier = threading.Barrier(k, timeout=30)
        self.lock = threading.Lock()
        self.calls: list[str] = []

    def __call__(self, config):
        with self.lock:
            self.calls.append(config.trial_id)
            first = len(self.calls) <= self.barrier.parties
        if first:
            self.barrier.wait()  # BrokenBarrierError unless k trials are running together
        return fake_trial(config)


def test_fake_trials_run_at_once_and_the_run_holds_the_serial_rows(tmp_path):
    spec = small_spec()
    serial = run_campaign(spec, tmp_path / "serial", fake_trial, progress=False)
    gate = Gate(3)
    parallel = run_campaign(spec, tmp_path / "parallel", gate, progress=False, parallel=3)
    ids = [t.trial_id for t in spec.trials()]
    assert gate.calls[:3] == ids[:3] and sorted(gate.calls) == sorted(ids)  # started in the spec's order
    pd.testing.assert_frame_equal(serial, parallel)  # the same rows, in the same order
    meta = json.loads((tmp_path / "parallel" / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["sessions"][0]["parallel"] == 3


class Interrupting:
    """A fake runner that raises ``exc`` in its ``at``-th call; the others wait for ``stop`` if given."""

    def __init__(self, at: int, exc: BaseException, stop: threading.Event | None = None) -> None:
        self.at, self.exc, self.stop = at, exc, stop
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.stopped: list[str] = []

    def __call__(self, config):
        with self.lock:
            self.calls.append(config.trial_id)
            number = len(self.calls)
        if number == self.at:
            raise self.exc
        if self.stop is not None and number > self.at - 2 and self.stop.wait(30):  # beside the failing trial
            self.stopped.append(config.trial_id)
            raise TrialStopped("stopped")
        return fake_trial(config)


@pytest.mark.parametrize("at", [1, 5, 20])
def test_an_interrupted_parallel_run_is_consistent_and_resumes_each_trial_once(tmp_path, at):
    spec, run = small_spec(), tmp_path / "run"
    ids = [t.trial_id for t in spec.trials()]
    first = Interrupting(at, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_campaign(spec, run, first, progress=False, parallel=4)
    done = store.done_trial_ids(run)
    assert done <= set(first.calls) - {first.calls[at - 1]} and not (run / "trials.parquet").exists()
    partial, meta = store.load_run(run)
    assert meta["status"] == "interrupted" and meta["n_done"] == len(partial) == len(done)
    assert meta["sessions"][0]["trials_run"] == len(done)

    second = Interrupting(0, KeyboardInterrupt())
    df = run_campaign(spec, run, second, progress=False, parallel=2)
    assert sorted(second.calls) == sorted(set(ids) - done)  # each missing trial once, no finished one again
    assert df["trial_id"].is_unique and set(df["trial_id"]) == set(ids)
    assert [s["status"] for s in json.loads((run / "metadata.json").read_text())["sessions"]] == [
        "interrupted",
        "complete",
    ]


def test_a_failing_trial_stops_the_running_ones_through_the_stop_event(tmp_path):
    spec, run = small_spec(), tmp_path / "run"
    stop = threading.Event()
    runner = Interrupting(3, LabError("board vanished"), stop)
    with pytest.raises(LabError, match="board vanished"):
        run_campaign(spec, run, runner, progress=False, parallel=3, stop=stop)
    assert runner.stopped and not stop.is_set()  # the trials beside it were told to stop, stopped; cleared
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["status"] == "failed: LabError: board vanished"
    assert not set(runner.stopped) & store.done_trial_ids(run)  # a stopped trial is not kept


# --- real trials: virtual boards on one Mosquitto ---------------------------------------------


def _spec(**extra) -> CampaignSpec:
    return CampaignSpec.from_dict(
        {
            "name": "par",
            "repeats": 1,
            "fixed": {"broker_backend": "mosquitto", "timeout_s": 60},
            "grid": {"size": ["16KiB", "24KiB"], "mode": ["standard", "signed"], "fault": ["none", "corrupt@0.5"]},
            **extra,
        }
    )


#: What a trial found, as opposed to when and how long (which differ between any two runs).
FINDINGS = [*CONFIG_COLUMNS, "outcome", "error", "bytes", "faults_fired", "connections", "board_updates", "flags"]


def _running_at_once(df: pd.DataFrame) -> int:
    """Most trials whose [started_at, started_at + duration_s] intervals hold one instant."""
    starts = df["started_at"]
    ends = starts + pd.to_timedelta(df["duration_s"], unit="s")
    return max(int(((starts <= t) & (ends > t)).sum()) for t in starts)


def test_boards_at_once_give_the_serial_findings_and_no_flags(bench, tmp_path):
    spec = _spec()
    serial = run_campaign(spec, tmp_path / "serial", bench.run, progress=False, stop=bench.stop)
    watch = bench.broker_log("mosquitto", False)
    mark = watch.mark
    parallel = run_campaign(spec, tmp_path / "parallel", bench.run, progress=False, parallel=3, stop=bench.stop)
    by_id = [df.sort_values("trial_id").reset_index(drop=True)[FINDINGS] for df in (serial, parallel)]
    pd.testing.assert_frame_equal(*by_id)
    assert set(parallel["outcome"]) == {"updated", "bricked", "rejected:VerificationFailed"}
    assert (parallel["flags"] == "").all() and parallel["evidence"].str.contains("broker").all()
    assert _running_at_once(serial) == 1 and _running_at_once(parallel) >= 2  # the boards really overlapped
    subscribed = [e for e in watch.events(mark) if e.kind is BrokerEventKind.SUBSCRIBED]
    topics = {(e.client, e.topic) for e in subscribed}  # each board on its own client id and topic
    assert {("sming", "a/test/u/4.3"), ("sming_p1", "a/tesu/u/4.3")} <= topics


def test_a_failing_trial_stops_a_running_real_one(bench, tmp_path):
    spec = CampaignSpec.from_dict(
        {
            "name": "stop",
            "repeats": 1,
            "fixed": {"broker_backend": "mosquitto", "timeout_s": 120, "mode": "signed", "rate_Bps": 4000.0},
            "grid": {"size": ["256KiB", "8KiB"]},  # the first takes a minute over this link
        }
    )
    slow, fast = spec.trials()
    outcomes: dict[str, BaseException | str] = {}
    watch = bench.broker_log("mosquitto", False)
    mark = watch.mark

    def sending(event) -> bool:  # the broker streaming the slow trial's package to its board
        return event.kind is BrokerEventKind.SENT and (event.size or 0) > 200_000

    def runner(config):
        if config.trial_id == fast.trial_id:
            assert watch.wait_for(sending, 60, after=mark) is not None
            raise LabError("board vanished")
        try:
            result = bench.run(config)
        except TrialStopped as exc:
            outcomes[config.trial_id] = exc
            raise
        outcomes[config.trial_id] = result.outcome.text
        return result

    with pytest.raises(LabError, match="board vanished"):
        run_campaign(spec, tmp_path / "run", runner, progress=False, parallel=2, stop=bench.stop)
    assert isinstance(outcomes[slow.trial_id], TrialStopped)
    assert store.done_trial_ids(tmp_path / "run") == set()
    assert not bench.stop.is_set() and bench.run(fast).outcome.text == "updated"  # the bench runs trials again
