"""The main job (``make demo``): one watched update end to end, then a small campaign with charts.

A :class:`~otalib.lab.session.LabSession` starts a broker and a virtual board with its
console on a pty (read back through the serial monitor, as a real board's port would
be); the demo builds and signs an update, deploys it, shows the board's console live (each
line as the device prints it, and a progress bar of the update's bytes: a
:class:`~otalib.lab.live_console.TerminalConsole`, plain text when the output is no
terminal) until it runs the new version, then runs a small campaign and writes its data,
charts and summary under ``out``. The watched update goes over a ``wifi`` link by
default (about 50 KB/s: a few seconds to watch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from otalib.board.sim.build import DeviceBuild
from otalib.errors import LabError
from otalib.fileio import write_atomic
from otalib.firmware.demo import make_demo_image
from otalib.formats.ota import timestamp_now
from otalib.formats.version import Version
from otalib.inspect import inspect_bytes
from otalib.keys import DeviceKeys, export_keys, generate_key_file
from otalib.lab.campaign import CampaignSpec
from otalib.lab.live_console import TerminalConsole
from otalib.lab.report import write_report
from otalib.lab.session import LabSession
from otalib.lab.trial import run_campaign_on_bench
from otalib.update import make_update
from otalib.vocabulary import Outcome, OutcomeKind, UpdateMode

APP_ID = "test"
#: The watched update: its image size and the link the board takes it over.
WATCHED_SIZE = 256 * 1024
WATCHED_LINK = "wifi"
#: The demo's campaign: an ESP8266 (the device timing model) over Wi-Fi, two sizes × two modes × three
#: faults, twice, six trials at once (under a minute). It shows what a device does: where its time goes
#: (erase, write, verify), that a corrupted image bricks a standard board but is rejected by a signed
#: one, and what drops cost (no resume: the whole message again, far more often for the bigger image).
DEMO_CAMPAIGN = {
    "name": "demo",
    "repeats": 2,
    "seed": 1,
    "parallel": 6,
    "fixed": {"broker_backend": "auto", "timing": "esp8266", "link": "wifi", "timeout_s": 20},
    "grid": {
        "size": ["32KiB", "128KiB"],
        "mode": ["standard", "signed"],
        "fault": ["none", "corrupt", "drops:rate=1"],
    },
}


def watched_update(
    out: Path,
    say: Callable[[str], None],
    *,
    backend: str = "auto",
    link: str = WATCHED_LINK,
    size: int = WATCHED_SIZE,
    stream: TextIO | None = None,
) -> dict:
    """Broker + virtual board + signed update over ``link``, its console shown live on ``stream`` (default:
    stdout; a :class:`LabSession`); returns a summary."""
    out.mkdir(parents=True, exist_ok=True)
    key, _ = generate_key_file(out / "ota.key", force=True)
    export_keys(key, out, force=True)  # the key above is new: back up the old exports
    build = DeviceBuild(app_id=APP_ID, version=Version(4, 3, 1)).accepting(UpdateMode.SIGNED, DeviceKeys.of(key))
    with LabSession(backend=backend, build=build, workdir=out, link=link) as session:
        assert session.broker is not None and session.board is not None  # a managed broker, a virtual board
        broker = session.broker
        say(f"broker: {broker.backend} {broker.version} at {broker.url}")
        path = session.board.console_path
        say(f"virtual board: console on {path} (try: otalab monitor {path})")
        session.wait_ready(15.0)
        image = make_demo_image("esp8266", APP_ID, "4.3.2", size=size)
        update = make_update(
            image, UpdateMode.SIGNED, patch=2, key=key, timestamp=timestamp_now() + 1, build=session.build
        )
        write_atomic(out / "app-4.3.2.bin", image)
        write_atomic(out / "update.ota", update.ota or b"")
        write_atomic(out / "update.sdp", update.package)
        report = inspect_bytes(update.package, key)
        say(
            f"built: app-4.3.2.bin ({len(image)} B) -> update.sdp ({len(update.package)} B, signed, patch 2),"
            f" inspect: {'verified' if report.ok else report.data.get('error')}"
        )
        record = session.deploy(update)
        say(
            f"deployed: retained QoS 2 on {record.topic}, PUBCOMP from the broker after"
            f" {record.pubcomp_s * 1000:.1f} ms; the board takes it over the {link} link:"
        )
        session.watch(60.0, view=TerminalConsole(session.progress(), stream))
        outcome = session.outcome or Outcome(OutcomeKind.TIMEOUT)
        tracker = session.tracker
    say(f"outcome: {outcome} (board now runs slot {tracker.slot}, version {tracker.version})")
    if outcome.kind is not OutcomeKind.UPDATED:
        raise LabError(f"the demo update did not apply: {outcome}")
    return {"outcome": outcome.text, "deploy": record.to_dict()}


def run_demo(
    out: Path,
    say: Callable[[str], None] = print,
    *,
    campaign: bool = True,
    link: str = WATCHED_LINK,
    stream: TextIO | None = None,
) -> list[Path]:
    """The whole demo; returns the files it wrote for the reader."""
    out = Path(out)
    started = time.monotonic()
    say("== 1. a watched update: build, sign, deploy, watch the board take it")
    watched_update(out / "update", say, link=link, stream=stream)
    written = [out / "update"]
    if campaign:
        say("== 2. a small campaign on ESP8266 models over wifi: sizes x modes x faults, six boards at once")
        spec = CampaignSpec.from_dict(DEMO_CAMPAIGN)
        df = run_campaign_on_bench(spec, out / "run", progress=True, resume=False)
        counts = df["outcome"].value_counts().to_dict()
        say("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        written += write_report(out / "run", out / "report")
    say(f"== done in {time.monotonic() - started:.0f} s; see:")
    for path in written:
        say(f"   {path}")
    return written
