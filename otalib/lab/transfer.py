"""One update seen from both ends: the publisher's deployment record and the board's console.

:func:`deploy_table` explains each number of a :class:`~otalib.mqtt.publish.DeployRecord`
(what the broker acknowledged, and when); :func:`transfer_frame` is the board's side, the
bytes it has received at each ``TCP … received`` line; :func:`milestones` puts both on one
clock (seconds since the PUBLISH left the publisher); :func:`plot_transfer` draws them.
Sizes in KiB (1024 B), rates in KB/s (1000 B/s, as ``otalab deploy`` prints them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from otalib.board.console import BOOT_EVENTS
from otalib.board.protocol import ConsoleLine
from otalib.lab.progress import KB, KIB
from otalib.mqtt.publish import DeployRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: The console events that mark the stages of an update on the board, in order, and what each means.
MILESTONE_EVENTS: dict[str, str] = {
    "update_slot": "the device starts writing the other slot",
    "rom_update_complete": "image written and verified",
    "swapping": "standard mode: rBoot switched to the other slot",
    "switch_ok": "the device restarts into the new slot",
    "restart": "the old firmware has stopped",
    "running": "the new firmware runs",
    "switch_failed": "rejected: the old firmware keeps running",
}


def publish_time(record: DeployRecord) -> float:
    """Wall-clock time (``time.time()``, as console lines) when the PUBLISH started."""
    return record.t_start + record.publish_start


def deploy_table(record: DeployRecord) -> pd.DataFrame:
    """The deployment's numbers, each with its unit and what it measures (index: the record's field)."""
    span = record.pubcomp_s - record.publish_start
    rows = [
        ("bytes", record.bytes / KIB, "KiB", "package size: the MQTT payload (firmware + headers + patch)"),
        ("connect_s", record.connect_s, "s", "publisher: TCP connect + MQTT CONNECT/CONNACK with the broker"),
        ("publish_start", record.publish_start, "s", "the PUBLISH starts, counted from the call"),
        (
            "pubrec_s",
            record.pubrec_s,
            "s",
            "PUBREC: the broker has the whole message (QoS 2, step 1 of 2)",
        ),
        (
            "pubcomp_s",
            record.pubcomp_s,
            "s",
            "PUBCOMP: the broker has stored it, retained, once (QoS 2 handshake done)",
        ),
        ("publish → PUBCOMP", span, "s", "time the broker took to take the message"),
        (
            "throughput",
            None if record.throughput_Bps is None else record.throughput_Bps / KB,
            "KB/s",
            "bytes / (PUBLISH → PUBCOMP): publisher to broker, NOT to the board",
        ),
    ]
    rows = [(name, None if value is None else round(value, 1 if unit != "s" else 4), unit, what)
            for name, value, unit, what in rows]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["number", "value", "unit", "what it measures"]).set_index("number")
    frame["value"] = pd.Series([row[1] for row in rows], index=frame.index, dtype=object)  # each its own digits
    return frame


def transfer_frame(lines: Sequence[ConsoleLine], since: float) -> pd.DataFrame:
    """The board's receive curve: ``t_s`` (s since ``since``), ``segment`` and cumulative ``received``
    bytes at each ``TCP … received`` line from ``since`` on, up to the board's restart (a boot event after a
    segment)."""
    rows: list[dict[str, float]] = []
    total = 0
    for line in (line for line in lines if line.t >= since):
        if line.event in BOOT_EVENTS and rows:
            break
        if line.event == "tcp_received":
            size = int(line.fields.get("length", 0))
            total += size
            rows.append({"t_s": line.t - since, "segment": size, "received": total})
    return pd.DataFrame(rows, columns=["t_s", "segment", "received"])


def milestones(lines: Sequence[ConsoleLine], record: DeployRecord) -> pd.DataFrame:
    """The update's stages on one clock, s since the PUBLISH: the broker's PUBREC and PUBCOMP, the
    board's first and last byte, and the first console line of each :data:`MILESTONE_EVENTS` after the
    PUBLISH."""
    since = publish_time(record)
    rows = [
        ("PUBREC (broker)", record.pubrec_s, "the broker has the whole message"),
        ("PUBCOMP (broker)", record.pubcomp_s, "deploy() returns here"),
    ]
    rows = [(name, None if t is None else t - record.publish_start, what) for name, t, what in rows]
    received = transfer_frame(lines, since)
    if len(received):
        rows.append(("first byte (board)", float(received["t_s"].iloc[0]), "the board's first TCP segment"))
        rows.append(("last byte (board)", float(received["t_s"].iloc[-1]), "the board's last TCP segment"))
    seen: set[str] = set()
    for line in lines:
        if line.event in MILESTONE_EVENTS and line.event not in seen and line.t >= since:
            seen.add(line.event)
            rows.append((line.event, line.t - since, MILESTONE_EVENTS[line.event]))
    frame = pd.DataFrame(rows, columns=["milestone", "t_s", "meaning"]).set_index("milestone")
    return frame.sort_values("t_s", kind="stable").round({"t_s": 3})


def board_rate_KBps(lines: Sequence[ConsoleLine], record: DeployRecord) -> float | None:
    """The board's mean receive rate in KB/s, first to last segment (None with fewer than 3 segments)."""
    received = transfer_frame(lines, publish_time(record))
    if len(received) < 3:
        return None
    span = float(received["t_s"].iloc[-1] - received["t_s"].iloc[0])
    return float(received["received"].iloc[-1] - received["segment"].iloc[0]) / span / KB if span > 0 else None


def plot_transfer(lines: Sequence[ConsoleLine], record: DeployRecord, ax: Axes | None = None) -> Axes:
    """KiB the board has received vs s since the PUBLISH, with the broker's PUBCOMP and the board's stages."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    received = transfer_frame(lines, publish_time(record))
    ax.step(received["t_s"], received["received"] / KIB, where="post", color="#1f77b4", label="received by the board")
    ax.axhline(record.bytes / KIB, color="#999999", linestyle="--", linewidth=1, label="package size")
    marks = milestones(lines, record)
    colours = {"PUBCOMP (broker)": "#ff7f0e", "update_slot": "#b25f00", "switch_ok": "#1b7f2a", "running": "#6a4fa3"}
    colours["switch_failed"] = "#c0152f"
    for name, colour in colours.items():
        if name in marks.index and pd.notna(marks.loc[name, "t_s"]):
            t = float(marks.loc[name, "t_s"])
            ax.axvline(t, color=colour, linestyle=":", linewidth=1.5, label=f"{name} at {t:.2f} s")
    rate = board_rate_KBps(lines, record)
    rate_text = f", {rate:.1f} KB/s at the board" if rate is not None else ""
    ax.set_title(f"the board receiving a {record.bytes / KIB:.0f} KiB update{rate_text}")
    ax.set_xlabel("s since the PUBLISH")
    ax.set_ylabel("received (KiB)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return ax
