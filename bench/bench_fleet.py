"""Benchmark the virtual fleet against bare paho subscribers, side by side through one managed Mosquitto.

1. 1,000 boards (timing none) take one retained 1 MB signed update: the time from the PUBLISH until
   every board has verified it (its decision, after the signature check) against the time 1,000 bare
   paho subscribers (the same epoll loop, no device) need to receive the same retained message from
   the same broker (target: ratio <= 1.5). Like is compared with like: the bare subscribers are spread
   over as many processes as the fleet uses (one, or one shard process per core): in one process a
   bare paho client is itself the bottleneck (it joins each message's pieces in Python), not the
   broker. The fleet's peak RSS, all its processes summed, is printed (target: <= 1.5 GB).
2. The same fleet with the esp8266 timing model (``--timing``): its time to 99 % against the
   model's time for one board plus the broker's fan-out (the bare side's time, as many processes)
   (target: ratio <= 1.2).

Run: ``.venv/bin/python bench/bench_fleet.py [--boards 1000] [--size 1000000] [--timing esp8266|none]
[--tcp-mss 1460] [--workers N] [--processes N] [--repeat 3]``; by default the fleet runs both in one process
and as one shard process per core, printed side by side; the untimed sides take turns ``--repeat`` times
and their medians are compared (one run's ratio moves by +-20 % on a 2-core machine), each run's ratio shown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otalib.broker.mosquitto import MosquittoBroker  # noqa: E402
from otalib.fleet import FleetSession, FleetSpec  # noqa: E402
from otalib.fleet.processes import default_processes  # noqa: E402
from otalib.fleet.shard import peak_rss_bytes, raise_nofile_limit  # noqa: E402
from otalib.mqtt.publish import deploy  # noqa: E402

BARE_TOPIC = "bench/bare"


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its ended children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fleet_spec(boards: int, size: int, timing: str, tcp_mss: int = 1460) -> FleetSpec:
    return FleetSpec.from_dict(
        {
            "name": "bench",
            "timeout_s": 600,
            "update": {"size": size, "mode": "signed", "patch": 2},
            "groups": [{"name": "boards", "count": boards, "timing": timing, "tcp_mss": tcp_mss}],
        }
    )


def bare_side(broker: str, boards: int, first: int = 0) -> None:
    """Child: ``boards`` bare subscribers (client ids from ``first``); 'ready' on stdout once all have
    their SUBACK, then the wall time at which the last one had the whole message (JSON)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from otalib.fleet.loop import FleetLoop
    from otalib.mqtt.url import parse_url

    raise_nofile_limit()
    url = parse_url(broker)
    loop = FleetLoop()
    state = {"subscribed": 0, "received": 0, "t_last": 0.0, "bytes": 0}

    def on_connect(c, _u, _f, _r, _p):
        c.subscribe(BARE_TOPIC, qos=0)

    def on_subscribe(*_a):
        state["subscribed"] += 1

    def on_message(_c, _u, msg):
        if msg.payload:
            state["received"] += 1
            state["bytes"] = len(msg.payload)
            state["t_last"] = time.time()

    clients = []
    for i in range(boards):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{first + i}", protocol=mqtt.MQTTv311)
        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        loop.attach(client)
        loop.call_later(i / 400.0, lambda c=client: c.connect(url.host, url.port, 60))
        clients.append(client)
    loop.run(lambda: state["subscribed"] >= boards, time.monotonic() + 120)
    print("ready", flush=True)
    loop.run(lambda: state["received"] >= boards, time.monotonic() + 600)
    print(json.dumps({**state, "peak_rss_bytes": peak_rss_bytes()}), flush=True)


def fleet_side(broker: str, boards: int, size: int, timing: str, tcp_mss: int, workers: int, processes: int) -> None:
    """Child: the fleet through ``broker``; its times (s from the publish) and peak RSS (JSON)."""
    spec = fleet_spec(boards, size, timing, tcp_mss)
    result = FleetSession(spec, broker=broker, workers=workers, processes=processes or None).run()
    b = result.boards
    print(
        json.dumps(
            {
                "all_verified_s": float(b["t_decided"].max()),
                "t99_s": result.time_to(0.99),
                "updated": int((b["outcome"] == "updated").sum()),
                "peak_rss_bytes": result.meta["peak_rss_total_bytes"],  # every fleet process's, summed
                "t_publish": result.meta["t_publish"],
                "package_bytes": next(iter(result.meta["packages"].values()))["bytes"],
                "cpu_s": cpu_seconds(),  # this process's and its shard processes', the whole run
            }
        ),
        flush=True,
    )


def _runs(times: list[float]) -> str:
    return "runs: " + ", ".join(f"{t:.2f}" for t in times)


def _processes(n: int) -> str:
    return f"{n} process{'es' if n > 1 else ''}"


def bare_run(broker: str, package: bytes, boards: int, processes: int) -> tuple[float, int]:
    """``boards`` bare subscribers spread over ``processes`` children take the retained ``package``: the
    seconds from its PUBLISH until the last one had it, and how many received it."""
    shares = [len(range(i, boards, processes)) for i in range(processes)]
    children = [
        child("--side", "bare", "--broker", broker, "--boards", str(n), "--first", str(sum(shares[:i])))
        for i, n in enumerate(shares)
    ]
    for bare in children:
        assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
    record = deploy(package, f"{broker}/{BARE_TOPIC}", timeout=600)
    t_publish = record.t_start + record.publish_start
    results = [json.loads(bare.stdout.readline()) for bare in children]  # type: ignore[union-attr]
    for bare in children:
        bare.wait(60)
    deploy(None, f"{broker}/{BARE_TOPIC}", clear=True)
    return max(r["t_last"] for r in results) - t_publish, sum(r["received"] for r in results)


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--timing", default="esp8266", help="the second fleet's timing profile (none: skip it)")
    parser.add_argument("--tcp-mss", type=int, default=1460, help="the boards' TCP segment (1460: an ESP8266's)")
    parser.add_argument("--workers", type=int, default=0, help="fleet shards on a Dask LocalCluster")
    parser.add_argument(
        "--processes", type=int, default=0, help="the fleet's shard processes (0: both 1 and one per core)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="untimed runs of each side, taking turns (medians compared; default 3)"
    )
    parser.add_argument("--side", choices=("bare", "fleet"), help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.boards < 1:
        parser.error("--repeat and --boards must be at least 1")
    if args.side == "bare":
        return bare_side(args.broker, args.boards, args.first)
    if args.side == "fleet":
        return fleet_side(args.broker, args.boards, args.size, args.timing, args.tcp_mss, args.workers, args.processes)

    raise_nofile_limit()
    package = next(iter(FleetSession(fleet_spec(1, args.size, "none")).packages.values())).update.package
    cores = default_processes(args.boards)
    ways = [args.processes or args.workers] if args.processes or args.workers else sorted({1, cores})
    timed = [args.timing] if args.timing != "none" else []
    with MosquittoBroker(max_connections=args.boards + 32, log_types=("error", "warning")) as broker:

        def fleet_run(timing: str, processes: int) -> dict[str, Any]:
            fleet = child(
                *("--side", "fleet", "--broker", broker.url, "--boards", str(args.boards), "--size", str(args.size)),
                *("--timing", timing, "--tcp-mss", str(args.tcp_mss), "--workers", str(args.workers)),
                *("--processes", str(processes)),
            )
            out, _ = fleet.communicate(timeout=1800)
            return json.loads(out.strip().splitlines()[-1])

        # untimed: bare subscribers (spread over as many processes as the fleet uses) and the fleet, taking
        # turns --repeat times on the same broker; then the timing model's fleet once per way
        bare: dict[int, list[tuple[float, int]]] = {p: [] for p in ways}
        fleets: dict[tuple[str, int], list[dict[str, Any]]] = {(t, p): [] for t in ["none", *timed] for p in ways}
        for _ in range(args.repeat):
            for p in ways:
                bare[p].append(bare_run(broker.url, package, args.boards, p))
                fleets["none", p].append(fleet_run("none", p))
        for timing in timed:
            for p in ways:
                fleets[timing, p].append(fleet_run(timing, p))
    mb = len(package) / 1e6
    print(f"{args.boards} receivers, one retained {mb:.2f} MB signed update through the managed Mosquitto")
    print(f"  (fleet: TCP segments of {args.tcp_mss} bytes, {args.workers or 'no'} Dask workers)")
    for processes in ways:
        way = f"{processes} shard process{'es' if processes > 1 else ''}" if processes > 1 else "in this process"
        bare_times = [t for t, _n in bare[processes]]
        runs = fleets["none", processes]
        fleet_times = [f["all_verified_s"] for f in runs]
        received, updated = min(n for _t, n in bare[processes]), min(f["updated"] for f in runs)
        print(
            f"  bare paho subscribers ({_processes(processes)}), all received: {median(bare_times):8.2f} s median"
            f" ({_runs(bare_times)}; {received} received)"
        )
        print(
            f"  fleet boards (timing none, {way}), all verified: {median(fleet_times):8.2f} s median"
            f" ({_runs(fleet_times)}; {updated} updated)"
        )
        ratios = [f / b for f, b in zip(fleet_times, bare_times, strict=True)]
        print(
            f"    ratio fleet / bare, each in {_processes(processes)}: {median(fleet_times) / median(bare_times):.2f}"
            f" of the medians (target <= 1.5; run by run: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        print(f"    fleet peak RSS: {max(f['peak_rss_bytes'] for f in runs) / 2**30:.2f} GiB (target <= 1.5 GB)")
        print(f"    fleet CPU (all its processes, a whole run): {median([f['cpu_s'] for f in runs]):.1f} s median")
    if args.timing != "none":
        from otalib.board.sim.timing import update_breakdown  # the model's one board

        phases = update_breakdown(args.timing, len(package), "signed")
        # updated = running the new firmware: the work, the sample's 1 s restart delay and the reboot
        # (a fleet board does not reconnect afterwards, so reconnect_s is not part of it)
        one = sum(phases.values()) - phases["reconnect_s"] + 1.0
        print(f"  model, one {args.timing} board:            {one:8.2f} s")
        for processes in ways:
            (run,) = fleets[args.timing, processes]
            t99 = run["t99_s"]
            way = f"{processes} processes" if processes > 1 else "in this process"
            print(f"  fleet ({args.timing}, {way}) time to 99 % updated: {t99:8.2f} s ({run['updated']} updated)")
            fan_out = median([t for t, _n in bare[processes]])  # the broker's fan-out: the bare side's median time
            print(f"    ratio t99 / (one board + fan-out {fan_out:.2f} s): {t99 / (one + fan_out):.2f} (target <= 1.2)")
            print(f"    fleet CPU (all its processes, the whole run): {run['cpu_s']:.1f} s")


if __name__ == "__main__":
    main()
