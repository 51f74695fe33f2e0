"""Link faults and power loss during an update, each with the outcome a real device has.

The virtual board connects to Mosquitto through :class:`~otalib.net.link.LinkProxy`;
fault offsets count from the first byte of the deployment package (``within="payload"``).
Outcomes, as the device behaves:

- slow link: the update succeeds, it just takes longer;
- cut mid-message: the partial message is dropped (no switch, old firmware runs); the
  board reconnects, gets the retained message again and updates;
- stall shorter than the keepalive: the transfer resumes on the same connection;
  stall longer than the keepalive: the board's MQTT client gives up on the silent
  connection (no PINGRESP), drops the partial message, reconnects and updates;
- corrupted byte, advanced (signed) mode: VerificationFailed, old firmware kept, the
  target slot's first sector erased;
- the same corrupted byte, standard mode (no integrity check): the board switches and
  restarts into a broken image and crash-loops (bricked); a corrupted image HEADER
  instead makes rBoot fall back to the other slot (old firmware), which then takes the
  retained update again;
- power loss (kill -9) mid-write: the boot config was not switched, the old firmware
  boots and takes the retained update again; with the sming-6.1 standard-mode quirk
  (writing into the running slot) the same power loss leaves the running slot
  half-overwritten: bricked.
"""

from __future__ import annotations

import itertools
import time

import pytest
from board_helpers import KEY, T_RUNNING, firmware, make_flash, signed_package, split_build

from otalib.board.serial_board import SerialBoard
from otalib.board.sim.flash import SECTOR
from otalib.board.virtual import VirtualBoard, VirtualBoardProcess
from otalib.broker import find_mosquitto
from otalib.formats.package import pack
from otalib.keys import DeviceKeys
from otalib.mqtt.publish import deploy
from otalib.net.link import PROFILES, Fault, LinkProfile, LinkProxy

WAIT = 15.0
IMAGE_SIZE = 160_000
_apps = itertools.count()

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


def new_image(app: str, size: int = IMAGE_SIZE) -> bytes:
    return firmware("4.3.6", timestamp=T_RUNNING + 1000, patch=6, size=size, app_id=app)


def advanced_package(app: str, size: int = IMAGE_SIZE) -> bytes:
    return signed_package("4.3.6", 6, image=new_image(app, size), app_id=app)


def standard_package(app: str, size: int = IMAGE_SIZE) -> bytes:
    return pack(new_image(app, size), 6)


class FaultRig:
    """A virtual board (own app id, fresh flash, 4.3.5 in rom0) behind a LinkProxy to Mosquitto."""

    def __init__(self, broker, tmp_path, *, profile: LinkProfile | None = None, fault: Fault | None = None, **kw):
        self.broker = broker
        self.app = f"fault{next(_apps)}"
        path = tmp_path / f"{self.app}.bin"
        make_flash(path, "4.3.5", app_id=self.app).close()
        self.link = LinkProxy(broker.host, broker.port, profile, fault).start()
        if kw.get("mode", "advanced") == "advanced":
            kw.setdefault("keys", DeviceKeys(KEY.verify_key))
        kw.setdefault("restart_delay", 0.1)
        build, wiring = split_build(kw, app_id=self.app)
        self.board = VirtualBoard(path, broker.url, build, link=self.link.address, **wiring)
        self.monitor = SerialBoard(self.board.console_path, reset_via_rts=False)
        self.board.start()
        self.monitor.expect("running", WAIT)
        wait_for(self.board.connected.is_set, "board did not connect")
        time.sleep(0.1)  # SUBSCRIBE on its way

    def publish(self, package: bytes) -> None:
        deploy(package, f"{self.broker.url}/a/{self.app}/u/4.3")

    def wait_updates(self, n: int, timeout: float = WAIT):
        wait_for(lambda: len(self.board.updates) >= n, f"fewer than {n} update results", timeout)
        return self.board.updates[:n]

    def running_slots(self) -> list[int]:
        return [line.fields["slot"] for line in self.board.history() if line.event == "running"]

    def close(self) -> None:
        self.board.stop()
        self.monitor.close()
        self.link.stop()


def wait_for(condition, message: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


@pytest.fixture
def rig(broker, tmp_path):
    made: list[FaultRig] = []

    def make(**kw) -> FaultRig:
        made.append(FaultRig(broker, tmp_path, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


# --- link faults -------------------------------------------------------------------------------------


def test_slow_wifi_link_update_succeeds_but_takes_longer(rig) -> None:
    r = rig(profile=PROFILES["wifi"])  # 50 KB/s
    package = advanced_package(r.app)
    r.publish(package)
    (result,) = r.wait_updates(1, timeout=30)
    assert result.outcome == "applied"
    assert r.monitor.expect("running", WAIT).fields["slot"] == 1
    first, last = r.link.stats["per_connection"][0]["publish_times"][0]
    # ~165 KB at 50 KB/s: over 3 s on the wire (a LAN link takes milliseconds)
    assert last - first >= 2.0


def test_cut_mid_message_abandoned_then_retained_update_applied(rig) -> None:
    r = rig(fault=Fault("cut", at_byte=IMAGE_SIZE // 2, within="payload"))
    r.publish(advanced_package(r.app))
    first, second = r.wait_updates(2)
    assert first.outcome == "abandoned" and first.patch == 6
    assert second.outcome == "applied"
    assert r.monitor.expect("running", WAIT).fields["slot"] == 1
    assert r.running_slots() == [0, 1]  # the old firmware ran until the complete message came
    stats = r.link.stats
    assert [kind for kind, _at, _t in stats["faults_fired"]] == ["cut"]
    assert stats["connections"] >= 2


def test_short_stall_resumes_on_the_same_connection(rig) -> None:
    r = rig(fault=Fault("stall", at_byte=50_000, duration_s=1.0, within="payload"))
    r.publish(advanced_package(r.app))
    (result,) = r.wait_updates(1)
    assert result.outcome == "applied"
    assert r.monitor.expect("running", WAIT).fields["slot"] == 1
    assert r.link.stats["per_connection"][0]["publish_times"][0][1] is not None  # delivered on connection 1


def test_stall_longer_than_keepalive_drops_the_connection(rig) -> None:
    r = rig(fault=Fault("stall", at_byte=50_000, within="payload"), keepalive=1)
    r.publish(advanced_package(r.app))
    # keepalive 1 s: no PINGRESP gets through the stalled link, so the client closes the connection,
    # the device drops the partial message, reconnects (a clean link) and takes the retained update.
    first, second = r.wait_updates(2)
    assert first.outcome == "abandoned"
    assert second.outcome == "applied"
    assert r.running_slots()[:1] == [0] and r.monitor.expect("running", WAIT).fields["slot"] == 1
    assert r.link.stats["connections"] >= 2
    r.link.resume()


def test_corrupt_byte_advanced_mode_rejected_slot_erased(rig) -> None:
    r = rig()
    package = advanced_package(r.app)
    r.link.set_fault(Fault("corrupt", at_byte=len(package) // 2, within="payload"), live=True)
    r.publish(package)
    (result,) = r.wait_updates(1)
    assert (result.outcome, result.error, result.target_slot) == ("rejected", "VerificationFailed", 1)
    assert r.monitor.expect("device_error", WAIT).fields["error"] == "VerificationFailed"
    assert r.board.flash.slot_head(1, SECTOR) == b"\xff" * SECTOR  # can never boot
    assert r.board.device.slot == 0 and r.board.device.state == "running"
    assert r.running_slots() == [0]  # no restart: the old firmware keeps running


@pytest.mark.parametrize("mode", ["advanced", "standard"])
def test_same_corrupt_byte_advanced_keeps_old_standard_bricks(rig, mode) -> None:
    r = rig(mode=mode)
    package = advanced_package(r.app) if mode == "advanced" else standard_package(r.app)
    r.link.set_fault(Fault("corrupt", at_byte=100_000, within="payload"), live=True)
    r.publish(package)
    (result,) = r.wait_updates(1)
    if mode == "advanced":
        assert result.outcome == "rejected" and result.error == "VerificationFailed"
        assert r.board.device.state == "running" and r.board.device.slot == 0
    else:
        # no integrity check: the switch happens, the new slot holds a broken image
        assert result.outcome == "applied" and result.boot_slot == 1
        r.monitor.expect("Fatal exception", WAIT)
        wait_for(lambda: r.board.device.state == "bricked", "standard-mode board did not brick")
        assert r.running_slots() == [0]  # nothing runs after the switch


def test_corrupt_header_standard_mode_boots_the_other_slot(rig) -> None:
    r = rig(mode="standard", write_current_slot=False)  # the fixed sample: it writes the other slot
    package = standard_package(r.app)
    # payload byte 1 is the image's first byte (patch 6 is one varint byte): the 0xE9 magic
    r.link.set_fault(Fault("corrupt", at_byte=1, within="payload"), live=True)
    r.publish(package)
    r.monitor.expect("Rom 1 is bad.", WAIT)
    assert r.monitor.expect("running", WAIT).fields["slot"] == 0  # rBoot fell back: old firmware
    # the retained message comes again over a clean link: now it updates
    r.wait_updates(2)
    assert r.monitor.expect("running", WAIT).fields["slot"] == 1
    assert r.running_slots() == [0, 0, 1]


# --- power loss during flash writing (kill -9 of the board process) ----------------------------------


class ProcessRig:
    """``otalab board`` as a subprocess behind a rate-limited LinkProxy, so a kill lands mid-write."""

    def __init__(self, broker, tmp_path, *extra: str, mode: str = "advanced") -> None:
        self.broker = broker
        self.app = f"fault{next(_apps)}"
        flash = tmp_path / f"{self.app}.bin"
        make_flash(flash, "4.3.5", app_id=self.app).close()
        self.link = LinkProxy(broker.host, broker.port, LinkProfile(rate_Bps=40_000)).start()
        args = ["--broker", broker.url, "--app-id", self.app, "--version", "4.3.5", "--flash", str(flash)]
        args += ["--layout", "host", "--mode", mode, "--link", self.link.address, "--restart-delay", "0.1", *extra]
        if mode == "advanced":
            key_file = tmp_path / f"{self.app}.verify.key.bin"
            key_file.write_bytes(KEY.verify_key)
            args += ["--verify-key", str(key_file)]
        self.proc = VirtualBoardProcess(args).start()
        assert self.proc.expect("running", WAIT).fields["slot"] == 0
        self.proc.expect("subscribing", WAIT)
        time.sleep(0.3)

    def publish(self, package: bytes) -> None:
        deploy(package, f"{self.broker.url}/a/{self.app}/u/4.3")

    def payload_bytes_sent(self) -> int:
        conns = self.link.stats["per_connection"]
        if not conns or not conns[-1]["publishes"]:
            return 0
        return conns[-1]["bytes_down"] - conns[-1]["publishes"][0][1]

    def close(self) -> None:
        self.proc.stop()
        self.link.stop()


@pytest.fixture
def proc_rig(broker, tmp_path):
    made: list[ProcessRig] = []

    def make(*extra: str, **kw) -> ProcessRig:
        made.append(ProcessRig(broker, tmp_path, *extra, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.mark.parametrize("mode", ["advanced", "standard"])
def test_power_loss_mid_write_boots_old_slot_then_updates(proc_rig, mode) -> None:
    r = proc_rig(*(["--no-write-current-slot"] if mode == "standard" else []), mode=mode)
    r.publish(advanced_package(r.app) if mode == "advanced" else standard_package(r.app))
    r.proc.expect("update_slot" if mode == "advanced" else "ota_write", WAIT)  # writing into rom1
    wait_for(lambda: r.payload_bytes_sent() >= 40_000, "transfer did not progress")
    r.link.set_profile(PROFILES["lan"])  # the retry need not be slow
    r.proc.power_cycle()  # kill -9, power on again
    assert r.proc.expect("running", WAIT).fields["slot"] == 0  # boot config not switched
    r.proc.expect("switch_ok", WAIT)  # the retained message, received again
    assert r.proc.expect("running", WAIT).fields["slot"] == 1


def test_power_loss_standard_write_current_slot_quirk_bricks(proc_rig) -> None:
    r = proc_rig("--write-current-slot", mode="standard")
    r.publish(standard_package(r.app))
    r.proc.expect("ota_write", WAIT)  # overwriting rom0, the slot it runs from
    wait_for(lambda: r.payload_bytes_sent() >= 40_000, "transfer did not progress")
    r.proc.power_cycle()
    # rom0 now holds the head of the new image and the tail of the old one: it must not start
    first = r.proc.expect(["Fatal exception", "No good rom available", "running"], WAIT)
    assert first.event != "running", f"a half-overwritten slot booted: {first.line!r}"
