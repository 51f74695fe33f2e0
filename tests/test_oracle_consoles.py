"""The virtual board against the real Sming 6.1.1 sample (recordings in tests/consoles/oracle-6.1.1).

Each recorded case is rendered on the virtual board (real Mosquitto, the board's own MQTT
client with the Host build's 1390-byte TCP segments) with packages made by otalib to the
case line's description (versions, patches, ROM sizes, build timestamps; another key).
The update section of each boot (from after the broker's CONNACK/SUBACK to the message's
last TCP segment) must equal the recorded one line by line once every number is masked,
and the monitor must read the same events from both.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from board_helpers import make_flash

from otalib.board.console import ConsoleParser, OutcomeTracker
from otalib.board.protocol import ConsoleLine
from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.flash import LayoutName
from otalib.board.virtual import VirtualBoard
from otalib.broker import find_mosquitto
from otalib.firmware.demo import make_demo_image
from otalib.formats.ota import Rom, build_ota
from otalib.formats.package import pack
from otalib.keys import DeviceKeys, LabKey
from otalib.mqtt.publish import deploy
from otalib.mqtt.wire import encode_varint
from otalib.vocabulary import Outcome

pytestmark = [
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed"),
    pytest.mark.timeout(300),
]

ORACLE = Path(__file__).parent / "consoles" / "oracle-6.1.1"
TOPIC = "a/test/u/4.3"
WAIT = 30.0
HOST_MSS = 1390  # the Host emulator's segments in the recordings
KEY = LabKey.from_bytes(bytes(range(7, 71)), "oracle")

# build timestamps (ms since 1900): the device prints their low 32 bits; these are 2026-11-28
HIGH = 932 << 32
T_FIRMWARE = HIGH | 1959018643  # the signing-only firmware
T_FIRMWARE_SE = HIGH | 1959058904  # the signing + encryption firmware
T_A1, T_A2, T_A8 = HIGH | 1959091332, HIGH | 1959132412, HIGH | 1960052317
ROM_SIZE = 0x4D914  # `Update slot rom1 [0x00108000..0x00155914)`
ROM_SIZE_SE = 0x4F938  # `…..0x00157938)`
STD_SIZE = 280852


def _rom(size: int, patch: int, timestamp: int, seed: int = 1) -> bytes:
    """A demo ESP8266 image padded to exactly ``size`` bytes (the recorded ROM's size)."""
    image = make_demo_image("esp8266", "test", f"4.3.{patch}", size=size - 64, seed=seed, build_timestamp=timestamp)
    assert len(image) <= size
    return image + b"\xff" * (size - len(image))


#: The recorded a1.sdp carries a Host build's ROM, not an ESP image. Read as an encrypted file (A10),
#: a plain file's first ROM bytes are the length of the first secretstream chunk, which decides
#: where the decryption fails: in the recording, during the 13th segment. Our ROM for a1.sdp starts
#: with a length that fails there too (0x4367 + 1 bytes from file offset 26).
HOST_ROM_HEAD = (0x4367).to_bytes(2, "little")


def _signed(
    patch: int, timestamp: int, *, encrypted: bool = False, roms: tuple[int, ...] = (0x8000,), head: bytes = b""
) -> bytes:
    size = ROM_SIZE_SE if encrypted else ROM_SIZE
    images = [_rom(size, 2, timestamp, seed=i + 1) for i in range(len(roms))]
    images[0] = head + images[0][len(head) :]
    rom_list = [Rom(address, image) for address, image in zip(roms, images, strict=True)]
    return pack(build_ota(rom_list, KEY, signed=True, encrypted=encrypted, timestamp=timestamp), patch)


def _flipped(package: bytes, offset: int = 5000) -> bytes:
    data = bytearray(package)
    data[offset] ^= 0x01
    return bytes(data)


@dataclass
class Case:
    """One recording: the firmware the board runs and the package it receives."""

    name: str
    package: bytes
    sdp_size: int
    initial_patch: int = 1
    mode: str = "advanced"
    encrypting: bool = False
    boots: int = 1
    lines: list[str] = field(default_factory=list)

    @property
    def keys(self) -> DeviceKeys:
        if self.mode == "standard":
            return DeviceKeys()
        return DeviceKeys(KEY.verify_key, KEY.decrypt_key if self.encrypting else None)


def _cases() -> dict[str, Case]:
    a1 = _signed(2, T_A1, head=HOST_ROM_HEAD)
    a2 = _signed(2, T_A2, encrypted=True)
    std = pack(_rom(STD_SIZE, 2, T_A1, seed=9), 2)
    return {
        "A1": Case("A1", a1, 317805),
        "A2": Case("A2", a2, 329116, encrypting=True),
        "A3": Case("A3", _flipped(a1), 317805),
        "A5": Case("A5", _signed(2, T_FIRMWARE - 86_400_000), 317805),
        "A6": Case("A6", _signed(300, T_A1), 317806),
        "A6b": Case("A6b", _signed(300, T_A1), 317806, initial_patch=100),
        "A8": Case("A8", _signed(2, T_A8, roms=(0x8000, 0x108000)), 635529),
        "A9": Case("A9", a2, 329116),
        "A10": Case("A10", a1, 317805, encrypting=True),
        "S1": Case("S1", std, 280853, mode="standard"),
        # firmware 4.3.1 taking 4.3.1 (equal patch) at every boot
        "S2": Case("S2", pack(_rom(STD_SIZE, 1, T_A1, seed=9), 1), 280853, mode="standard", boots=3),
    }


CASES = _cases()


# -- reading consoles ----------------------------------------------------------------------------------------------


def recorded_boots(name: str) -> list[list[ConsoleLine]]:
    """The parsed lines of each boot of a recording."""
    boots: list[list[ConsoleLine]] = []
    parser = ConsoleParser()
    for i, raw in enumerate((ORACLE / f"{name}.log").read_text().split("\n")):
        if raw.startswith("----- console boot"):
            boots.append([])
        elif raw.startswith("----- end console boot"):
            continue
        elif boots:
            boots[-1].append(parser.parse(raw, i / 1000))
    return boots


def virtual_boots(lines: list[ConsoleLine]) -> list[list[ConsoleLine]]:
    """The virtual console cut at each boot banner."""
    boots: list[list[ConsoleLine]] = []
    for cl in lines:
        if cl.event == "boot":
            boots.append([])
        if boots:
            boots[-1].append(cl)
    return boots


def update_section(boot: list[ConsoleLine]) -> list[ConsoleLine]:
    """From after the broker's small control packets (CONNACK, SUBACK) to the update message's last segment."""
    body = [cl for cl in boot if cl.event != "thread"]  # the Host emulator's threads
    received = [i for i, cl in enumerate(body) if cl.event == "tcp_received"]
    message = [i for i in received if body[i].fields["length"] > 5]
    if not message:
        return []
    start = max(i for i in received if i < message[0]) + 1
    return body[start : message[-1] + 2]  # with the last segment's onReadyToSendData


def mask(line: str) -> str:
    """A console line with every number masked (and the signature bytes, which depend on the key)."""
    line = re.sub(r"Signature/Checksum: .*", "Signature/Checksum: #", line)
    return re.sub(r"(?:0x)?[0-9a-fA-F]*[0-9][0-9a-fA-F]*", "#", line)


def events(section: list[ConsoleLine]) -> list[tuple[str, dict]]:
    """The monitor's events of a section, with the fields that do not depend on timing or segmentation."""
    keep = {"error", "slot", "start", "end", "count", "from_slot", "to_slot", "timestamp"}
    return [
        (cl.event, {k: v for k, v in cl.fields.items() if k in keep})
        for cl in section
        if cl.event is not None and cl.event not in ("tcp_received", "ota_write")
    ]


def tracker_outcome(boot: list[ConsoleLine]) -> Outcome | None:
    tracker = OutcomeTracker()
    for cl in boot:
        tracker.feed(cl)
    return tracker.outcome


# -- rendering on the virtual board --------------------------------------------------------------------------------


def publish_length(payload: int) -> int:
    """Bytes of the QoS 0 PUBLISH (fixed header, topic, payload) the device receives."""
    remaining = 2 + len(TOPIC) + payload
    return 1 + len(encode_varint(remaining)) + remaining


def render(case: Case, broker, tmp_path: Path) -> list[ConsoleLine]:
    """The virtual board's console while it takes ``case``'s package ``case.boots`` times."""
    url = f"{broker.url}/{TOPIC}"
    deploy(None, url, clear=True)
    timestamp = T_FIRMWARE_SE if case.encrypting else T_FIRMWARE
    make_flash(tmp_path / "flash.bin", f"4.3.{case.initial_patch}", timestamp=timestamp, app_id="test").close()
    board = VirtualBoard(
        tmp_path / "flash.bin",
        broker.url,
        # the Host emulator's build and layout: the recordings were made there
        DeviceBuild(
            keys=case.keys,
            advanced=case.mode == "advanced",
            app_id="test",
            version=f"4.3.{case.initial_patch}",
            layout=LayoutName.HOST,
        ),
        tcp_mss=HOST_MSS,
        restart_delay=0.2 if case.boots > 1 else 60.0,
    )
    board.start()
    try:
        board.expect("subscribed", WAIT)
        deploy(case.package, url)
        want, got, cursor = publish_length(len(case.package)), 0, 0
        done = 0
        deadline = time.monotonic() + WAIT * case.boots
        while done < case.boots:  # every byte of each boot's message received (and processed)
            line, cursor = board.line_at(cursor, max(0.0, deadline - time.monotonic()))
            if line is None:
                tail = "\n".join(cl.line for cl in board.history()[-15:])
                raise AssertionError(f"the message did not arrive: {got} of {want} bytes in boot {done + 1}:\n{tail}")
            if line.event == "tcp_received" and line.fields["length"] > 5:
                got += line.fields["length"]
                if got >= want:
                    done, got = done + 1, 0
    finally:
        board.stop()
        deploy(None, url, clear=True)
    return board.history()


def test_every_oracle_recording_is_a_case() -> None:
    assert {p.stem for p in ORACLE.glob("*.log")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_virtual_board_prints_what_the_real_sample_printed(name: str, broker, tmp_path) -> None:
    case = CASES[name]
    header = next(line for line in (ORACLE / f"{name}.log").read_text().split("\n") if line.startswith("## case:"))
    assert f"({case.sdp_size} bytes)" in header and len(case.package) == case.sdp_size  # the same package sizes
    real_boots = recorded_boots(name)
    virtual = virtual_boots(render(case, broker, tmp_path))
    assert len(real_boots) == case.boots and len(virtual) >= case.boots
    for number, (real, ours) in enumerate(zip(real_boots, virtual[: case.boots], strict=True), 1):
        real_section, our_section = update_section(real), update_section(ours)
        assert real_section, f"boot {number}: no update section in the recording"
        want = [mask(cl.line) for cl in real_section]
        got = [mask(cl.line) for cl in our_section]
        diff = "\n".join(difflib.unified_diff(want, got, "recorded", "virtual", lineterm="", n=2))
        assert got == want, f"{name} boot {number}:\n{diff[:4000]}"
        if name == "S2" and number > 1:
            # the Host boot loader ignores ROM content and boots the blank slot the sample switched to;
            # an ESP8266's rBoot finds it bad and falls back, so the slots in `Swapping …` differ
            assert [e for e, _ in events(our_section)] == [e for e, _ in events(real_section)]
        else:
            assert events(our_section) == events(real_section)
        assert tracker_outcome(real) == tracker_outcome(ours)
        # the network and MQTT evidence is there before the update: online, connecting, subscribed
        evidence = ("network_up", "connecting", "tcp_connect", "subscribing", "subscribed", "tcp_connected")
        in_order = [[cl.event for cl in boot if cl.event in evidence] for boot in (real, ours)]
        assert in_order[1] == in_order[0] == list(evidence), "the network lines, in the device's order"
