"""A fleet's shards as processes of this machine (one per core): the in-process fleet on every core.

Each shard is a ``spawn`` child running :func:`~otalib.fleet.shard.run_shard`; it dies with its
parent (``PR_SET_PDEATHSIG``, as :mod:`otalib.procs` children do), ignores Ctrl-C (the
coordinator asks it to stop, and it still returns what it measured) and talks to the coordinator
through two events (ready, stop) and a queue for its :class:`~otalib.fleet.shard.ShardResult`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import time
from typing import Any

from otalib.errors import LabError
from otalib.fleet.shard import ShardResult, ShardSpec, run_shard
from otalib.procs import _die_with

#: Boards from which an in-process fleet runs as one shard process per core (fewer: one shard, one thread).
PROCESS_MIN_BOARDS = 200


def default_processes(boards: int) -> int:
    """Shard processes for ``boards`` boards by default (1: the shard runs on a thread of this process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores) if boards >= PROCESS_MIN_BOARDS else 1


class _ProcessControl:
    def __init__(self, ready: Any, stop: Any) -> None:
        self._ready, self._stop = ready, stop

    def ready(self) -> None:
        self._ready.set()

    def stop_requested(self) -> bool:
        return self._stop.is_set()


def _shard_main(spec: ShardSpec, ready: Any, stop: Any, results: Any, parent: int) -> None:
    """The child: one shard; its result (or its error) on ``results``."""
    setup = _die_with(parent, signal.SIGTERM)
    if setup is not None:
        setup()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops us (and gathers what we measured)
    try:
        outcome: Any = run_shard(spec, _ProcessControl(ready, stop))
    except BaseException as exc:
        try:
            outcome = pickle.loads(pickle.dumps(exc))
        except Exception:
            outcome = LabError(f"fleet shard {spec.index}: {type(exc).__name__}: {exc}")
    finally:
        ready.set()  # a shard that failed early must not hold the others
    results.put((spec.index, outcome))


class ProcessShards:
    """Runs each shard in its own ``spawn`` child process of this machine."""

    dashboard_link: str | None = None

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._results: Any = self._context.Queue()
        self._ready: list[Any] = []
        self._processes: list[Any] = []
        self._gathered: dict[int, ShardResult] = {}
        self._errors: list[BaseException] = []

    def start(self, shards: list[ShardSpec]) -> None:
        for shard in shards:
            ready = self._context.Event()
            process = self._context.Process(
                target=_shard_main,
                args=(shard, ready, self._stop, self._results, os.getpid()),
                name=f"otalab-fleet-shard-{shard.index}",
                daemon=True,
            )
            process.start()
            self._ready.append(ready)
            self._processes.append(process)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for ready in self._ready:
            if not ready.wait(max(0.0, deadline - time.monotonic())):
                return False
        self._collect(0.0)  # a shard that failed: its error, now
        self._raise()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _collect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self._gathered) + len(self._errors) < len(self._processes):
            try:
                index, outcome = self._results.get(timeout=max(0.0, deadline - time.monotonic()) or 0.001)
            except queue.Empty:
                if time.monotonic() >= deadline or not any(p.is_alive() for p in self._processes):
                    return
                continue
            if isinstance(outcome, BaseException):
                self._errors.append(outcome)
            else:
                self._gathered[index] = outcome

    def gather(self, timeout: float) -> list[ShardResult]:
        self._collect(timeout)
        self._raise()
        lost = len(self._processes) - len(self._gathered)
        if lost and not self._stop.is_set():
            raise LabError(f"{lost} fleet shard process(es) ended without a result")
        return [self._gathered[i] for i in sorted(self._gathered)]

    def _raise(self) -> None:
        if self._errors:
            raise self._errors[0]

    def close(self) -> None:
        self.stop()
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
        with contextlib.suppress(Exception):
            self._results.close()
