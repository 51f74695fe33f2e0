"""Campaign specs (grid × repeats) and the campaign runner, driven by a FAKE trial runner.

What is under test is the campaign machinery (expansion, incremental writes,
interrupt and resume, metadata), so a deterministic synthetic runner stands in
for the board; see ``lab_helpers.fake_trial``.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from lab_helpers import fake_trial, small_spec

from otalib.cli import cli
from otalib.errors import LabError
from otalib.lab import store
from otalib.lab.campaign import CampaignSpec, parse_size, run_campaign
from otalib.lab.schema import TRIAL_COLUMNS

SPEC_YAML = """\
name: synthetic
repeats: 3
fixed: {link: wifi, timeout_s: 5}
grid:
  size: [16KiB, 64KiB]
  mode: [standard, signed]
  fault: [none, corrupt]
links:
  wifi: {rate_Bps: 100000, latency_ms: 20}
"""


def test_grid_expansion_count_order_and_ids():
    spec = small_spec()
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2 * 3
    assert [t.repeat for t in trials] == [0] * 8 + [1] * 8 + [2] * 8  # repeat by repeat
    first = trials[:8]
    assert [(t.size, t.mode, t.fault) for t in first[:3]] == [
        (16384, "standard", "none"),
        (16384, "standard", "corrupt"),
        (16384, "signed", "none"),
    ]
    assert all(t.rate_Bps == 100_000 and t.latency_ms == 20 and t.link == "wifi" for t in trials)
    assert all(t.timeout_s == 5 and t.campaign == "synthetic" for t in trials)
    ids = [t.trial_id for t in trials]
    assert len(set(ids)) == len(ids)
    assert ids == [t.trial_id for t in small_spec().trials()]  # deterministic


def test_yaml_json_and_dict_forms_give_the_same_trials(tmp_path):
    (tmp_path / "c.yaml").write_text(SPEC_YAML)
    from_yaml = CampaignSpec.load(tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text(json.dumps(from_yaml.to_dict()))
    from_json = CampaignSpec.load(tmp_path / "c.json")
    expected = [t.trial_id for t in small_spec().trials()]
    assert [t.trial_id for t in from_yaml.trials()] == expected
    assert [t.trial_id for t in from_json.trials()] == expected


def test_link_profiles_and_explicit_link_parameters():
    spec = CampaignSpec.from_dict({"name": "l", "grid": {"rate_Bps": [1000, None], "latency_ms": [0, 50]}})
    links = [(t.link, t.rate_Bps, t.latency_ms) for t in spec.trials()]
    assert links[0] == ("1000Bps+0ms", 1000.0, 0.0)
    assert links[-1][0] == "unlimited+50ms" and math.isnan(links[-1][1])
    spec = CampaignSpec.from_dict({"name": "l", "grid": {"link": ["unlimited"]}})
    assert math.isnan(spec.trials()[0].rate_Bps)
    spec = CampaignSpec.from_dict(
        {"name": "l", "grid": {"link": ["slow"]}, "links": {"slow": {"rate_Bps": 500}}, "fixed": {"latency_ms": 9}}
    )
    assert (spec.trials()[0].rate_Bps, spec.trials()[0].latency_ms) == (500.0, 9.0)
    from otalib.net.link import PROFILES  # the link proxy's named profiles are known without 'links'

    spec = CampaignSpec.from_dict({"name": "l", "grid": {"link": ["lan", "wifi"]}})
    lan, wifi = spec.trials()
    assert math.isnan(lan.rate_Bps) and lan.latency_ms == 0
    assert (wifi.rate_Bps, wifi.latency_ms) == (
        PROFILES["wifi"].rate_Bps,
        pytest.approx(PROFILES["wifi"].latency_s * 1000),
    )


def test_parse_size():
    assert parse_size("64KiB") == 65536 and parse_size("1M") == 1 << 20 and parse_size(100) == 100
    assert parse_size("1.5k") == 1536 and parse_size(2048.0) == 2048
    for bad in ("lots", "1.0001k", True, None):
        with pytest.raises(LabError):
            parse_size(bad)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([1, 2], "expected a mapping"),
        ({"grid": {"size": [1]}}, "missing 'name'"),
        ({"name": "x", "grid": {"size": [1]}, "repeat": 2}, "unknown key(s) repeat"),
        ({"name": "", "grid": {}}, "'name'"),
        ({"name": "x", "grid": {"size": [1]}, "repeats": 0}, "'repeats'"),
        ({"name": "x", "grid": {"colour": ["red"]}}, "unknown parameter 'colour'"),
        ({"name": "x", "grid": {"size": 1024}}, "grid.size must be a non-empty list"),
        ({"name": "x", "grid": {"size": []}}, "grid.size must be a non-empty list"),
        ({"name": "x", "grid": {"mode": ["zip"]}}, "mode='zip'"),
        ({"name": "x", "grid": {"size": ["huge"]}}, "size 'huge'"),
        ({"name": "x", "grid": {"size": [1]}, "fixed": {"size": 2}}, "both in grid and fixed"),
        ({"name": "x", "grid": {"link": ["moon"]}}, "unknown link profile 'moon'"),
        ({"name": "x", "grid": {"size": [1024, "1KiB"]}}, "same trial twice"),
        ({"name": "x", "grid": {"size": [1]}, "links": {"w": {"speed": 1}}}, "links.w"),
    ],
)
def test_bad_spec_is_one_line_lab_error(data, needle):
    with pytest.raises(LabError) as info:
        CampaignSpec.from_dict(data)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_bad_spec_files(tmp_path):
    with pytest.raises(LabError, match="not found"):
        CampaignSpec.load(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("name: x\ngrid: {size: [1\n")
    with pytest.raises(LabError, match=r"not valid YAML/JSON.*line"):
        CampaignSpec.load(tmp_path / "broken.yaml")
    (tmp_path / "bad.yaml").write_text("name: x\ngrid: {mode: [zip]}\n")
    with pytest.raises(LabError, match=r"bad\.yaml: trial parameter mode='zip'"):
        CampaignSpec.load(tmp_path / "bad.yaml")


class Runner:
    """Wraps the fake trial: records calls, checks incremental writes, can be interrupted."""

    def __init__(self, run_dir, stop_at: int | None = None, exc: BaseException | None = None):
        self.run_dir, self.stop_at, self.exc = run_dir, stop_at, exc or KeyboardInterrupt()
        self.calls: list[str] = []

    def __call__(self, config):
        # every trial finished before this one is already on disk
        assert len(store.trial_files(self.run_dir)) == len(store.done_trial_ids(self.run_dir))
        assert {c for c in self.calls} <= store.done_trial_ids(self.run_dir)
        self.calls.append(config.trial_id)
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise self.exc
        return fake_trial(config)


def test_run_campaign_writes_each_trial_and_metadata(tmp_path):
    spec, run = small_spec(), tmp_path / "run"
    runner = Runner(run)
    df = run_campaign(spec, run, runner, progress=False, metadata={"broker_backend": "mosquitto"})
    ids = [t.trial_id for t in spec.trials()]
    assert runner.calls == ids
    assert sorted(df["trial_id"]) == sorted(ids) and list(df.columns) == list(TRIAL_COLUMNS)
    assert len(store.trial_files(run)) == len(ids) and (run / "trials.parquet").is_file()
    assert set(df.loc[df["fault"] == "corrupt", "outcome"]) == {"bricked", "rejected:VerificationFailed"}
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["n_trials"] == meta["n_done"] == len(ids)
    assert meta["campaign"]["name"] == "synthetic" and meta["campaign"]["grid"]["size"] == ["16KiB", "64KiB"]
    assert meta["broker_backend"] == "mosquitto" and meta["dependencies"]["pandas"]
    assert {"otalib", "python", "git", "machine", "collected_at"} <= set(meta)
    assert [s["status"] for s in meta["sessions"]] == ["complete"] and meta["sessions"][0]["trials_run"] == len(ids)
    again, meta2 = store.load_run(run)
    assert sorted(again["trial_id"]) == sorted(ids) and meta2 == meta


@pytest.mark.parametrize("k", [1, 7, 24])
def test_interrupt_then_resume_runs_each_trial_exactly_once(tmp_path, k):
    spec, run = small_spec(), tmp_path / "run"
    ids = [t.trial_id for t in spec.trials()]
    first = Runner(run, stop_at=k)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(spec, run, first, progress=False)
    assert store.done_trial_ids(run) == set(ids[: k - 1])
    assert not (run / "trials.parquet").exists()
    partial, meta = store.load_run(run)
    assert len(partial) == k - 1 and meta["status"] == "interrupted" and meta["n_done"] == k - 1

    second = Runner(run)
    df = run_campaign(spec, run, second, progress=False)
    assert second.calls == ids[k - 1 :]
    assert len(df) == len(ids) and df["trial_id"].is_unique and set(df["trial_id"]) == set(ids)
    meta = json.loads((run / "metadata.json").read_text())
    assert [s["status"] for s in meta["sessions"]] == ["interrupted", "complete"]
    assert [s["trials_run"] for s in meta["sessions"]] == [k - 1, len(ids) - k + 1]

    third = Runner(run)  # all done: nothing to run
    assert len(run_campaign(spec, run, third, progress=False)) == len(ids) and third.calls == []


def test_no_resume_starts_over(tmp_path):
    spec, run = small_spec(repeats=1), tmp_path / "run"
    run_campaign(spec, run, Runner(run), progress=False)
    again = Runner(run)
    df = run_campaign(spec, run, again, progress=False, resume=False)
    assert len(again.calls) == len(df) == 8
    assert len(json.loads((run / "metadata.json").read_text())["sessions"]) == 1


def test_failing_runner_stops_campaign_and_keeps_finished_trials(tmp_path):
    spec, run = small_spec(), tmp_path / "run"
    with pytest.raises(LabError, match="board vanished"):
        run_campaign(spec, run, Runner(run, stop_at=3, exc=LabError("board vanished")), progress=False)
    assert len(store.done_trial_ids(run)) == 2
    assert json.loads((run / "metadata.json").read_text())["status"] == "failed: LabError: board vanished"


def test_runner_contract_is_checked(tmp_path):
    spec = small_spec()
    with pytest.raises(LabError, match="returned dict"):
        run_campaign(spec, tmp_path / "a", lambda c: {"outcome": "updated"}, progress=False)
    other = spec.trials()[-1]
    with pytest.raises(LabError, match="another trial"):
        run_campaign(spec, tmp_path / "b", lambda c: fake_trial(other), progress=False)


def test_another_campaign_in_the_same_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    run_campaign(small_spec(repeats=1), run, fake_trial, progress=False)
    with pytest.raises(LabError, match="holds campaign 'synthetic'"):
        run_campaign(small_spec(name="other"), run, fake_trial, progress=False)


def test_cli_campaign_bad_spec_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ngrid: {size: [0]}\n")
    result = CliRunner().invoke(cli, ["campaign", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "run2")])
    assert result.exit_code != 0 and "size=0" in result.stderr and len(result.stderr.strip().splitlines()) == 1
