"""The virtual fleet: many boards in one process, a real Mosquitto, one retained update."""

from __future__ import annotations

import heapq
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from otalib.board.sim.device import Device
from otalib.board.virtual import prepare_flash
from otalib.errors import LabError
from otalib.fleet import FleetSession, FleetSpec, load_fleet
from otalib.fleet.loop import FleetLoop, Timer
from otalib.fleet.results import time_to_fraction
from otalib.vocabulary import Decision
from tests.process_helpers import otalab_env, run_otalab


def single_board(settings, package: bytes, patch: int, tmp_path: Path) -> str:
    """What one virtual board (file flash, the device model alone) does with ``package``: its outcome text."""
    flash = prepare_flash(tmp_path / f"{settings.group}.bin", settings.build, initial_image=settings.initial_image)
    device = Device(flash, settings.build)
    device.boot()
    device.on_message_start(len(package))
    for i in range(0, len(package), 1460):
        device.on_message_data(package[i : i + 1460])
    result = device.on_message_end()
    try:
        if result.outcome is Decision.REJECTED:
            return f"rejected:{result.error}"
        if result.outcome is not Decision.APPLIED:
            return result.outcome.value
        boot = device.restart()
        if not boot.booted:
            return "bricked"
        return "updated" if device.patch == patch else "restarted"
    finally:
        flash.close()


def outcome_texts(boards: pd.DataFrame) -> pd.Series:
    return boards["outcome"] + boards["error"].map(lambda e: f":{e}" if isinstance(e, str) else "")


def fleet_session(spec: dict, **kwargs) -> FleetSession:
    return FleetSession(FleetSpec.from_dict(spec), **kwargs)


def run(spec: dict, **kwargs) -> tuple[FleetSession, object]:
    session = fleet_session(spec, **kwargs)
    return session, session.run()


def small_fleet(name: str, count: int, timeout_s: float = 30) -> dict:
    """A spec of ``count`` plain boards taking an 8 KiB update."""
    return {"name": name, "timeout_s": timeout_s, "update": {"size": "8KiB"}, "groups": [{"count": count}]}


def spec_file(folder: Path, name: str, text: str) -> Path:
    """``folder/NAME.yaml`` holding ``text`` (a spec for ``otalab fleet``)."""
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_two_groups_end_as_single_boards_do(broker, tmp_path):
    spec = {
        "name": "two",
        "timeout_s": 60,
        "update": {"size": "24KiB", "mode": "signed", "patch": 2},
        "groups": [
            {"name": "a", "count": 20, "chip": "esp8266", "version": "4.3.1"},
            {"name": "b", "count": 10, "chip": "esp32", "app_id": "t32", "version": "4.3.1", "link": "dsl"},
            {"name": "c", "count": 4, "chip": "esp32", "version": "4.3.0"},  # a's topic: a ROM of its own in a's file
        ],
    }
    session, result = run(spec, broker=broker.url)
    boards = result.boards
    assert result.complete and len(boards) == 34
    assert set(boards["outcome"]) == {"updated"}
    assert boards["t_updated"].notna().all() and (boards["t_updated"] > 0).all()
    assert set(result.meta["packages"]) == {"a/test/u/4.3", "a/t32/u/4.3"}  # one package per topic
    settings = session._settings()
    for group in ("a", "b"):
        package = session.packages[session.spec.groups[group == "b"].topic].update.package
        assert single_board(settings[group], package, 2, tmp_path) == "updated"
    # the timeline: every board subscribed before the publish, then received and restarted
    events = result.timeline.groupby("event")["board"].nunique()
    assert events["subscribed"] == 34 and events["restart"] == 34
    assert (result.timeline.query("event == 'subscribed'")["t_s"] < 0).all()
    assert result.time_to(0.5) <= result.time_to(0.99) < math.inf


def test_rejections_per_mode_match_single_boards(broker, tmp_path):
    spec = {
        "name": "modes",
        "timeout_s": 60,
        "update": {"size": "16KiB", "mode": "md5", "patch": 2},
        "groups": [
            {"name": "md5", "count": 3},
            {"name": "signed", "count": 3, "mode": "signed"},  # an unsigned package to a signing build
            {"name": "corrupt", "count": 3, "fault": "corrupt@0.5"},
            {"name": "otherkey", "count": 2, "mode": "encrypted", "key": "other"},
        ],
    }
    session, result = run(spec, broker=broker.url)
    texts = outcome_texts(result.boards).groupby(result.boards["group"]).agg(set)
    assert texts["md5"] == {"updated"}
    assert texts["corrupt"] == {"rejected:VerificationFailed"}
    assert all(next(iter(t)).startswith("rejected") for t in (texts["signed"], texts["otherkey"]))
    settings = session._settings()
    package = next(iter(session.packages.values())).update.package
    for group in ("md5", "signed", "otherkey"):
        assert texts[group] == {single_board(settings[group], package, 2, tmp_path)}, group
    assert (result.boards.query("group == 'corrupt'")["fault_events"] == 1).all()


def test_drops_leave_some_boards_not_updated(broker):
    spec = {
        "name": "drops",
        "seed": 3,
        "timeout_s": 6,
        "update": {"size": "16KiB", "mode": "signed", "patch": 2},
        "groups": [
            {"name": "calm", "count": 5, "link": "slow"},
            {"name": "stormy", "count": 10, "link": "slow", "fault": "drops:rate=2"},
        ],
    }
    _, result = run(spec, broker=broker.url)
    boards = result.boards.set_index("board")
    stormy = boards[boards["group"] == "stormy"]
    assert (boards[boards["group"] == "calm"]["outcome"] == "updated").all()
    assert (stormy["outcome"] == "timeout").any()  # some never got a whole transfer through
    assert (stormy["connects"] > 1).any() and stormy["fault_events"].sum() > 0
    drops = result.fault_events.query("group == 'stormy' and kind == 'drop'")
    assert len(drops) == stormy["fault_events"].sum()
    assert math.isnan(time_to_fraction(stormy["t_updated"], 1.0))


def test_bad_specs_are_one_line_naming_the_problem(tmp_path):
    cases = {
        "chip": ("{count: 2, chip: esp9999}", "unknown chip 'esp9999'"),
        "link": ("{count: 2, link: carrier-pigeon}", "unknown link 'carrier-pigeon'"),
        "fault": ("{count: 2, fault: 'meteor@0.5'}", "unknown fault 'meteor@0.5'"),
        "timing": ("{count: 2, timing: abacus}", "unknown timing 'abacus'"),
    }
    for name, (group, message) in cases.items():
        spec = spec_file(tmp_path, name, f"name: bad\ngroups:\n  - {group}\n")
        out = tmp_path / f"out-{name}"
        done = run_otalab("fleet", str(spec), "-o", str(out), cwd=tmp_path)
        assert done.returncode != 0, name
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr
        assert not out.exists()


def test_more_boards_than_the_machine_holds_is_refused_with_the_estimate(tmp_path):
    import resource

    def few_files() -> None:  # this child may open 4,096 files, whatever the machine allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))

    spec = spec_file(tmp_path, "huge", "name: huge\ngroups:\n  - {count: 20000}\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "otalib", "fleet", str(spec), "-o", str(out)],
        cwd=tmp_path,
        env=otalab_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=few_files,
    )
    assert done.returncode != 0
    assert "too many boards" in done.stderr and "RLIMIT_NOFILE" in done.stderr and "4096" in done.stderr
    assert "MiB of memory" in done.stderr and "(20064 for the broker)" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_a_fleet_larger_than_the_memory_is_refused(monkeypatch):
    from otalib.fleet import capacity

    monkeypatch.setattr(capacity, "available_memory", lambda: 512 * 2**20)
    need = capacity.estimate(5000, 64 * 1024)
    with pytest.raises(LabError, match=r"too many boards for this machine: 5000 boards need about \d+ MiB.*512 MiB"):
        capacity.check_capacity(need)
    capacity.check_capacity(capacity.estimate(10, 64 * 1024))  # a small one fits


def test_a_killed_fleet_stops_everything_and_keeps_partial_results(tmp_path):
    spec = spec_file(
        tmp_path,
        "slow",
        "name: slow\ntimeout_s: 120\nupdate: {size: 256KiB, mode: signed, patch: 2}\n"
        "groups:\n  - {count: 6, link: slow}\n  - {name: quick, count: 4, chip: esp32, app_id: q}\n",
    )
    out = tmp_path / "out"

    def low_soft_limit() -> None:  # otalab starts with a soft open-file limit below its hard one
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.Popen(
        [sys.executable, "-m", "otalib", "fleet", str(spec), "-o", str(out)],
        cwd=tmp_path,
        env=otalab_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_soft_limit,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait for the event: the update is out, the slow boards are receiving
            seen.append(line)
            if line.startswith("published"):
                break
        assert any(line.startswith("published") for line in seen), seen
        children = psutil.Process(proc.pid).children(recursive=True)
        brokers = [c for c in children if "mosquitto" in c.name()]
        assert brokers
        soft, hard = brokers[0].rlimit(psutil.RLIMIT_NOFILE)  # raised to the hard limit for the broker
        assert soft == hard > 256
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "partial results" in err and "Traceback" not in err
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    result = load_fleet(out)
    assert result.meta["status"] == "incomplete"
    assert len(result.boards) == 10
    slow = result.boards[result.boards["group"] == "g1"]
    assert slow["outcome"].isna().all()  # stopped mid-transfer: no outcome, not a made-up timeout
    assert (slow["bytes_received"] > 0).all()


def test_an_unknown_board_for_the_pty_is_refused():
    with pytest.raises(LabError, match="no board 'nope'"):
        fleet_session({"name": "x", "groups": [{"count": 1}]}, pty_board="nope")


def test_boards_the_broker_refuses_name_the_limit():
    from otalib.broker.mosquitto import MosquittoBroker
    from otalib.errors import BrokerError

    notes: list[str] = []
    spec = small_fleet("full", 12, timeout_s=20)
    with MosquittoBroker(max_connections=5, log_types=("error", "warning")) as small:
        session = fleet_session(spec, broker=small.url, on_status=notes.append)
        with pytest.raises(BrokerError):  # the full broker refuses the publisher too
            session.run()
    boards = session.result.boards
    never = int(boards["t_connected"].isna().sum())
    assert 0 < never < 12 and session.result.meta["status"] == "incomplete"
    assert any(f"{never} boards never connected" in n and "max_connections" in n for n in notes), notes


def test_a_timed_group_takes_the_device_time_of_its_chip(broker):
    spec = {
        "name": "timed",
        "timeout_s": 60,
        "update": {"size": "48KiB", "mode": "signed", "patch": 2},
        "groups": [{"name": "slowchip", "count": 6, "timing": "esp8266"}, {"name": "instant", "count": 3}],
    }
    _, result = run(spec, broker=broker.url)
    boards = result.boards.set_index("board")
    assert (boards["outcome"] == "updated").all()
    timed, instant = boards[boards["group"] == "slowchip"], boards[boards["group"] == "instant"]
    busy = timed[["erase_s", "write_s", "verify_s", "switch_s"]].sum(axis=1)
    assert (busy > 0.05).all() and timed[["reboot_s", "reconnect_s"]].notna().all().all()
    # the device's time was taken in real time: the decision comes no sooner than the work it did
    assert (timed["t_decided"] - timed["t_first_byte"] >= 0.9 * busy).all()
    assert (timed["t_updated"] - timed["t_decided"] >= timed["reboot_s"]).all()
    assert instant[["erase_s", "write_s", "verify_s"]].isna().all().all()


def test_one_boards_console_on_a_pty(broker):
    import os
    import select
    import threading

    spec = small_fleet("pty", 3)
    paths: list[str] = []
    ready = threading.Event()

    def status(text: str) -> None:
        if text.startswith("console of g1-0001: "):
            paths.append(text.split(": ", 1)[1])
            ready.set()

    session = fleet_session(spec, broker=broker.url, pty_board="g1-0001", on_status=status)
    runner = threading.Thread(target=session.run)
    runner.start()
    assert ready.wait(30), "no pty announced"
    fd = os.open(paths[0], os.O_RDONLY | os.O_NOCTTY)
    seen = b""
    try:
        while b"Switching" not in seen and runner.is_alive():  # what a monitor reads: the update applied
            if select.select([fd], [], [], 1.0)[0]:
                seen += os.read(fd, 65536)
    finally:
        os.close(fd)
        runner.join(60)
    assert b"Switching" in seen
    assert session.result is not None and set(session.result.boards["outcome"]) == {"updated"}


def test_console_logs_on_request(broker, tmp_path):
    out = tmp_path / "fleet"
    session = fleet_session(small_fleet("logs", 3), broker=broker.url, console_logs=True, keep_consoles=("g1-0002",))
    result = session.run(out)
    logs = sorted(p.name for p in (out / "consoles").iterdir())
    assert logs == ["g1-0000.log", "g1-0001.log", "g1-0002.log"]
    for log in (out / "consoles").iterdir():
        text = log.read_bytes().decode()
        assert "Switching" in text and text.count("Currently running rom") == 2  # the boot, then the new slot
    assert result.consoles["g1-0002"].endswith((out / "consoles" / "g1-0002.log").read_bytes().decode()[-200:])
    assert load_fleet(out).meta["status"] == "complete"


def test_the_publish_works_when_the_fleet_holds_more_than_1024_files(broker):
    import os

    from otalib.fleet.shard import raise_nofile_limit

    raise_nofile_limit()
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # as a fleet of a thousand boards' sockets
    try:
        assert max(held) > 1024
        _, result = run(small_fleet("fds", 2), broker=broker.url)
    finally:
        for fd in held:
            os.close(fd)
    assert set(result.boards["outcome"]) == {"updated"}


def test_the_loop_runs_timers_by_due_time_then_in_the_order_they_were_set():
    loop = FleetLoop()
    ran: list[str] = []
    for name, delay in (("c", 0.02), ("a", 0.0), ("b", 0.0), ("d", 0.02), ("cancelled", 0.01)):
        timer = loop.call_later(delay, lambda n=name: ran.append(n))
    timer.cancel()
    assert loop.run(lambda: len(ran) >= 4, time.monotonic() + 5)
    assert ran == ["a", "b", "c", "d"]
    loop.close()
    due = [Timer(1.0, 2, print), Timer(1.0, 1, print), Timer(0.5, 3, print), Timer(2.0, 0, print)]
    heapq.heapify(due)
    assert [(t.when, t.seq) for t in (heapq.heappop(due) for _ in range(4))] == [(0.5, 3), (1.0, 1), (1.0, 2), (2.0, 0)]


def test_cli_processes_option_runs_that_many_shard_processes(tmp_path):
    spec = spec_file(
        tmp_path, "small", "name: small\nupdate: {size: 8KiB, mode: signed, patch: 2}\ngroups:\n  - {count: 4}\n"
    )
    bad = run_otalab("fleet", str(spec), "-o", str(tmp_path / "bad"), "--processes", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--processes" in bad.stderr and not (tmp_path / "bad").exists()
    out = tmp_path / "two"
    done = run_otalab("fleet", str(spec), "-o", str(out), "--processes", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    boards = pd.read_parquet(out / "boards.parquet")
    assert (boards["outcome"] == "updated").all() and boards["shard"].nunique() == 2


def test_a_huge_scale_is_refused_before_any_board_is_made(tmp_path):
    from otalib.errors import LabError
    from otalib.fleet import FleetSpec

    spec = spec_file(tmp_path, "small", "name: small\ngroups:\n  - {count: 25}\n")
    with pytest.raises(LabError, match="25000000000 boards: at most 100000"):
        FleetSpec.load(spec).scaled(1e9)
    assert sum(g.count for g in FleetSpec.load(spec).scaled(0.2).groups) == 5
