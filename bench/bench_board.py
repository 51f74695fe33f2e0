"""Benchmark the virtual board against plain Mosquitto clients, side by side in one run.

1. Latency of an unthrottled 1 MB signed update, from the start of the publish to the board
   having verified it (its update result), vs ``mosquitto_pub`` -> ``mosquitto_sub`` of the
   same bytes (target: ratio <= 2).
2. Peak RSS (VmHWM) of an ``otalab board`` process receiving a 1 MB and a 16 MB update
   (target: growth < 2 MB, i.e. the message is streamed to flash, not held in memory).

Run: ``.venv/bin/python bench/bench_board.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from board_helpers import KEY, T_RUNNING, firmware, make_flash, signed_package

from otalib.board.flash import big_layout
from otalib.board.virtual import VirtualBoard, VirtualBoardProcess
from otalib.broker import find_mosquitto, start_broker
from otalib.keys import DeviceKeys
from otalib.mqtt.publish import deploy

MB = 1024 * 1024


def board_latency(broker, workdir: Path, package: bytes, run: int) -> float:
    app = f"bench{run}"
    flash = workdir / f"{app}.bin"
    make_flash(flash, "4.3.5", app_id=app).close()
    done = threading.Event()
    t_done: list[float] = []

    def on_update(result) -> None:
        t_done.append(time.time())
        done.set()

    board = VirtualBoard(
        flash, broker.url, app_id=app, keys=DeviceKeys(KEY.verify_key), profile="reference", on_update=on_update
    )
    board.start()
    try:
        board.expect("subscribing", 10)
        board.connected.wait(10)
        time.sleep(0.2)
        record = deploy(package, f"{broker.url}/a/{app}/u/4.3")
        if not done.wait(30):
            raise RuntimeError("board did not finish the update")
        return t_done[0] - (record.t_start + record.publish_start)
    finally:
        board.stop()


def mosquitto_latency(broker, workdir: Path, payload: bytes, run: int) -> float:
    bindir = Path(find_mosquitto() or "/usr/sbin/mosquitto").parent
    pub = _tool("mosquitto_pub", bindir)
    sub = _tool("mosquitto_sub", bindir)
    file = workdir / "payload.bin"
    file.write_bytes(payload)
    topic = f"bench/raw/{run}"
    port = str(broker.port)
    reader = subprocess.Popen(
        [sub, "-h", "127.0.0.1", "-p", port, "-t", topic, "-q", "0", "-C", "1", "-i", f"bench-sub-{run}"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        t0 = time.time()
        subprocess.run([pub, "-h", "127.0.0.1", "-p", port, "-t", topic, "-q", "2", "-f", str(file)], check=True)
        reader.wait(30)
        return time.time() - t0
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
        time.sleep(0.5)
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
        workdir = Path(tmp)
        image = firmware("4.3.6", timestamp=T_RUNNING + 1000, patch=6, size=MB)
        package = signed_package("4.3.6", 6, image=image)
        boards, raws = [], []
        for run in range(args.runs):
            pkg = signed_package("4.3.6", 6, image=firmware("4.3.6", patch=6, size=MB, app_id=f"bench{run}"))
            boards.append(board_latency(broker, workdir, pkg, run))
            raws.append(mosquitto_latency(broker, workdir, package, run))
        b, m = statistics.median(boards), statistics.median(raws)
        print(f"1 MB signed update, publish start -> board verified: {b * 1000:.1f} ms (median of {args.runs})")
        print(f"1 MB mosquitto_pub -> mosquitto_sub:                 {m * 1000:.1f} ms (median of {args.runs})")
        print(f"ratio board / mosquitto: {b / m:.2f}x (target <= 2x)")
        small = peak_rss_kib(broker, workdir, MB)
        large = peak_rss_kib(broker, workdir, 16 * MB - 64 * 1024)  # fills a 16 MiB slot (the most real chips have)
        print(f"peak RSS of the board process receiving  1 MB: {small / 1024:.1f} MiB")
        print(f"peak RSS of the board process receiving 16 MB: {large / 1024:.1f} MiB")
        print(f"growth: {(large - small) / 1024:.2f} MiB (target < 2 MiB)")


if __name__ == "__main__":
    main()
