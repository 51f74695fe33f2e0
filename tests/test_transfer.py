"""Both ends of one update on one clock: the deployment's numbers explained, the board's receive curve and
stages from a real device's console, the chart of them, the event table with whole lines."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
from test_live_console import A1_PACKAGE, recorded

from otalib.lab.console_view import event_table
from otalib.lab.transfer import board_rate_KBps, deploy_table, milestones, plot_transfer, transfer_frame
from otalib.mqtt.publish import DeployRecord

#: The recording's lines come every 10 ms from t = 0; the PUBLISH left the publisher at t = 0.5 s (line 50,
#: after the board's first boot, before the broker's first byte to it).
T_START, PUBLISH_START = 0.4, 0.1
SINCE = T_START + PUBLISH_START


def record(**changes) -> DeployRecord:
    values = dict(
        url="mqtt://127.0.0.1:1883",
        topic="a/test/u/4.3",
        bytes=A1_PACKAGE,
        retain=True,
        qos=2,
        t_start=T_START,
        connect_s=0.004,
        tls_handshake_s=None,
        publish_start=PUBLISH_START,
        pubrec_s=0.106,
        pubcomp_s=0.107,
        total_s=0.11,
        throughput_Bps=A1_PACKAGE / 0.007,
        cleared=False,
        broker_max_packet_size=None,
    )
    return DeployRecord(**{**values, **changes})


def test_deploy_table_explains_each_number_in_its_unit():
    table = deploy_table(record())
    assert list(table.index) == [
        "bytes",
        "connect_s",
        "publish_start",
        "pubrec_s",
        "pubcomp_s",
        "publish → PUBCOMP",
        "throughput",
    ]
    assert table.loc["bytes", "value"] == round(A1_PACKAGE / 1024, 1) and table.loc["bytes", "unit"] == "KiB"
    assert table.loc["publish → PUBCOMP", "value"] == pytest.approx(0.007)
    assert table.loc["throughput", "value"] == round(A1_PACKAGE / 0.007 / 1000, 1)
    assert table.loc["throughput", "unit"] == "KB/s"
    assert "NOT to the board" in table.loc["throughput", "what it measures"]
    assert deploy_table(record(throughput_Bps=None)).loc["throughput", "value"] is None


def test_transfer_frame_is_the_boards_receive_curve_until_its_restart():
    lines = recorded("S2.log")  # three boots: the retained update taken again after the restart
    curve = transfer_frame(lines, since=SINCE)
    restart = next(i for i, line in enumerate(lines) if line.event == "restart")
    segments = [line.fields["length"] for line in lines[:restart] if line.event == "tcp_received"]
    assert list(curve["segment"]) == segments and curve["received"].iloc[-1] == sum(segments)
    first = next(line for line in lines if line.event == "tcp_received")
    assert curve["t_s"].is_monotonic_increasing and curve["t_s"].iloc[0] == pytest.approx(first.t - SINCE)
    assert len(transfer_frame(lines, since=first.t + 0.001)) == len(segments) - 1  # lines before ``since``: not counted


def test_milestones_put_the_broker_and_the_board_on_one_clock():
    marks = milestones(recorded("A1.log"), record())
    order = list(marks.index)
    assert order.index("update_slot") < order.index("rom_update_complete") < order.index("switch_ok")
    lines = recorded("S2.log")  # standard mode, and the boots after the update
    marks = milestones(lines, record())
    assert list(marks.index) == [
        "PUBREC (broker)",
        "PUBCOMP (broker)",
        "first byte (board)",
        "swapping",
        "switch_ok",
        "last byte (board)",  # the segment whose data made the device switch is counted after it
        "restart",
        "running",
    ]
    assert marks.loc["PUBCOMP (broker)", "t_s"] == pytest.approx(0.007)
    booted, running = [line for line in lines if line.event == "running"][:2]  # before and after the update
    assert booted.t < SINCE < running.t
    assert marks.loc["running", "t_s"] == pytest.approx(running.t - SINCE, abs=1e-3)
    assert marks["t_s"].is_monotonic_increasing


def test_plot_transfer_has_title_units_and_the_stages():
    lines = recorded("A1.log")
    ax = plot_transfer(lines, record())
    rate = board_rate_KBps(lines, record())
    assert ax.get_title() == f"the board receiving a 310 KiB update, {rate:.1f} KB/s at the board"
    assert ax.get_xlabel() == "s since the PUBLISH" and ax.get_ylabel() == "received (KiB)"
    labels = ax.get_legend_handles_labels()[1]
    assert labels[:2] == ["received by the board", "package size"]
    assert [label.split(" at ")[0] for label in labels[2:]] == ["PUBCOMP (broker)", "update_slot", "switch_ok"]
    _x, y = ax.lines[0].get_data()
    assert y[-1] == pytest.approx(transfer_frame(lines, SINCE)["received"].iloc[-1] / 1024)


def test_event_table_shows_each_whole_line_left_aligned():
    lines = recorded("A1.log")
    html = event_table(lines).to_html()
    signature = next(line.line for line in lines if line.event == "signature")
    assert len(signature) > 200 and signature in html  # not cut at pandas' 50 characters
    assert "text-align: left" in html and "font-family: monospace" in html
    assert "tcp_received" in html and ">t (s)<" in html
