"""Benchmark: ``otalab deploy`` vs ``mosquitto_pub -r -q 2``, end to end to a waiting subscriber.

For 1 MB and 4 MB packages, each run starts the publisher as a subprocess (process start
included) and stops the clock when a subscriber, connected beforehand, holds the full payload
(byte-identical). Both publishers run alternately in the same run against the same managed
broker; the median of ``--repeat`` runs is compared. The library call ``deploy()`` (no process
start, as from a notebook) is timed the same way beside them. Mosquitto first, then the embedded
(amqtt) backend beside it (both publishers use MQTT 3.1.1 there: amqtt has no v5).

    .venv/bin/python bench/bench_deploy.py [--repeat 5] [--sizes 1,4]
"""

from __future__ import annotations

import argparse
import functools
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from otalib.broker import BrokerUser, start_broker
from otalib.mqtt.publish import deploy
from otalib.mqtt.url import parse_url

USER = BrokerUser("bench", "bench-pw")
TOPIC = "a/bench/u/1.0"
OTALAB = str(Path(sys.executable).with_name("otalab"))
TIMEOUT = 60.0


class Waiter:
    """A subscriber that is connected before the publish and reports when the payload arrived."""

    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        self.got: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(parsed.username, parsed.password)
        self.client.on_message = lambda _c, _u, m: self.got.put((time.perf_counter(), bytes(m.payload)))
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *_a: subscribed.put(True)
        self.client.connect(parsed.host, parsed.port, 60)
        self.client.loop_start()
        self.client.subscribe(TOPIC, qos=2)
        subscribed.get(timeout=TIMEOUT)

    def wait_for(self, payload: bytes) -> float:
        while True:
            at, data = self.got.get(timeout=TIMEOUT)
            if data == payload:
                return at

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear(broker) -> None:
    subprocess.run([OTALAB, "deploy", "--clear", broker.url_for(TOPIC, USER)], check=True, capture_output=True)


def run_once(argv: list[str] | Callable[[], object], waiter: Waiter, payload: bytes) -> float:
    start = time.perf_counter()
    if callable(argv):
        argv()  # in-process library call
    else:
        proc = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return waiter.wait_for(payload) - start


def bench_backend(
    backend: str, sizes: list[int], repeat: int, folder: Path
) -> list[tuple[str, int, float, float, float]]:
    rows = []
    with start_broker(backend, users=[USER]) as broker:
        url = broker.url_for(TOPIC, USER)
        host, port = broker.host, str(broker.port)
        extra = ["--mqtt-version", "3.1.1"] if backend == "embedded" else []
        for mb in sizes:
            package = bytes([1]) + b"\xe9\x01" + os.urandom(mb * 1024 * 1024 - 3)
            path = folder / f"fw-{mb}.sdp"
            path.write_bytes(package)
            ours = [OTALAB, "deploy", str(path), url, *extra]
            theirs = [
                shutil.which("mosquitto_pub") or "mosquitto_pub",
                *("-h", host, "-p", port, "-u", USER.name, "-P", USER.password),
                *("-t", TOPIC, "-f", str(path), "-r", "-q", "2"),
            ]
            version = "3.1.1" if backend == "embedded" else "auto"
            library = functools.partial(deploy, path, url, mqtt_version=version)
            times: dict[str, list[float]] = {"otalab": [], "mosquitto_pub": [], "library": []}
            for i in range(repeat + 1):  # first round is a warm-up
                order = [("otalab", ours), ("mosquitto_pub", theirs), ("library", library)]
                for name, argv in order if i % 2 else order[::-1]:
                    clear(broker)
                    waiter = Waiter(url)
                    try:
                        elapsed = run_once(argv, waiter, package)
                    finally:
                        waiter.close()
                    if i:
                        times[name].append(elapsed)
            medians = [statistics.median(times[name]) for name in ("otalab", "mosquitto_pub", "library")]
            rows.append((backend, mb, *medians))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1,4", help="package sizes in MB, comma separated")
    parser.add_argument("--backends", default="mosquitto,embedded")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    probe = subprocess.run([OTALAB, "--version"], capture_output=True, check=True)
    start_s = time.perf_counter() - started
    print(f"otalab process start (otalab --version): {start_s * 1000:.0f} ms  [{probe.stdout.decode().strip()}]")
    rows = []
    with tempfile.TemporaryDirectory(prefix="otalab-bench-") as tmp:
        for backend in args.backends.split(","):
            rows += bench_backend(backend, sizes, args.repeat, Path(tmp))
    print(f"median of {args.repeat} runs, publisher start to full payload at a waiting subscriber")
    head = f"{'backend':<10} {'size':>5} {'otalab deploy':>14} {'mosquitto_pub':>14} {'ratio':>6}"
    print(f"{head} {'deploy() in-process':>20} {'ratio':>6}")
    for backend, mb, ours, theirs, lib in rows:
        print(
            f"{backend:<10} {mb:>3} MB {ours * 1000:>11.0f} ms {theirs * 1000:>11.0f} ms {ours / theirs:>6.2f}x"
            f" {lib * 1000:>17.0f} ms {lib / theirs:>6.2f}x"
        )
    worst = max(ours / theirs for _b, _mb, ours, theirs, _lib in rows if _b == "mosquitto")
    print(f"target <= 1.5x vs mosquitto_pub on Mosquitto: worst {worst:.2f}x -> {'OK' if worst <= 1.5 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
