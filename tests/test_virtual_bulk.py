"""An untimed virtual board takes a read's TCP segments in one step: the same console, flash and decision
as one segment at a time (real Mosquitto and paho; the same package, retained, to both ways)."""

from __future__ import annotations

import itertools
import threading

import pytest
from board_helpers import (
    KEY,
    MICROSECONDS,
    firmware,
    make_flash,
    signed_package,
    split_build,
    spy_on_bulk_steps,
    standard_package,
)

from otalib.board import virtual
from otalib.board.sim.device import UpdateResult
from otalib.board.virtual import VirtualBoard
from otalib.broker import find_mosquitto
from otalib.keys import DeviceKeys
from otalib.mqtt.publish import deploy

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

WAIT = 30.0
IMAGE = 200_000  # many reads of many segments
_apps = itertools.count()


def _tampered(package: bytes) -> bytes:
    spoiled = bytearray(package)
    spoiled[len(spoiled) // 2] ^= 0x40  # ROM content: found only at the end (the signature)
    return bytes(spoiled)


CASES = {  # name -> (build keywords, package of a 200 kB image for the app, the decision)
    "signed": (
        {},
        lambda app: signed_package("4.3.6", 6, image=firmware("4.3.6", patch=6, size=IMAGE, app_id=app)),
        "applied",
    ),
    "tampered": (
        {},
        lambda app: _tampered(signed_package("4.3.6", 6, image=firmware("4.3.6", patch=6, size=IMAGE, app_id=app))),
        "rejected",
    ),
    "encrypted": (
        {"keys": DeviceKeys(KEY.verify_key, KEY.decrypt_key)},
        lambda app: signed_package(
            "4.3.6", 6, encrypted=True, image=firmware("4.3.6", patch=6, size=IMAGE, app_id=app)
        ),
        "applied",
    ),
    "standard": (
        {"mode": "standard", "keys": DeviceKeys(), "write_current_slot": False},
        lambda app: standard_package("4.3.6", 6, app_id=app, size=IMAGE),
        "applied",
    ),
}


def _update(broker, tmp_path, name: str, app: str, kw: dict) -> tuple[UpdateResult, list[str], bytes]:
    """One board takes the retained ``package``: its result, its console from the TCP connection on, its slot 1."""
    path = tmp_path / f"{app}-{name}.bin"
    make_flash(path, "4.3.5", app_id=app).close()
    build, wiring = split_build({"keys": DeviceKeys(KEY.verify_key), **kw}, app_id=app)
    done = threading.Event()
    board = VirtualBoard(path, broker.url, build, restart_delay=WAIT, on_update=lambda _r: done.set(), **wiring)
    board.start()
    try:
        assert done.wait(WAIT), "no update result"
        lines = [cl.line for cl in board.history()]
        start = next(i for i, line in enumerate(lines) if " connected: useSSL" in line)
        slot = board.flash.read(board.flash.layout.roms[1], IMAGE)
        return board.updates[0], [MICROSECONDS.sub("", line) for line in lines[start:]], slot
    finally:
        board.stop()


@pytest.mark.parametrize("case", list(CASES))
def test_bulk_segments_print_write_and_decide_as_one_at_a_time(broker, tmp_path, monkeypatch, case):
    kw, make_package, decision = CASES[case]
    app = f"bulk{next(_apps)}"
    deploy(make_package(app), f"{broker.url}/a/{app}/u/4.3")  # retained: each board gets it at its SUBACK
    steps = spy_on_bulk_steps(monkeypatch)
    bulk = _update(broker, tmp_path, "bulk", app, kw)
    assert steps and max(steps) > 1  # reads of several segments were taken in one call
    monkeypatch.setattr(virtual, "BULK_SEGMENTS", False)
    steps.clear()
    exact = _update(broker, tmp_path, "exact", app, kw)
    assert not steps
    assert bulk[0] == exact[0] and exact[0].outcome == decision
    assert bulk[1] == exact[1]
    assert sum("received: 1460 bytes" in line for line in exact[1]) > 100  # one line per segment
    assert bulk[2] == exact[2]
