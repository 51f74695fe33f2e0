"""Helpers for the virtual board tests: flash files, firmware, packages and a captured console.

Import with ``from board_helpers import ...``.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from otalib.board.console import ConsoleParser
from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.device import Device
from otalib.board.sim.flash import TWO_ROM_LAYOUT, FlashImage, Layout
from otalib.board.sim.sming_console import SmingConsole
from otalib.firmware.demo import make_demo_image
from otalib.formats.ota import Rom, build_ota
from otalib.formats.package import pack
from otalib.keys import DeviceKeys, LabKey

APP = "test"
#: Build timestamp (ms since 1900) of the firmware a test board starts with.
T_RUNNING = 3_900_000_000_000
KEY = LabKey.from_bytes(bytes(range(64)), "test")
OTHER_KEY = LabKey.from_bytes(bytes(range(1, 65)), "other")


def firmware(
    version: str, *, timestamp: int = T_RUNNING, patch: int | None = None, size: int | None = 6000, app_id: str = APP
) -> bytes:
    """A real ESP8266 image carrying app id, version, build timestamp and patch."""
    seed = sum(map(ord, version))
    return make_demo_image("esp8266", app_id, version, size=size, seed=seed, build_timestamp=timestamp, patch=patch)


def make_flash(
    path: Path, version: str = "4.3.5", *, layout: Layout = TWO_ROM_LAYOUT, timestamp: int = T_RUNNING, **kw
) -> FlashImage:
    """A new flash file with ``version`` in rom0 and rBoot's config selecting rom0."""
    flash = FlashImage(path, layout)
    flash.write_slot(0, firmware(version, timestamp=timestamp, **kw))
    flash.write_boot_config(flash.default_boot_config())
    return flash


def signed_package(
    version: str,
    patch: int,
    *,
    key: LabKey = KEY,
    timestamp: int = T_RUNNING + 1000,
    encrypted: bool = False,
    image: bytes | None = None,
    varint: bool = True,
    address: int = 0x8000,
    app_id: str = APP,
) -> bytes:
    """A package of a signed (optionally encrypted) ``.ota`` with one ROM."""
    image = image if image is not None else firmware(version, timestamp=timestamp, patch=patch, app_id=app_id)
    ota = build_ota([Rom(address, image)], key, signed=True, encrypted=encrypted, timestamp=timestamp)
    return pack(ota, patch, varint)


def standard_package(version: str, patch: int, *, varint: bool = True, **kw) -> bytes:
    """A standard-mode package: the raw image."""
    return pack(firmware(version, patch=patch, **kw), patch, varint)


class CapturedConsole:
    """A SmingConsole whose output is kept as text and parsed lines."""

    def __init__(self, debug_level: int = 3) -> None:
        self.text: list[str] = []
        self.console = SmingConsole(self.text.append, debug_level)

    @property
    def output(self) -> str:
        return "".join(self.text)

    def events(self) -> list:
        parser = ConsoleParser()
        lines = self.output.replace("\r", "").split("\n")
        return [parser.parse(line, 0.0) for line in lines if line.strip()]

    def event_names(self) -> list[str]:
        return [e.event for e in self.events() if e.event]

    def clear(self) -> None:
        self.text.clear()


def make_device(
    flash: FlashImage, *, mode: str = "advanced", key: LabKey | None = KEY, **kw
) -> tuple[Device, CapturedConsole]:
    """A device built for ``mode`` (``build_timestamp`` and the other keywords are DeviceBuild's)."""
    level = kw.pop("debug_level", 3)
    captured = CapturedConsole(level)
    keys = DeviceKeys(key.verify_key if key else None, kw.pop("decrypt", None))
    if "build_timestamp" in kw:
        kw["firmware_timestamp"] = kw.pop("build_timestamp")
    build = DeviceBuild(keys=keys, advanced=mode == "advanced", app_id=APP, version="4.3.0", **kw)
    device = Device(flash, build, console=captured.console, debug_level=level)
    return device, captured


def deliver(device: Device, message: bytes, chunk: int = 1390):
    """Feed one MQTT message to the device in ``chunk``-byte pieces; return the UpdateResult."""
    device.on_message_start(len(message))
    for offset in range(0, len(message), chunk):
        device.on_message_data(message[offset : offset + chunk])
    return device.on_message_end()


#: Keywords of a device's build (the rest of a VirtualBoard's keywords are its wiring).
_BUILD_NAMES = {f.name for f in fields(DeviceBuild)}
_RENAMED = {"build_timestamp": "firmware_timestamp", "patch": "current_patch"}


def split_build(kw: dict, **defaults) -> tuple[DeviceBuild, dict]:
    """Keywords in the old flat style -> (the DeviceBuild, the wiring keywords).

    ``mode`` is ``standard``/``advanced``; the layout is the Host emulator's unless given
    (the flash files of these tests are made by :func:`make_flash` in that layout).
    """
    given = {**defaults, **kw}
    given.setdefault("layout", TWO_ROM_LAYOUT)
    build: dict = {}
    if "mode" in given:
        build["advanced"] = given.pop("mode") == "advanced"
    for name in list(given):
        target = _RENAMED.get(name, name)
        if target in _BUILD_NAMES:
            value = given.pop(name)
            if value is not None:
                build[target] = value
    return DeviceBuild(**build), given


#: A debug line's microseconds: the only thing a board's console may print differently from one run to the next.
MICROSECONDS = re.compile(r"^\d+ ", re.MULTILINE)


def spy_on_bulk_steps(monkeypatch) -> list[int]:
    """Count :meth:`Device.on_segments` calls: the list gets each call's number of segments."""
    steps: list[int] = []
    on_segments = Device.on_segments

    def counted(self, data, sizes, wires):
        steps.append(len(sizes))
        return on_segments(self, data, sizes, wires)

    monkeypatch.setattr(Device, "on_segments", counted)
    return steps
