"""The virtual board on a device timing model, end to end through a real Mosquitto."""

from __future__ import annotations

import json
import math
import socket
import time

import pytest
from board_helpers import KEY, firmware, signed_package, split_build
from process_helpers import run_otalab

from otalib.board.sim.timing import chip
from otalib.board.virtual import VirtualBoard, VirtualBoardProcess, _readline
from otalib.broker import find_mosquitto
from otalib.formats.ota import timestamp_now
from otalib.keys import DeviceKeys
from otalib.lab.schema import DEVICE_PHASES, TrialConfig
from otalib.mqtt import paho_compat
from otalib.mqtt.publish import deploy
from otalib.mqtt.url import parse_url
from otalib.net.link import LinkProfile, LinkProxy

pytestmark = [
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed"),
    pytest.mark.timeout(180),
]
WAIT = 20.0


def _trial(bench, **params):
    config = TrialConfig(campaign="timing", size=64 * 1024, mode="signed", broker_backend="mosquitto", **params)
    return bench.run(config).to_row()


def _stream_model_s(row) -> float:
    """The device time the model spent while the stream arrived (all but the final signature check)."""
    return row["erase_s"] + row["write_s"] + row["verify_s"] - chip("esp8266")["ed25519_verify_s"].typical


@pytest.mark.slow
def test_a_trial_on_esp8266_timing_records_device_phases_and_receives_at_the_device_pace(bench):
    row = _trial(bench, timing="esp8266")
    assert row["outcome"] == "updated" and row["timing"] == "esp8266"
    assert all(math.isfinite(row[name]) and row[name] >= 0 for name in DEVICE_PHASES)
    assert row["erase_s"] >= 16 * 0.045 and row["reboot_s"] > 0 and row["reconnect_s"] > 0
    observed = row["t_last_byte"] - row["t_first_byte"]
    # the board read its socket only as fast as the model let it: the transfer took the device's time
    assert 0.8 <= observed / _stream_model_s(row) <= 3.0, (observed, _stream_model_s(row))

    again = _trial(bench, timing="esp8266")  # same parameters, same trial id: the same draws
    for name in ("erase_s", "write_s", "verify_s", "switch_s", "reboot_s", "reconnect_s"):
        assert again[name] == pytest.approx(row[name], rel=1e-9), name
    other = _trial(bench, timing="esp8266", repeat=1)  # another repeat: other draws
    assert other["erase_s"] != pytest.approx(row["erase_s"], rel=1e-9)

    instant = _trial(bench)  # timing none: no device time, and the stream is not held back
    assert instant["timing"] == "none" and all(math.isnan(instant[name]) for name in DEVICE_PHASES)
    assert (instant["t_last_byte"] - instant["t_first_byte"]) < 0.3 * _stream_model_s(row)


def test_the_board_socket_takes_the_device_tcp_window(broker, tmp_path):
    buffers = {}
    for timing in ("esp8266", "none"):
        build, wiring = split_build({"keys": DeviceKeys(KEY.verify_key)}, app_id=f"tw{timing[:3]}")
        board = VirtualBoard(tmp_path / f"{timing}.bin", broker.url, build, timing=timing, **wiring)
        try:
            board.start()
            assert board.connected.wait(WAIT)
            sock = paho_compat.socket_of(board._client)
            buffers[timing] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            if timing == "esp8266":
                assert board.tcp_mss == chip("esp8266").tcp_mss  # segments of the chip's MSS
        finally:
            board.stop()
    window = chip("esp8266").tcp_window
    assert buffers["esp8266"] <= 2 * window  # Linux doubles the value for its bookkeeping
    assert buffers["esp8266"] < buffers["none"]


@pytest.mark.slow
def test_back_pressure_reaches_the_link_proxy(broker, tmp_path):
    """The sender cannot push the message faster than the device takes it: the proxy in front of the
    board forwards the payload over a good part of the device's time, not in a burst (kernel buffers
    on the sender's side hold some of it, as a broker's do in front of a real device)."""
    url = parse_url(broker.url)
    size = 512 * 1024
    with LinkProxy(url.host, url.port, LinkProfile(None, 0.0, "plain")) as proxy:
        build, wiring = split_build({"keys": DeviceKeys(KEY.verify_key)}, app_id="tbp")
        board = VirtualBoard(tmp_path / "f.bin", broker.url, build, timing="esp32", link=proxy.address, **wiring)
        try:
            board.start()
            assert board.suback.wait(WAIT)
            stamp = timestamp_now() + 1000
            image = firmware("4.3.6", patch=6, size=size, timestamp=stamp, app_id="tbp")
            deploy(signed_package("4.3.6", 6, image=image, timestamp=stamp, app_id="tbp"), f"{broker.url}/a/tbp/u/4.3")
            deadline = time.monotonic() + 60
            while not board.updates:
                assert time.monotonic() < deadline, "no update result"
                time.sleep(0.02)
            done = time.monotonic()
        finally:
            board.stop()
        first, last = proxy.stats["per_connection"][-1]["publish_times"][-1]
    result = board.updates[-1]
    assert result.outcome == "applied"
    device_span = done - first
    assert device_span >= 0.8 * (result.erase_s + result.write_s)  # the device's pace, not the PC's
    assert (last - first) > 0.05 * device_span, (last - first, device_span)  # held back, not a burst


def test_the_board_process_prints_the_device_phases_on_its_update_line(broker, tmp_path):
    key_file = tmp_path / "verify.key.bin"
    key_file.write_bytes(KEY.verify_key)
    app = "tproc"
    args = ["--broker", broker.url, "--app-id", app, "--version", "4.3.5", "--flash", str(tmp_path / "f.bin")]
    args += ["--layout", "host", "--verify-key", str(key_file), "--restart-delay", "0.1", "--timing", "esp32"]
    with VirtualBoardProcess(args) as proc:
        proc.expect("subscribing", WAIT)
        assert proc.proc is not None
        line = _readline(proc.proc, WAIT)
        assert line.startswith("subscribed: "), line
        deploy(signed_package("4.3.6", 6, timestamp=timestamp_now() + 1000, app_id=app), f"{broker.url}/a/{app}/u/4.3")
        deadline = time.monotonic() + WAIT
        while not line.startswith("update: "):
            assert time.monotonic() < deadline, "no update line"
            line = _readline(proc.proc, WAIT)
    update = json.loads(line.split(":", 1)[1])
    assert update["outcome"] == "applied"
    assert update["erase_s"] > 0 and update["write_s"] > 0 and update["verify_s"] > 0
    assert update["reboot_s"] > 0 and update["reconnect_s"] > 0 and update["receive_s"] >= 0


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["board", "--timing", "esp9000"], {}, "esp8266-160"),
        (["board"], {"TIMING": "fast"}, "TIMING"),
    ],
)
def test_a_bad_timing_is_one_line_and_a_failure(tmp_path, args, env, needle):
    result = run_otalab(*args, cwd=tmp_path, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing made


def test_a_dropped_link_costs_the_device_an_mqtt_connect(broker, tmp_path):
    from otalib.board.sim.timing import TimingModel

    url = parse_url(broker.url)
    with LinkProxy(url.host, url.port, LinkProfile(None, 0.0, "plain")) as proxy:
        build, wiring = split_build({"keys": DeviceKeys(KEY.verify_key)}, app_id="tdrop")
        board = VirtualBoard(
            tmp_path / "f.bin", broker.url, build, timing="esp8266", timing_seed=4, link=proxy.address, **wiring
        )
        try:
            board.start()
            assert board.suback.wait(WAIT)
            proxy.cut_all()
            deadline = time.monotonic() + WAIT
            while proxy.stats["connections"] < 2:
                assert time.monotonic() < deadline, "the board did not connect again"
                time.sleep(0.02)
        finally:
            board.stop()
        first, second = proxy.stats["per_connection"][:2]
    connect_s = TimingModel("esp8266", 4).mqtt_connect()  # the board's first MQTT connect draw: this one
    # paho waits its 0.2 s reconnect delay; the device adds its connect (the first boot is not timed)
    assert second["opened_t"] - first["closed_t"] >= 0.2 + connect_s - 0.01
