"""Children die with otalab; temp folders of dead owners are removed (issue 8, item 10).

The kills are real ``kill -9`` of real ``otalab`` processes; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from broker_helpers import Probe
from process_helpers import WAIT, gone, otalab_process

from otalib import procs
from otalib.broker import find_mosquitto, start_broker

BACKENDS = ["mosquitto", "embedded"]


def _backend(backend: str) -> str:
    if backend == "mosquitto" and find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    return backend


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _wait_for(predicate, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_of_otalab_broker_takes_its_broker_along(backend, tmp_path):
    with otalab_process("broker", "--backend", _backend(backend), "--tls") as cli:
        cli.wait_line("ready")
        workdir = Path(cli.field("dir") or "")
        (child,) = cli.children()
        assert workdir.is_dir() and f"-{cli.proc.pid}-" in workdir.name
        os.kill(cli.proc.pid, signal.SIGKILL)
        cli.proc.wait(WAIT)
        assert gone(child.pid), f"{backend} broker {child.pid} outlived otalab broker (kill -9)"
    assert workdir.is_dir()  # nobody could clean up after kill -9 ...
    with start_broker(_backend(backend)) as later:  # ... so the next start does
        assert later.running()
        assert not workdir.exists(), f"stale {workdir} of dead pid {cli.proc.pid} was kept"
        assert later.workdir.is_dir() and f"-{os.getpid()}-" in later.workdir.name
    assert not later.workdir.exists()


def test_kill_9_of_otalab_campaign_takes_mosquitto_along(tmp_path):
    _backend("mosquitto")
    spec = tmp_path / "slow.yaml"
    # one slow trial (64 KiB at 2 kB/s): the campaign is surely still running when it is killed
    spec.write_text(
        "name: slow\nfixed: {broker_backend: mosquitto, rate_Bps: 2000, timeout_s: 120}\ngrid: {size: [64KiB]}\n"
    )
    run = tmp_path / "run"
    with otalab_process("campaign", str(spec), "-o", str(run), "--no-progress", cwd=tmp_path) as cli:
        _wait_for(lambda: (run / "metadata.json").is_file(), what="the run's metadata.json")
        brokers = [p for p in cli.children() if p.name().startswith("mosquitto")]
        assert len(brokers) == 1, cli.children()
        os.kill(cli.proc.pid, signal.SIGKILL)
        cli.proc.wait(WAIT)
        assert gone(brokers[0].pid), f"mosquitto {brokers[0].pid} outlived otalab campaign (kill -9)"
    stale = [p for p in procs.stale_dirs() if f"-{cli.proc.pid}-" in p.name]
    assert [p.name.split("-")[1] for p in stale] == ["bench"]
    procs.remove_stale_dirs()
    assert not any(p.exists() for p in stale)


def test_a_broker_started_by_a_short_lived_thread_outlives_the_thread():
    # PR_SET_PDEATHSIG fires when the creating *thread* exits: otalib creates children from one long-lived thread
    made: list = []
    worker = threading.Thread(target=lambda: made.append(start_broker(_backend("mosquitto"))))
    worker.start()
    worker.join(WAIT)
    (broker,) = made
    try:
        task = Path(f"/proc/self/task/{worker.native_id}")
        _wait_for(lambda: not task.exists(), what="the worker thread's exit")
        probe = Probe(broker)  # a full round trip after the thread is gone
        try:
            probe.connect_ok()
            probe.subscribe("a/x")
            probe.publish("a/x", b"still here")
            assert probe.get().payload == b"still here"
        finally:
            probe.close()
        assert broker.running() and psutil.Process(broker.pid).status() != psutil.STATUS_ZOMBIE
    finally:
        broker.stop()


def test_stale_dirs_are_only_ours_and_dead(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f"otalab-mosquitto-{dead}-abc123"
    board = tmp_path / f"otalab-board-{dead}-k2j_x8"  # otalab board's flash folder (TemporaryDirectory)
    live = tmp_path / f"otalab-mosquitto-{alive}-abc123"
    other_name = tmp_path / f"mosquitto-{dead}-abc123"
    target = tmp_path / "precious"
    link = tmp_path / f"otalab-bench-{dead}-link"
    for folder in (stale, board, live, other_name, target):
        folder.mkdir()
        (folder / "file").write_text("data")
    link.symlink_to(target, target_is_directory=True)
    expected_kept = [live, other_name, target, link]
    if os.geteuid() == 0:
        foreign = tmp_path / f"otalab-bench-{dead}-foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
        expected_kept.append(foreign)
    assert sorted(procs.stale_dirs(tmp_path)) == [board, stale]
    made = procs.owned_tempdir("bench", tmp_path)
    assert not stale.exists() and not board.exists()
    assert all(p.exists() for p in expected_kept) and (target / "file").read_text() == "data"
    assert made.name.startswith(f"otalab-bench-{alive}-") and made.is_dir()
