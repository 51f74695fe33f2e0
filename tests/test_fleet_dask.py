"""Fleet shards as Dask tasks: a LocalCluster of 2 workers × 50 boards ends as the same fleet in one process."""

from __future__ import annotations

import pytest

from otalib.fleet import FleetSession, FleetSpec

pytest.importorskip("distributed")

SPEC = {
    "name": "dask",
    "seed": 7,
    "timeout_s": 30,
    "update": {"size": "16KiB", "mode": "signed", "patch": 2},
    "groups": [
        {"name": "ok", "count": 50},
        {"name": "bad", "count": 30, "link": "dsl", "fault": "corrupt@0.3"},
        {"name": "alien", "count": 20, "chip": "esp32", "app_id": "alien", "key": "other"},
    ],
}


def test_two_dask_workers_give_the_same_results_as_one_process(broker):
    spec = FleetSpec.from_dict(SPEC)
    local = FleetSession(spec, broker=broker.url).run()
    session = FleetSession(spec, broker=broker.url, workers=2)
    sharded = session.run()
    assert sharded.complete and sharded.meta["shards"] == 2
    assert sharded.meta["dashboard"] and sharded.meta["dashboard"].startswith("http")
    assert set(sharded.boards["shard"]) == {0, 1}
    columns = ["board", "group", "outcome", "error", "fault_events"]
    left = local.boards[columns].sort_values("board").reset_index(drop=True)
    right = sharded.boards[columns].sort_values("board").reset_index(drop=True)
    assert len(right) == 100
    assert left.equals(right)
    assert set(right.query("group == 'ok'")["outcome"]) == {"updated"}
    assert set(right.query("group != 'ok'")["outcome"]) == {"rejected"}
    assert (sharded.load.groupby("shard")["connected"].max() == 50).all()


def test_an_existing_cluster_by_its_scheduler_address(broker):
    from distributed import LocalCluster

    spec = FleetSpec.from_dict({"name": "remote", "update": {"size": "8KiB"}, "groups": [{"count": 6}]})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        notes: list[str] = []
        session = FleetSession(spec, broker=broker.url, scheduler=cluster.scheduler_address, on_status=notes.append)
        result = session.run()
        assert len(cluster.scheduler.workers) == 1  # the cluster outlives the fleet: not ours to close
    assert result.complete and (result.boards["outcome"] == "updated").all()
    assert result.meta["scheduler"] == cluster.scheduler_address
    assert any(n.startswith("Dask dashboard: http") for n in notes)


def test_a_stopped_dask_fleet_keeps_every_shards_partial_rows(broker):
    import threading

    spec = FleetSpec.from_dict(
        {"name": "stop", "timeout_s": 120, "update": {"size": "256KiB"}, "groups": [{"count": 8, "link": "slow"}]}
    )
    published = threading.Event()
    session = FleetSession(
        spec, broker=broker.url, workers=2, on_status=lambda t: t.startswith("published") and published.set()
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            session.run()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    assert published.wait(60)
    session.stop()
    runner.join(90)
    assert not runner.is_alive() and not errors
    result = session.result
    assert result is not None and result.meta["status"] == "incomplete"
    assert len(result.boards) == 8 and set(result.boards["shard"]) == {0, 1}
    assert result.boards["outcome"].isna().all() and (result.boards["bytes_received"] > 0).all()
