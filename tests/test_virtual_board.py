"""The virtual board end to end: real Mosquitto, real paho, console read through SerialBoard on its pty."""

from __future__ import annotations

import itertools
import time

import pytest
from board_helpers import (
    KEY,
    OTHER_KEY,
    T_RUNNING,
    firmware,
    make_flash,
    signed_package,
    split_build,
    standard_package,
)

from otalib.board.protocol import Board
from otalib.board.serial_board import SerialBoard
from otalib.board.sim.flash import SECTOR
from otalib.board.virtual import VirtualBoard, VirtualBoardProcess
from otalib.broker import find_mosquitto, start_broker
from otalib.keys import DeviceKeys
from otalib.mqtt.publish import deploy
from otalib.mqtt.streaming import RECV_CHUNK, StreamingClient
from otalib.net.link import Fault, LinkProxy

WAIT = 10.0
_apps = itertools.count()

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


class Rig:
    """A board on a fresh flash with its own app id (retained messages never collide), and a monitor."""

    def __init__(self, broker, tmp_path, version="4.3.5", *, layout=None, flash_setup=None, **kw) -> None:
        self.broker = broker
        self.app = f"vb{next(_apps)}"
        path = tmp_path / f"{self.app}.bin"
        extra = {"layout": layout} if layout else {}
        with make_flash(path, version, app_id=self.app, **extra) as flash:
            if flash_setup:
                flash_setup(flash)
        kw.setdefault("keys", DeviceKeys(KEY.verify_key))
        kw.setdefault("restart_delay", 0.1)
        build, wiring = split_build(kw, app_id=self.app, **extra)
        self.board = VirtualBoard(path, broker.url, build, **wiring)
        self.monitor = SerialBoard(self.board.console_path, reset_via_rts=False)
        self.board.start()

    def ready(self) -> None:
        self.monitor.expect("running", WAIT)
        deadline = time.monotonic() + WAIT
        while not self.board.connected.is_set():
            assert time.monotonic() < deadline, "board did not connect"
            time.sleep(0.02)
        time.sleep(0.1)  # SUBSCRIBE on its way

    def publish(self, package: bytes) -> None:
        deploy(package, f"{self.broker.url}/a/{self.app}/u/4.3")

    def wait_updates(self, n: int = 1):
        deadline = time.monotonic() + WAIT
        while len(self.board.updates) < n:
            assert time.monotonic() < deadline, f"no update result after {WAIT}s"
            time.sleep(0.02)
        return self.board.updates[n - 1]

    def close(self) -> None:
        self.board.stop()
        self.monitor.close()


@pytest.fixture
def rig(broker, tmp_path):
    made: list[Rig] = []

    def make(*args, **kw) -> Rig:
        r = Rig(broker, tmp_path, *args, **kw)
        made.append(r)
        r.ready()
        return r

    yield make
    for r in made:
        r.close()


def test_board_protocol_and_status(rig):
    r = rig()
    assert isinstance(r.board, Board)
    status = r.board.status
    assert status["profile"] == "sming-6.1" and status["mode"] == "advanced" and status["version"] == "4.3.5"
    assert status["slot"] == 0 and status["console"] == r.board.console_path
    assert r.board.current_version() == "4.3"


def test_signed_update_restarts_into_new_version(rig):
    r = rig()
    r.publish(signed_package("4.3.6", 6, app_id=r.app))
    r.monitor.expect("rom_activated", WAIT)
    r.monitor.expect("switch_ok", WAIT)
    r.monitor.expect("restart", WAIT)
    running = r.monitor.expect("running", WAIT)
    assert running.fields["slot"] == 1
    assert r.wait_updates().outcome == "applied"
    assert r.board.status["version"] == "4.3.6" and r.board.status["slot"] == 1


def test_older_patch_skipped_without_restart(rig):
    r = rig()
    r.publish(signed_package("4.3.4", 4, app_id=r.app))
    assert r.wait_updates().outcome == "skipped"
    assert r.board.status["slot"] == 0 and r.board.device.boot_count == 1


def test_tampered_rejected_slot_erased(rig):
    r = rig()
    package = bytearray(signed_package("4.3.6", 6, app_id=r.app))
    package[500] ^= 0x40
    r.publish(bytes(package))
    line = r.monitor.expect("device_error", WAIT)
    assert line.fields["error"] == "VerificationFailed"
    r.monitor.expect("switch_failed", WAIT)
    result = r.wait_updates()
    assert result.error == "VerificationFailed" and not result.restart
    assert r.board.flash.slot_head(1, SECTOR) == b"\xff" * SECTOR
    assert r.board.status["version"] == "4.3.5" and r.board.device.boot_count == 1


def test_downgrade_refused(rig):
    r = rig()
    r.publish(signed_package("4.3.6", 6, timestamp=T_RUNNING - 60_000, app_id=r.app))
    assert r.monitor.expect("device_error", WAIT).fields["error"] == "DowngradeNotAllowed"
    assert r.wait_updates().error == "DowngradeNotAllowed"


def test_wrong_decryption_key(rig):
    r = rig(keys=DeviceKeys(KEY.verify_key, OTHER_KEY.decrypt_key))
    r.publish(signed_package("4.3.6", 6, encrypted=True, app_id=r.app))
    assert r.monitor.expect("device_error", WAIT).fields["error"] == "DecryptionFailed"


def test_encrypted_update(rig):
    r = rig(keys=DeviceKeys(KEY.verify_key, KEY.decrypt_key))
    r.publish(signed_package("4.3.6", 6, encrypted=True, app_id=r.app))
    assert r.wait_updates().outcome == "applied"


def test_standard_mode(rig):
    r = rig(mode="standard", keys=DeviceKeys(), write_current_slot=False)  # sming-6.1 writes the running slot
    r.publish(standard_package("4.3.6", 6, app_id=r.app))
    r.monitor.expect("ota_write", WAIT)
    r.monitor.expect("swapping", WAIT)
    assert r.monitor.expect("running", WAIT).fields["slot"] == 1
    assert r.board.status["version"] == "4.3.6"


@pytest.mark.parametrize(
    ("profile", "current", "outcome"),
    [("sming-6.1", 46, "applied"), ("sming-6.1", 47, "skipped"), ("reference", 47, "applied")],
)
def test_varint_quirk(rig, profile, current, outcome):
    r = rig(f"4.3.{current}", profile=profile)
    r.publish(signed_package("4.3.300", 300, app_id=r.app))
    assert r.wait_updates().outcome == outcome


def test_equal_patch_retained_loop_on_sming_61(rig):
    r = rig()
    r.publish(signed_package("4.3.5", 5, app_id=r.app))
    assert r.wait_updates(1).outcome == "applied"
    assert r.wait_updates(2).outcome == "applied"  # after the restart the retained message installs again
    assert r.monitor.expect("running", WAIT).fields["slot"] == 1
    assert r.monitor.expect("running", WAIT).fields["slot"] == 0


def test_equal_patch_skipped_on_reference(rig):
    r = rig(profile="reference")
    r.publish(signed_package("4.3.5", 5, app_id=r.app))
    assert r.wait_updates().outcome == "skipped"


def test_erased_header_slot_does_not_boot(broker, tmp_path):
    def setup(flash):
        flash.set_current_rom(1)  # rom1 is erased

    r = Rig(broker, tmp_path, flash_setup=setup)
    try:
        r.monitor.expect("Rom 1 is bad.", WAIT)
        assert r.monitor.expect("running", WAIT).fields["slot"] == 0
    finally:
        r.close()


def test_power_cycle_mid_update_keeps_old_version(broker, rig):
    """The link holds the message back half-way, so the power cut lands mid-transfer, every time."""
    with LinkProxy(broker.host, broker.port) as link:
        r = rig(link=link.address)
        r.board.power_cycle()  # reboots at once; nothing to lose yet
        r.ready()
        assert r.board.device.boot_count == 2
        image = firmware("4.3.6", timestamp=T_RUNNING + 1000, patch=6, size=200_000, app_id=r.app)
        package = signed_package("4.3.6", 6, image=image, app_id=r.app)
        half = len(package) // 2
        link.set_fault(Fault("stall", at_byte=half, within="payload", duration_s=None), live=True)
        r.publish(package)
        r.monitor.expect("update_slot", WAIT)
        wait_for(lambda: link.stats["faults_fired"], "the link never held the message back")
        r.board.power_cycle()  # power lost with half of the message written
        running = r.monitor.expect("running", WAIT)
        cut = r.wait_updates(1)
        assert cut.outcome == "abandoned" and cut.detail == f"connection lost after {half} of {len(package)} bytes"
        assert running.fields["slot"] == 0 and r.board.device.boot_count == 3  # no switch: the old firmware runs
        # the reconnect gets a clean link: the retained message comes again, whole, and is installed
        assert r.wait_updates(2).outcome == "applied"
        assert r.monitor.expect("running", WAIT).fields["slot"] == 1


def wait_for(condition, why: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, why
        time.sleep(0.01)
    return value


def test_streaming_client_never_holds_the_message(broker):
    """A 4 MB message reaches the sink in bounded chunks while it arrives, never held as one buffer."""
    import tracemalloc

    import paho.mqtt.client as mqtt

    chunks: list[int] = []
    done: list[str] = []

    class Sink:
        def message_start(self, topic, length, retain, qos):
            done.append(f"start {topic} {length} {retain}")

        def message_data(self, chunk):
            chunks.append(len(chunk))

        def message_end(self):
            done.append("end")

        def message_abort(self):
            done.append("abort")

    size = 4 * 1024 * 1024
    deploy(b"\x05" + bytes(size), f"{broker.url}/a/stream/u/1.0", check_package=False)
    client = StreamingClient(mqtt.CallbackAPIVersion.VERSION2, client_id="stream-test", stream_sink=Sink())
    client.on_connect = lambda c, *_: c.subscribe("a/stream/u/1.0", 0)
    tracemalloc.start()
    try:
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            wait_for(lambda: "end" in done or "abort" in done, "the message never ended", WAIT * 3)
        finally:
            client.disconnect()
            client.loop_stop()
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done == [f"start a/stream/u/1.0 {size + 1} True", "end"]
    assert sum(chunks) == size + 1 and max(chunks) <= RECV_CHUNK and len(chunks) > 16
    # paho alone would hold the 4 MB body (and copy it); streamed, a few reads are alive at once
    assert peak < size // 4, f"peak {peak} bytes traced while receiving a {size}-byte message"


def test_board_process_kill_and_restart(broker, tmp_path):
    key_file = tmp_path / "verify.key.bin"
    key_file.write_bytes(KEY.verify_key)
    flash = tmp_path / "proc.bin"
    app = f"vb{next(_apps)}"
    args = ["--broker", broker.url, "--app-id", app, "--version", "4.3.5", "--flash", str(flash), "--layout", "host"]
    # the reference profile: no equal-patch re-install of the retained update (sming-6.1 would loop
    # between the slots, and which one runs at the kill would be down to timing)
    args += ["--verify-key", str(key_file), "--restart-delay", "0.1", "--profile", "reference"]
    with VirtualBoardProcess(args) as proc:
        assert isinstance(proc, Board)
        assert proc.console_path.startswith("/dev/") and proc.status_line.startswith("status: ")
        proc.expect("running", WAIT)
        proc.expect("subscribing", WAIT)
        time.sleep(0.3)
        deploy(signed_package("4.3.6", 6, timestamp=_now_ts() + 1000, app_id=app), f"{broker.url}/a/{app}/u/4.3")
        proc.expect("switch_ok", WAIT)
        assert proc.expect("running", WAIT).fields["slot"] == 1
        proc.power_cycle()  # kill -9 and start again: the flash file keeps rom1 selected
        assert proc.expect("running", WAIT).fields["slot"] == 1


def _now_ts() -> int:
    from otalib.formats.ota import timestamp_now

    return timestamp_now()


def test_tls_with_ca_and_pin(tmp_path):
    from otalib.mqtt.tls import TlsOptions, certificate_digests, parse_pin

    with start_broker("mosquitto", tls=True) as tls_broker:
        import ssl

        der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", tls_broker.port)))
        pin = parse_pin("spki:" + certificate_digests(der)["spki"].hex())
        for tls in (TlsOptions(ca=tls_broker.ca_path), TlsOptions(pins=(pin,))):
            r = Rig(tls_broker, tmp_path, tls=tls)
            try:
                r.ready()
                deploy(
                    signed_package("4.3.6", 6, app_id=r.app),
                    f"{tls_broker.url}/a/{r.app}/u/4.3",
                    tls=TlsOptions(ca=tls_broker.ca_path),
                )
                assert r.wait_updates().outcome == "applied"
            finally:
                r.close()
