"""Benchmark the virtual board against plain Mosquitto clients, side by side in one run.

1. Latency of an unthrottled 1 MB signed update vs ``mosquitto_pub`` -> ``mosquitto_sub`` of the
   same bytes, over EQUAL spans: both publishers reach the broker through the same relay, which
   stamps the first byte of their PUBLISH packet and forwards every read at once (TCP_NODELAY);
   the span ends when the board has verified and applied the update (its update result, checked to
   be ``applied``: the image fits the bench layout's 2 MiB slots) or when ``mosquitto_sub``
   received the message (its ``-F %U`` time).
   Process start and connect are outside both spans. Receivers are subscribed (seen in the broker's log) before
   anything is published, so nothing waits on a sleep (target: ratio <= 2).
2. Peak RSS (VmHWM) of an ``otalab board`` process receiving a 1 MB and a 16 MB update
   (target: growth < 2 MB, i.e. the message is streamed to flash, not held in memory).

Run: ``.venv/bin/python bench/bench_board.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from board_helpers import KEY, T_RUNNING, firmware, make_flash, signed_package

from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.device import UpdateResult
from otalib.board.sim.flash import big_layout
from otalib.board.virtual import VirtualBoard, VirtualBoardProcess
from otalib.broker import find_mosquitto, start_broker
from otalib.keys import DeviceKeys
from otalib.mqtt.publish import deploy
from otalib.mqtt.wire import connect_level
from otalib.net.link import MqttFrameTracker
from otalib.vocabulary import Decision

MB = 1024 * 1024
#: Slot size of the latency bench's flash layout (MiB): room for the 1 MB image.
SLOT_MIB = 2


WAIT = 30.0


class PublishClock:
    """A TCP relay in front of the broker that stamps the first byte of each client's first PUBLISH."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stamps: list[float] = []
        self._stamped = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=WAIT)
                for sock in (client, upstream):  # forward at once: Nagle here stalled spans by 40 ms (delayed ACK)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
                threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        tracker, head, stamped = MqttFrameTracker(), b"", not watch
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not stamped:
                    now = time.time()
                    if len(head) < 64:
                        head += data[:64]
                        tracker.level = connect_level(head) or tracker.level
                    tracker.feed(data)
                    if tracker.publishes:
                        stamped = True
                        with self._stamped:
                            self.stamps.append(now)
                            self._stamped.notify_all()
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def next_stamp(self, count: int) -> float:
        """The ``count``-th PUBLISH stamp (1-based), waiting for it (bounded)."""
        with self._stamped:
            if not self._stamped.wait_for(lambda: len(self.stamps) >= count, WAIT):
                raise RuntimeError("no PUBLISH went through the relay")
            return self.stamps[count - 1]

    def close(self) -> None:
        self.server.close()


def wait_subscribed(broker, topic: str) -> None:
    """Until the broker's log shows a SUBSCRIBE to ``topic`` (bounded; no sleep-and-hope)."""
    deadline = time.monotonic() + WAIT
    while f"\t{topic} (QoS" not in broker.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody subscribed to {topic} within {WAIT:.0f} s")
        time.sleep(0.01)


def bench_package(app: str) -> bytes:
    """A signed ``.ota`` of a 1 MB image for ``app``, its ROM at the bench layout's rom0 (0x100000)."""
    image = firmware("4.3.6", timestamp=T_RUNNING + 1000, patch=6, size=MB, app_id=app)
    return signed_package("4.3.6", 6, image=image, app_id=app, address=0x100000)


def board_latency(broker, clock: PublishClock, workdir: Path, package: bytes, run: int) -> float:
    app = f"bench{run}"
    flash = workdir / f"{app}.bin"
    layout = big_layout(SLOT_MIB)  # a 1 MB image does not fit the 1 MB slots of the ESP8266 / Host layouts
    make_flash(flash, "4.3.5", app_id=app, layout=layout).close()
    done = threading.Event()
    t_done: list[float] = []
    results: list[UpdateResult] = []

    def on_update(result: UpdateResult) -> None:
        t_done.append(time.time())
        results.append(result)
        done.set()

    board = VirtualBoard(
        flash,
        broker.url,
        DeviceBuild(keys=DeviceKeys(KEY.verify_key), profile="reference", app_id=app, layout=layout),
        on_update=on_update,
    )
    board.start()
    try:
        board.expect("subscribing", WAIT)
        wait_subscribed(broker, f"a/{app}/u/4.3")
        before = len(clock.stamps)
        deploy(package, f"mqtt://127.0.0.1:{clock.port}/a/{app}/u/4.3")
        t_publish = clock.next_stamp(before + 1)
        if not done.wait(WAIT):
            raise RuntimeError("board did not finish the update")
        if results[0].outcome is not Decision.APPLIED:  # a rejection after one segment is no verified update
            raise RuntimeError(f"the board did not apply the update: {results[0]}")
        return t_done[0] - t_publish
    finally:
        board.stop()


def mosquitto_latency(broker, clock: PublishClock, workdir: Path, payload: bytes, run: int) -> float:
    bindir = Path(find_mosquitto() or "/usr/sbin/mosquitto").parent
    pub = _tool("mosquitto_pub", bindir)
    sub = _tool("mosquitto_sub", bindir)
    file = workdir / "payload.bin"
    file.write_bytes(payload)
    topic = f"bench/raw/{run}"
    port = str(broker.port)
    # -F %U: mosquitto_sub prints the unix time (ns) at which it received the message, not the payload
    argv = [sub, "-h", "127.0.0.1", "-p", port, "-t", topic, "-q", "0", "-C", "1", "-F", "%U"]
    reader = subprocess.Popen([*argv, "-i", f"bench-sub-{run}"], stdout=subprocess.PIPE, text=True)
    try:
        wait_subscribed(broker, topic)
        before = len(clock.stamps)
        cmd = [pub, "-h", "127.0.0.1", "-p", str(clock.port), "-t", topic, "-q", "2", "-f", str(file)]
        subprocess.run(cmd, check=True, timeout=WAIT)
        out, _ = reader.communicate(timeout=WAIT)
        if reader.returncode != 0 or not out.strip():
            raise RuntimeError("mosquitto_sub did not get the message")
        return float(out.split()[0]) - clock.next_stamp(before + 1)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def _tool(name: str, bindir: Path) -> str:
    for folder in (bindir, Path("/usr/bin"), Path("/usr/sbin")):
        if (folder / name).exists():
            return str(folder / name)
    return name


def peak_rss_kib(broker, workdir: Path, size: int) -> int:
    app = f"rss{size // MB}"
    flash = workdir / f"{app}.bin"
    make_flash(flash, "4.3.5", app_id=app, layout=big_layout(16)).close()
    key = workdir / "verify.key.bin"
    key.write_bytes(KEY.verify_key)
    args = ["--broker", broker.url, "--app-id", app, "--flash", str(flash), "--slot-mib", "16"]
    args += ["--verify-key", str(key), "--profile", "reference", "--debug-level", "3"]
    image = firmware("4.3.6", timestamp=T_RUNNING + 1000, patch=6, size=size, app_id=app)
    package = signed_package("4.3.6", 6, image=image, app_id=app, address=0x100000)
    with VirtualBoardProcess(args) as proc:
        proc.expect("subscribing", 20)
        wait_subscribed(broker, f"a/{app}/u/4.3")
        deploy(package, f"{broker.url}/a/{app}/u/4.3")
        proc.expect("rom_update_complete", 120)
        status = Path(f"/proc/{proc.pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if find_mosquitto() is None:
        sys.exit("mosquitto not installed")
    with tempfile.TemporaryDirectory() as tmp, start_broker("mosquitto") as broker:
        clock = PublishClock(broker.port)
        workdir = Path(tmp)
        boards, raws = [], []
        for run in range(args.runs):
            package = bench_package(f"bench{run}")
            boards.append(board_latency(broker, clock, workdir, package, run))
            raws.append(mosquitto_latency(broker, clock, workdir, package, run))
        clock.close()
        b, m = statistics.median(boards), statistics.median(raws)
        print(f"broker: mosquitto {broker.version}; spans start at the first byte of the PUBLISH (same relay)")
        print(f"1 MB signed update, PUBLISH -> board verified:       {b * 1000:.1f} ms (median of {args.runs})")
        print(f"1 MB PUBLISH (mosquitto_pub) -> mosquitto_sub got it: {m * 1000:.1f} ms (median of {args.runs})")
        print(f"ratio board / mosquitto: {b / m:.2f}x (target <= 2x)")
        small = peak_rss_kib(broker, workdir, MB)
        large = peak_rss_kib(broker, workdir, 16 * MB - 64 * 1024)  # fills a 16 MiB slot (the most real chips have)
        print(f"peak RSS of the board process receiving  1 MB: {small / 1024:.1f} MiB")
        print(f"peak RSS of the board process receiving 16 MB: {large / 1024:.1f} MiB")
        print(f"growth: {(large - small) / 1024:.2f} MiB (target < 2 MiB)")


if __name__ == "__main__":
    main()
