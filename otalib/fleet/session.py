"""Run a fleet: :class:`FleetSession` (notebooks) and what ``otalab fleet`` calls.

The session builds one package per topic (a demo image of the update's patch, in the
update's mode, signed with the spec's key or a fresh one), splits the boards into
shards, starts the managed Mosquitto (configured for fleets) unless the spec names a
broker, runs the shards (in this process, or as Dask tasks: :mod:`otalib.fleet.dask`),
publishes each package once, retained at QoS 2, when every board has subscribed, and
gathers the shards' rows into :class:`FleetResult` frames. Stopped early (Ctrl-C, a
kill), it keeps what the shards have and marks the result incomplete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otalib.board.sim.build import Chip, DeviceBuild
from otalib.errors import LabError
from otalib.firmware.demo import make_demo_image
from otalib.fleet.board import BoardSettings
from otalib.fleet.capacity import Estimate, check_capacity, estimate
from otalib.fleet.processes import ProcessShards, default_processes
from otalib.fleet.results import FleetResult, assemble
from otalib.fleet.shard import ShardResult, ShardSpec, raise_nofile_limit, run_shard, subscribe_timeout
from otalib.fleet.spec import FleetSpec, GroupSpec
from otalib.formats.ota import Rom, build_ota, timestamp_now
from otalib.formats.package import pack
from otalib.keys import DeviceKeys, LabKey, load_key
from otalib.update import Update, make_update

#: Seconds the coordinator waits beyond the shards' own limits.
MARGIN_S = 30.0


@dataclass(frozen=True)
class Package:
    """The update published on one topic."""

    topic: str
    update: Update = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.update.package)


class _ThreadControl:
    """Shard control within this process."""

    def __init__(self, on_status: Callable[[str], None]) -> None:
        self.on_status = on_status
        self.ready_event = threading.Event()
        self.stop_event = threading.Event()
        self.done_event = threading.Event()

    def ready(self) -> None:
        self.ready_event.set()

    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    def console_attached(self, board: str, path: str) -> None:
        self.on_status(f"console of {board}: {path}")


class InProcessShards:
    """Shards on threads of this process (one loop each; one shard by default)."""

    dashboard_link: str | None = None

    def __init__(self, on_status: Callable[[str], None] = lambda _text: None) -> None:
        self.on_status = on_status
        self._controls: list[_ThreadControl] = []
        self._threads: list[threading.Thread] = []
        self._results: dict[int, ShardResult] = {}
        self._errors: list[BaseException] = []

    def start(self, shards: list[ShardSpec]) -> None:
        for shard in shards:
            control = _ThreadControl(self.on_status)
            thread = threading.Thread(
                target=self._run, args=(shard, control), name=f"fleet-shard-{shard.index}", daemon=True
            )
            self._controls.append(control)
            self._threads.append(thread)
            thread.start()

    def _run(self, shard: ShardSpec, control: _ThreadControl) -> None:
        try:
            self._results[shard.index] = run_shard(shard, control)
        except BaseException as exc:  # handed to the coordinator
            self._errors.append(exc)
        finally:
            control.ready_event.set()
            control.done_event.set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for control in self._controls:
            if not control.ready_event.wait(max(0.0, deadline - time.monotonic())):
                return False
        self._raise()
        return True

    def stop(self) -> None:
        for control in self._controls:
            control.stop_event.set()

    def gather(self, timeout: float) -> list[ShardResult]:
        deadline = time.monotonic() + timeout
        for control in self._controls:  # an event, not Thread.join: a join cut by Ctrl-C never waits again
            control.done_event.wait(max(0.0, deadline - time.monotonic()))
        self._raise()
        return [self._results[i] for i in sorted(self._results)]

    def _raise(self) -> None:
        if self._errors:
            raise self._errors[0]

    def close(self) -> None:
        self.stop()


#: A new socket's descriptor above this may be one paho's select() loop cannot take (FD_SETSIZE 1024).
SELECT_SAFE_FD = 1000


def _lowest_free_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)  # the kernel hands out the lowest free descriptor
    os.close(fd)
    return fd


def _deploy(package: bytes | None, url: str, timeout: float = 120.0) -> dict[str, Any]:
    """Publish ``package`` retained at QoS 2 (None: clear it); the deploy record as a dict.

    paho's network loop uses select(), which takes no descriptor above 1023, and a fleet's process
    holds one per board: when this process's low descriptors are taken, ``otalab deploy`` runs in a
    process of its own."""
    if _lowest_free_fd() < SELECT_SAFE_FD:
        from otalib.mqtt.publish import deploy

        return deploy(package, url, clear=package is None, timeout=timeout).to_dict()
    with tempfile.TemporaryDirectory(prefix="otalab-fleet-") as tmp:
        path = None
        if package is not None:
            path = Path(tmp) / "package.sdp"
            path.write_bytes(package)
        return _deploy_in_child(path, url, timeout)


def _deploy_in_child(package: Path | None, url: str, timeout: float = 120.0) -> dict[str, Any]:
    """``otalab deploy --json PACKAGE URL`` (``--clear`` without a package) in a child process: its record,
    or its one-line error."""
    import json
    import subprocess
    import sys

    from otalib import procs
    from otalib.errors import PublishError

    root = str(Path(__file__).resolve().parents[2])  # this otalib, wherever the caller runs
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    what = [str(package)] if package is not None else ["--clear"]
    argv = [sys.executable, "-m", "otalib", "deploy", "--json", "--timeout", str(timeout), *what, url]
    try:
        done = procs.run(argv, capture_output=True, text=True, timeout=timeout + 30, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise PublishError(f"publishing to {url} took more than {timeout + 30:g} s") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise PublishError(lines[-1].removeprefix("otalab: error: ") if lines else f"otalab deploy failed ({url})")
    return json.loads(done.stdout.strip().splitlines()[-1])


class FleetSession:
    """A fleet from a :class:`~otalib.fleet.spec.FleetSpec` (or a spec file's path).

    ``broker``: an external broker URL (else the spec's, else the managed Mosquitto).
    ``workers``: run the shards on a Dask ``LocalCluster`` of that many workers (0: on this
    machine); ``processes``: without Dask, the shards as that many child processes (1: one shard on
    a thread of this process; None: one per core from :data:`~otalib.fleet.processes.PROCESS_MIN_BOARDS`
    boards, a board's console on a pty keeps one); ``scheduler``: an existing Dask cluster
    (``tcp://HOST:PORT``; the broker must then be a URL its workers reach).
    ``console_logs``: write each board's console to ``OUT/consoles/BOARD.log``.
    ``keep_consoles``: boards whose console text the result keeps.
    """

    def __init__(
        self,
        spec: FleetSpec | str | Path,
        *,
        broker: str | None = None,
        workers: int = 0,
        scheduler: str | None = None,
        processes: int | None = None,
        console_logs: bool = False,
        keep_consoles: tuple[str, ...] = (),
        pty_board: str | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec if isinstance(spec, FleetSpec) else FleetSpec.load(spec)
        self.broker_url = broker or self.spec.broker
        if scheduler is not None and self.broker_url is None:
            raise LabError("a Dask scheduler's workers need the broker as a URL (--broker or the spec's broker:)")
        if workers < 0 or workers > 256:
            raise LabError(f"bad workers {workers}: 0..256")
        self.workers = workers
        self.scheduler = scheduler
        self.console_logs = console_logs
        self.keep_consoles = tuple(keep_consoles)
        names = {f"{g.name}-{i:04d}" for g in self.spec.groups for i in range(g.count)}
        if pty_board is not None and pty_board not in names:
            raise LabError(f"no board {pty_board!r} in this fleet (boards are GROUP-NNNN, e.g. {min(names)})")
        if pty_board is not None and (workers or scheduler):
            raise LabError("a board's console on a pty needs the fleet in this process (no --workers/--scheduler)")
        self.pty_board = pty_board
        if processes is not None and not 1 <= processes <= 256:
            raise LabError(f"bad processes {processes}: 1..256")
        if processes is not None and processes > 1 and pty_board is not None:
            raise LabError("a board's console on a pty needs the fleet in this process (no processes)")
        if processes is None:
            processes = 1 if pty_board is not None or workers or scheduler else default_processes(self.spec.count)
        self.processes = processes
        self.on_status = on_status or (lambda _text: None)
        self.key = self._key()
        self.packages = self._packages()
        self.estimate: Estimate = estimate(
            self.spec.count, max(p.size for p in self.packages.values()), max(1, self.shard_count)
        )
        self.result: FleetResult | None = None
        self._executor: Any = None
        self._shard_total: int | None = None

    # -- preparing --
    @property
    def shard_count(self) -> int:
        """Shards: one per worker (all run at once: each waits for the others' boards to subscribe)."""
        slots = getattr(getattr(self, "_executor", None), "slots", None)
        if slots:
            return min(slots, self.workers) if self.workers else slots
        return max(1, self.workers or self.processes)

    def _key(self) -> LabKey:
        if self.spec.update.key is None:
            return LabKey.generate()
        path = Path(self.spec.update.key)
        if not path.is_absolute() and self.spec.base_dir is not None:
            path = self.spec.base_dir / path
        return load_key(path)

    def _packages(self) -> dict[str, Package]:
        """One package per topic; groups of different chips on one topic get one ROM each in it (the
        device takes the ROM whose address matches its slot, as Sming's multi-ROM files work)."""
        update = self.spec.update
        stamp = timestamp_now()
        packages = {}
        for topic, groups in self.spec.topics().items():
            roms: list[Rom] = []
            for group in groups:
                address = self._build(group).rom_address
                if any(rom.address == address for rom in roms):
                    continue
                version = f"{group.version.major}.{group.version.minor}.{update.patch}"
                roms.append(Rom(address, make_demo_image(group.chip, group.app_id, version, size=update.size)))
            if len(roms) == 1:
                made = make_update(
                    roms[0].data,
                    update.mode,
                    patch=update.patch,
                    key=self.key,
                    timestamp=stamp,
                    address=roms[0].address,
                )
            else:
                mode = update.mode
                ota = build_ota(roms, self.key, signed=mode.signed, encrypted=mode.encrypted, timestamp=stamp)
                made = Update(mode, update.patch, True, pack(ota, update.patch), ota, stamp)
            packages[topic] = Package(topic, made)
        return packages

    def _build(self, group: GroupSpec) -> DeviceBuild:
        build = DeviceBuild(app_id=group.app_id, version=group.version, chip=Chip(group.chip), profile=group.profile)
        key = self.key if group.key == "same" else LabKey.generate()
        return build.accepting(group.mode or self.spec.update.mode, DeviceKeys.of(key))

    def _settings(self) -> dict[str, BoardSettings]:
        settings = {}
        images: dict[tuple[str, str, str], bytes] = {}
        for group in self.spec.groups:
            ident = (group.chip, group.app_id, str(group.version))
            if ident not in images:
                images[ident] = make_demo_image(group.chip, group.app_id, str(group.version))
            settings[group.name] = BoardSettings(
                group=group.name,
                build=self._build(group),
                initial_image=images[ident],
                rate_Bps=group.rate_Bps(),
                fault=group.fault,
                seed=self.spec.seed,
                timing=group.timing,
                debug_level=group.debug_level,
                tcp_mss=group.tcp_mss,
            )
        return settings

    def _shards(self, broker: str, console_dir: Path | None) -> list[ShardSpec]:
        settings = self._settings()
        boards = [(f"{g.name}-{i:04d}", g.name) for g in self.spec.groups for i in range(g.count)]
        count = min(self.shard_count, len(boards))
        self._shard_total = count
        payload = {g.name: self.packages[g.topic].size for g in self.spec.groups}
        return [
            ShardSpec(
                index=i,
                boards=tuple(boards[i::count]),
                settings=settings,
                broker=broker,
                expect_patch=self.spec.update.patch,
                payload_bytes=payload,
                timeout_s=self.spec.timeout_s,
                console_dir=str(console_dir) if console_dir else None,
                keep_consoles=self.keep_consoles,
                pty_board=self.pty_board,
            )
            for i in range(count)
        ]

    # -- running --
    def run(self, out_dir: str | Path | None = None) -> FleetResult:
        """Run the fleet; with ``out_dir``, write its results there (also when interrupted)."""
        from otalib.fleet.results import check_out_dir, write_result, write_started

        out = Path(out_dir) if out_dir is not None else None
        check_capacity(self.estimate, managed_broker=self.broker_url is None)
        if out is not None:
            check_out_dir(out)
        raise_nofile_limit()
        console_dir = None
        with contextlib.ExitStack() as stack:
            broker_url, broker_info = self._broker(stack)
            self._clear(broker_url, strict=True)  # the broker answers (else its error, before anything starts)
            stack.callback(self._clear, broker_url)
            if out is not None:
                write_started(out, self)
                if self.console_logs:
                    console_dir = out / "consoles"
                    console_dir.mkdir(exist_ok=True)
            executor = self._executor = self._make_executor()
            stack.callback(executor.close)
            shards = self._shards(broker_url, console_dir)
            results: list[ShardResult] = []
            t_publish = None
            deploys: list[dict[str, Any]] = []
            interrupted = False
            try:
                self.on_status(f"powering on {self.spec.count} boards in {len(shards)} shard(s)")
                executor.start(shards)
                if not executor.wait_ready(subscribe_timeout(self.spec.count) + MARGIN_S):
                    raise LabError("the fleet's boards did not subscribe in time")
                self.on_status("every board subscribed: publishing")
                t_publish, deploys = self._publish(broker_url)
                self.on_status("published: waiting for the boards")
                results = executor.gather(self.spec.timeout_s + MARGIN_S)
            except BaseException:
                interrupted = True
                executor.stop()
                with contextlib.suppress(BaseException):
                    results = executor.gather(MARGIN_S)
                self.result = assemble(self, results, t_publish, deploys, broker_info, complete=False)
                self._report_unconnected(broker_info)
                if out is not None:
                    write_result(out, self.result)
                raise
            finally:
                if not interrupted:
                    self.result = assemble(self, results, t_publish, deploys, broker_info, complete=True)
        self._report_unconnected(broker_info)
        if out is not None:
            write_result(out, self.result)
        return self.result

    def _report_unconnected(self, broker: dict[str, Any]) -> None:
        """Boards that never connected: say which limit they may have met."""
        assert self.result is not None
        boards = self.result.boards
        never = boards[boards["t_connected"].isna()]
        if never.empty:
            return
        import resource

        known = f" {broker['max_connections']}" if broker.get("max_connections") else ""
        limits = [
            f"the broker's connection limit (max_connections{known})",
            f"open files (RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} here)",
        ]
        reason = never["detail"].dropna().iloc[0] if never["detail"].notna().any() else "no connection"
        self.on_status(f"{len(never)} boards never connected ({reason}); limits to check: {', '.join(limits)}")

    def stop(self) -> None:
        """Ask a running fleet to stop (from another thread); its partial result is kept."""
        if self._executor is not None:
            self._executor.stop()

    def _make_executor(self) -> Any:
        if self.workers == 0 and self.scheduler is None:
            return ProcessShards() if self.processes > 1 else InProcessShards(self.on_status)
        from otalib.fleet.dask import DaskShards

        executor = DaskShards(self.workers, self.scheduler)
        self.on_status(f"Dask dashboard: {executor.dashboard_link}")
        return executor

    def _broker(self, stack: contextlib.ExitStack) -> tuple[str, dict[str, Any]]:
        if self.broker_url is not None:
            return self.broker_url, {"url": self.broker_url, "managed": False}
        from otalib.broker.mosquitto import MosquittoBroker

        broker = MosquittoBroker(max_connections=self.spec.count + 16, log_types=("error", "warning"))
        stack.enter_context(broker)
        return broker.url, {
            "url": broker.url,
            "managed": True,
            "backend": broker.backend,
            "version": broker.version,
            "max_connections": broker.max_connections,
        }

    def _publish(self, broker_url: str) -> tuple[float, list[dict[str, Any]]]:
        """Each package, retained at QoS 2; the first PUBLISH's wall-clock time and the deploy records."""
        records = []
        for topic, package in self.packages.items():
            record = _deploy(package.update.package, f"{broker_url.rstrip('/')}/{topic}")
            records.append({"topic": topic, **record})
        first = records[0]
        return first["t_start"] + first["publish_start"], records

    def _clear(self, broker_url: str, strict: bool = False) -> None:
        """Clear the retained update of every topic (``strict``: a broker's error is raised)."""
        for topic in self.packages:
            try:
                _deploy(None, f"{broker_url.rstrip('/')}/{topic}", timeout=10)
            except Exception:
                if strict:
                    raise
                # else best effort: an unreachable broker keeps nothing of ours
