"""Untimed fleet boards read their socket ahead (64 KiB a recv) yet hand the device 1460-byte segments."""

from __future__ import annotations

import re

import paho.mqtt.client as mqtt
import pytest

from otalib.errors import LabError
from otalib.fleet import FleetSession, FleetSpec
from otalib.fleet.board import FleetClient

SEGMENT = re.compile(r"TCP \S+ received: (\d+) bytes")


def test_untimed_boards_read_ahead_and_keep_the_devices_segments(broker, monkeypatch):
    owners: dict[str, int] = {"fleet": 0}
    recv = mqtt.Client._sock_recv

    def counted(self, bufsize):  # the system calls of the fleet's boards
        if isinstance(self, FleetClient):
            owners["fleet"] += 1
        return recv(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counted)
    spec = {"name": "ahead", "timeout_s": 60, "update": {"size": "96KiB", "mode": "signed"}, "groups": [{"count": 3}]}
    session = FleetSession(FleetSpec.from_dict(spec), broker=broker.url, keep_consoles=("g1-0001",), processes=1)
    result = session.run()
    assert set(result.boards["outcome"]) == {"updated"}
    package = next(iter(session.packages.values())).size
    console = result.consoles["g1-0001"]
    sizes = [int(n) for n in SEGMENT.findall(console.split("subscription '")[1])]
    # one console line per TCP segment of at most 1460 bytes, as a device's lwIP hands them over
    assert max(sizes) == 1460 and all(0 < n <= 1460 for n in sizes)
    assert sum(sizes) >= package and len(sizes) >= package // 1460
    # far fewer recv calls than segments: 3 boards, ~70 segments each
    assert owners["fleet"] < 3 * len(sizes) / 4


def test_shard_processes_give_the_in_process_results(broker):
    spec = {
        "name": "procs",
        "timeout_s": 60,
        "update": {"size": "24KiB", "mode": "signed"},
        "groups": [{"name": "ok", "count": 4}, {"name": "bad", "count": 2, "fault": "corrupt@0.5"}],
    }
    results = {}
    for processes in (1, 2):
        session = FleetSession(FleetSpec.from_dict(spec), broker=broker.url, processes=processes)
        result = session.run()
        assert result.complete
        results[processes] = result.boards.sort_values("board").set_index("board")
    threads, procs = results[1], results[2]
    assert set(threads["shard"]) == {0} and set(procs["shard"]) == {0, 1}  # two shards, one per process
    assert list(procs["outcome"]) == list(threads["outcome"]) == ["rejected"] * 2 + ["updated"] * 4
    assert (procs["bytes_received"] == threads["bytes_received"]).all()


def test_bad_process_counts_are_refused():
    spec = FleetSpec.from_dict({"name": "p", "update": {"size": "8KiB"}, "groups": [{"count": 2}]})
    with pytest.raises(LabError, match="bad processes 0"):
        FleetSession(spec, processes=0)
    with pytest.raises(LabError, match="pty"):
        FleetSession(spec, processes=2, pty_board="g1-0000")
