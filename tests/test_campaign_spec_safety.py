"""A run directory belongs to one spec; no run data is lost; write errors name the path (issue 8, items 12, 13).

The trials are the deterministic fake runner of ``lab_helpers`` (the campaign machinery is
under test, not a board). Write errors are made in ways that fail for root too (CI runs as
root, where ``chmod`` stops nothing): a file-size limit (``RLIMIT_FSIZE``: writes past it
fail with EFBIG), a directory where a file must go, a file where a directory must go.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from lab_helpers import fake_trial, small_spec
from process_helpers import ROOT, otalab_env

from otalib.cli import cli
from otalib.errors import LabError, OutputError
from otalib.lab import store
from otalib.lab.campaign import MAX_TRIALS, CampaignSpec, check_run_dir, run_campaign
from otalib.lab.report import write_report

EXAMPLE_RUN = ROOT / "data" / "runs" / "example"
EXAMPLE_SPEC = ROOT / "data" / "campaigns" / "example.yaml"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _spec_file(tmp_path: Path, spec: CampaignSpec, name: str) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(spec.to_dict()))
    return path


def _otalab(*args: str, cwd: Path, cpu_s: int | None = None, fsize: int | None = None):
    """``python -m otalib ARGS`` with optional CPU-time / file-size limits (both hold for root)."""

    def limits() -> None:
        if cpu_s is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "otalib", *args],
        cwd=cwd,
        env=otalab_env(),
        capture_output=True,
        text=True,
        preexec_fn=limits,
        timeout=300,
    )


# -- item 12: one spec per run directory ------------------------------------------------------------


def test_resume_with_a_changed_spec_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    run_campaign(small_spec(repeats=1), run, fake_trial, progress=False)
    before = _snapshot(run)
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["campaign_sha256"] == small_spec(repeats=1).sha256()
    changed = CampaignSpec.from_dict({**small_spec(repeats=1).to_dict(), "fixed": {"link": "wifi", "timeout_s": 9}})
    with pytest.raises(LabError, match=r"holds campaign 'synthetic' from another spec.*--new"):
        run_campaign(changed, run, fake_trial, progress=False)
    more = small_spec(repeats=2)  # more repeats is another spec too
    with pytest.raises(LabError, match="another spec"):
        run_campaign(more, run, fake_trial, progress=False)
    result = CliRunner().invoke(cli, ["campaign", str(_spec_file(tmp_path, changed, "c.json")), "-o", str(run)])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "another spec" in result.stderr and "Traceback" not in result.output
    assert _snapshot(run) == before
    # the same spec resumes (nothing left to do) and keeps the run
    again = run_campaign(small_spec(repeats=1), run, fake_trial, progress=False)
    assert len(again) == 8 and _snapshot(run)["trials.parquet"] == before["trials.parquet"]


def test_new_keeps_the_old_run_beside_the_new_one(tmp_path):
    run = tmp_path / "run"
    run_campaign(small_spec(repeats=1), run, fake_trial, progress=False)
    before = _snapshot(run)
    aside = check_run_dir(small_spec(repeats=2), run, resume=False)
    assert aside is not None and aside.parent == tmp_path and aside.name.startswith("run.old-")
    df = run_campaign(small_spec(repeats=2), run, fake_trial, progress=False, resume=False)
    assert len(df) == 16 and _snapshot(aside) == before
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["previous_run"] == str(aside) and len(meta["sessions"]) == 1


def test_new_refuses_when_the_old_run_cannot_be_kept(tmp_path):
    run = tmp_path / "run"
    run_campaign(small_spec(repeats=1), run, fake_trial, progress=False)
    aside = check_run_dir(small_spec(), run, resume=False)
    assert aside is not None
    aside.mkdir()
    (aside / "mine.txt").write_text("user data")
    before, theirs = _snapshot(run), _snapshot(aside)
    with pytest.raises(LabError, match="cannot keep the old run"):
        run_campaign(small_spec(), run, fake_trial, progress=False, resume=False)
    assert _snapshot(run) == before and _snapshot(aside) == theirs


def test_runs_without_a_stored_hash_resume_with_their_own_spec(tmp_path):
    run = tmp_path / "example"
    shutil.copytree(EXAMPLE_RUN, run)
    meta = json.loads((run / "metadata.json").read_text())
    meta.pop("campaign_sha256", None)  # a run made before the hash was stored
    (run / "metadata.json").write_text(json.dumps(meta))
    assert "campaign_sha256" not in store.read_metadata(run)
    assert check_run_dir(CampaignSpec.load(EXAMPLE_SPEC), run) is None
    other = CampaignSpec.from_dict({**CampaignSpec.load(EXAMPLE_SPEC).to_dict(), "repeats": 3})
    with pytest.raises(LabError, match="another spec"):
        check_run_dir(other, run)


def test_absurd_trial_counts_are_refused_at_once_with_the_number(tmp_path):
    spec = tmp_path / "huge.yaml"
    spec.write_text("name: huge\nrepeats: 1000000000\ngrid: {size: [1KiB]}\n")
    # a CPU-time limit (not a wall clock) bounds the old behaviour, which builds a billion trials
    done = _otalab("campaign", str(spec), "-o", "run", cwd=tmp_path, cpu_s=60)
    assert done.returncode == 1, done.stderr[-500:]
    assert done.stderr.strip() == (
        f"otalab: error: campaign spec {spec}: 1000000000 trials (1000000000 repeats x 1 grid points) "
        f"is more than {MAX_TRIALS}: split the campaign"
    )
    assert not (tmp_path / "run").exists()
    wide = {"name": "w", "grid": {"size": list(range(1, 101)), "latency_ms": list(range(100)), "patch": [1] * 11}}
    with pytest.raises(LabError, match=r"^campaign spec: 110000 trials \(1 repeats x 110000 grid points\)"):
        CampaignSpec.from_dict(wide)
    assert small_spec().count_trials() == len(small_spec().trials()) == 24


def test_a_spec_whose_trials_cannot_run_leaves_no_run_directory(tmp_path):
    # valid as data, but the trial refuses it: a real board needs the patch to publish
    spec = tmp_path / "real.yaml"
    spec.write_text(
        "name: real\nallow_demo_image: true\nfixed: {board: /dev/otalab-no-such-port, broker_backend: embedded}\n"
    )
    done = _otalab("campaign", str(spec), "-o", "runs/a/run", "--no-progress", cwd=tmp_path)
    assert done.returncode == 1 and "needs the patch" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()
    # a folder that existed stays (with what was in it), only the run's own file goes
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    done = _otalab("campaign", str(spec), "-o", "mine", "--no-progress", cwd=tmp_path)
    assert done.returncode == 1 and _snapshot(tmp_path / "mine") == {"notes.txt": b"keep"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: {size: [0]}\n")
    assert _otalab("campaign", str(bad), "-o", "run2", cwd=tmp_path).returncode == 1
    assert not (tmp_path / "run2").exists()


# -- item 13: write errors name the path ----------------------------------------------------------


def test_a_full_disk_while_consolidating_names_trials_parquet(tmp_path):
    run = tmp_path / "data" / "runs" / "x"
    shutil.copytree(EXAMPLE_RUN, run)
    (run / "trials").mkdir()
    (run / "trials.parquet").rename(run / "trials" / "all.parquet")  # trials not yet consolidated
    code = "import sys; from otalib.lab import store; store.consolidate(sys.argv[1])"
    limit = (run / "trials" / "all.parquet").stat().st_size // 2

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-c", code, "data/runs/x"],
        cwd=tmp_path,
        env=otalab_env(),
        capture_output=True,
        text=True,
        preexec_fn=limits,
        timeout=120,
    )
    assert done.returncode != 0
    assert (
        done.stderr.strip().splitlines()[-1] == "otalib.errors.OutputError: File too large: data/runs/x/trials.parquet"
    )
    assert not (run / "trials.parquet").exists() and not list(run.glob(".trials.parquet.*"))


def test_report_write_error_is_one_line_naming_the_file(tmp_path):
    shutil.copytree(EXAMPLE_RUN, tmp_path / "run")
    done = _otalab("report", "run", "-o", "out", cwd=tmp_path, fsize=2000)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "otalab: error: File too large: out/timeline.png\n"
    assert list((tmp_path / "out").iterdir()) == []  # no half-written chart


def test_metadata_and_trial_write_errors_name_the_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metadata.json").mkdir()  # a directory where the file must go
    with pytest.raises(OutputError, match=r"^Is a directory: .*run/metadata\.json$"):
        store.write_metadata(run, {"x": 1})
    other = tmp_path / "other"
    other.mkdir()
    (other / "trials").write_text("not a folder")  # a file where the folder must go
    with pytest.raises(OutputError, match=r"^File exists: .*other/trials$"):
        store.write_trial(other, fake_trial(small_spec().trials()[0]).to_row())
    with pytest.raises(OutputError, match=r"^Is a directory: .*out/summary\.csv$"):
        (tmp_path / "out" / "summary.csv").mkdir(parents=True)
        write_report(EXAMPLE_RUN, tmp_path / "out")
