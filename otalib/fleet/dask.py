"""A fleet's shards as Dask tasks: a ``LocalCluster`` (``--workers N``) or an existing cluster.

Each shard is one task (:func:`~otalib.fleet.shard.run_shard` on a worker); it reports ``ready``
and watches for a stop through named :class:`distributed.Event` s, so the coordinator publishes
once every shard's boards have subscribed and can stop them all (Ctrl-C) and still gather
what they measured. Workers reach the broker by its URL.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from otalib.errors import LabError
from otalib.fleet.shard import ShardResult, ShardSpec, run_shard


class _EventControl:
    """Shard control through the scheduler's named events (runs on the worker)."""

    def __init__(self, run_id: str, index: int) -> None:
        from distributed import Event

        self._ready = Event(f"{run_id}-ready-{index}")
        self._stop = Event(f"{run_id}-stop")

    def ready(self) -> None:
        self._ready.set()

    def stop_requested(self) -> bool:
        return self._stop.is_set()


def shard_task(spec: ShardSpec, run_id: str) -> ShardResult:
    """The task a worker runs: one shard."""
    control = _EventControl(run_id, spec.index)
    try:
        return run_shard(spec, control)
    finally:
        control.ready()  # a shard that failed early must not hold the others


class DaskShards:
    """Runs shards on Dask: a new ``LocalCluster`` of ``workers`` processes, or ``scheduler``'s cluster."""

    def __init__(self, workers: int, scheduler: str | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise LabError("Dask is not installed: pip install 'dask[distributed]'") from None
        self.run_id = f"otalab-fleet-{uuid.uuid4().hex[:12]}"
        self._cluster: Any = None
        try:
            if scheduler is None:
                self._cluster = LocalCluster(
                    n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=":0"
                )
                self.client = Client(self._cluster)
            else:
                self.client = Client(scheduler, timeout=10)
        except OSError as exc:
            self.close()
            raise LabError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
        self.dashboard_link: str | None = self.client.dashboard_link
        #: tasks that can run at once (the workers' threads): a fleet has no more shards than this
        self.slots = max(1, sum(self.client.nthreads().values()))
        self._futures: list[Any] = []
        self._shards: list[ShardSpec] = []

    def start(self, shards: list[ShardSpec]) -> None:
        self._shards = shards
        self._futures = [self.client.submit(shard_task, shard, self.run_id, pure=False) for shard in shards]

    def wait_ready(self, timeout: float) -> bool:
        from distributed import Event

        deadline = time.monotonic() + timeout
        for shard in self._shards:
            if not Event(f"{self.run_id}-ready-{shard.index}", client=self.client).wait(
                max(0.1, deadline - time.monotonic())
            ):
                return False
        for future in self._futures:  # a shard that failed: its error, now
            if future.status == "error":
                future.result()
        return True

    def stop(self) -> None:
        from distributed import Event

        with contextlib.suppress(Exception):  # the cluster may be going away
            Event(f"{self.run_id}-stop", client=self.client).set()

    def gather(self, timeout: float) -> list[ShardResult]:
        from distributed import wait

        wait(self._futures, timeout=timeout)
        results = [f.result() for f in self._futures if f.status == "finished"]
        errors = [f for f in self._futures if f.status == "error"]
        if errors:
            errors[0].result()
        return sorted(results, key=lambda r: r.index)

    def close(self) -> None:
        self.stop()
        for future in self._futures:
            with contextlib.suppress(Exception):
                future.cancel()
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()
