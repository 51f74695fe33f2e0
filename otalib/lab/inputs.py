"""What a campaign signs with and publishes: the board's key and its firmware.

A campaign spec may name them (paths relative to the spec file)::

    key: ota.key                  # else --key, else OTA_KEY of the lab configuration (real boards)
    roms: [rom0.bin@0x2000]       # ROM files to publish, FILE@ADDRESS ...
    firmware: {patch: 7, build_timestamp: 4004872437378}   # ... built at APP_VERSION_PATCH 7
    # or a firmware project built with `otalab build` (APP_VERSION_PATCH = firmware.patch):
    # firmware: {project: ../app, patch: 7, command: make}
    allow_demo_image: false       # otalab's demo images onto a real board only if true

The published firmware has one patch (``firmware.patch``, or ``fixed.patch`` for ROM files)
and one build timestamp: ``firmware.build_timestamp``, else the newest ROM file's modification
time (the build wrote it after compiling its own timestamp in), never "now", which would call a
later-built firmware on the board a downgrade. Virtual boards take otalab's demo images and a
fresh key unless given these; a real board (a serial port or ``rfc2217://`` URL) refuses demo
images unless ``allow_demo_image``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otalib.errors import BuildError, LabError, OtaLabError
from otalib.fileio import read_input
from otalib.formats.ota import ADDRESS_MASK, Rom, build_ota, timestamp_from_datetime, timestamp_to_datetime
from otalib.formats.package import pack
from otalib.keys import LabKey, load_key
from otalib.update import Update
from otalib.vocabulary import UpdateMode

if TYPE_CHECKING:
    from otalib.board.sim.flash import Layout
    from otalib.config import LabConfig
    from otalib.lab.campaign import CampaignSpec

#: Keys of a spec's ``firmware:`` mapping.
FIRMWARE_KEYS = ("roms", "project", "command", "patch", "build_timestamp")
#: A ROM image published to a board is at most this big (a 16 MiB flash).
MAX_ROM_BYTES = 16 << 20


_KEY_MATERIAL_RE = re.compile(r"\s*[0-9a-fA-F]{32,}\s*")


def check_key_path(text: str, what: str) -> str:
    """``text`` if it may be a key file's path; :class:`LabError` (without the text) if it looks
    like key material pasted in its place, which must never reach a message or a run's metadata."""
    if _KEY_MATERIAL_RE.fullmatch(text):
        raise LabError(f"{what} looks like key material, not a key file's path (not shown): give the file's path")
    return text


def is_real_board(board: str) -> bool:
    """True for a serial port or ``rfc2217://`` URL, False for the virtual board."""
    return board != "virtual"


def parse_rom_spec(text: Any) -> tuple[str, int]:
    """``FILE@ADDRESS`` (address decimal or ``0x`` hex) as ``(file, address)``; :class:`LabError` otherwise."""
    file, sep, address = str(text).rpartition("@") if isinstance(text, str) else ("", "", "")
    try:
        value = int(address, 16) if address.lower().startswith("0x") else int(address, 10)
    except ValueError:
        value = -1
    if not sep or not file or not 0 <= value < 1 << 32:
        raise LabError(f"bad ROM {text!r}: expected FILE@ADDRESS, e.g. rom0.bin@0x2000")
    return file, value


@dataclass(frozen=True)
class FirmwareRom:
    """One ROM file of the published firmware and its flash address."""

    path: Path
    address: int
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Firmware:
    """The firmware a campaign publishes: its ROMs, patch and build timestamp (ms since 1900)."""

    roms: tuple[FirmwareRom, ...]
    patch: int
    build_timestamp: int
    source: str
    timestamp_source: str

    def update(self, mode: UpdateMode, key: LabKey | None, *, patch: int, varint: bool = True) -> Update:
        """The package of this firmware in ``mode``: the raw ROM (standard) or an OTA file of every ROM."""
        if mode is UpdateMode.STANDARD:
            return Update(mode, patch, varint, pack(self.roms[0].data, patch, varint))
        if mode.needs_key and key is None:
            raise LabError(f"mode {mode.value!r} needs the board's key")
        roms = [Rom(rom.address, rom.data) for rom in self.roms]
        ota = build_ota(roms, key, signed=mode.signed, encrypted=mode.encrypted, timestamp=self.build_timestamp)
        return Update(mode, patch, varint, pack(ota, patch, varint), ota, self.build_timestamp)

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for a run's metadata (no secret)."""
        return {
            "source": self.source,
            "patch": self.patch,
            "build_timestamp": self.build_timestamp,
            "build_time": timestamp_to_datetime(self.build_timestamp).isoformat(timespec="milliseconds"),
            "build_timestamp_source": self.timestamp_source,
            "roms": [
                {"file": str(rom.path), "address": f"{rom.address:#x}", "size": len(rom.data), "sha256": rom.sha256}
                for rom in self.roms
            ],
        }


@dataclass(frozen=True)
class BenchInputs:
    """The key and firmware a campaign's bench uses (``None`` firmware: otalab's demo images)."""

    key: LabKey | None
    key_source: str
    firmware: Firmware | None
    allow_demo_image: bool = False

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for a run's metadata: the key's fingerprint and source, never the key."""
        return {
            "key": {
                "source": self.key_source,
                "verify_key_sha256": hashlib.sha256(self.key.verify_key).hexdigest() if self.key else None,
            },
            "firmware": self.firmware.describe() if self.firmware else "otalib demo images (esp8266), one per trial",
            "allow_demo_image": self.allow_demo_image,
        }


def read_roms(specs: list[tuple[Path, int]]) -> tuple[FirmwareRom, ...]:
    """Read each ROM file (one clear :class:`LabError` if one is missing, empty or too big)."""
    roms = []
    for path, address in specs:
        try:
            data = read_input(path, "ROM file", MAX_ROM_BYTES)
        except OtaLabError as exc:
            raise LabError(str(exc)) from None
        if not data:
            raise LabError(f"ROM file {path} is empty")
        roms.append(FirmwareRom(path, address, data))
    return tuple(roms)


def newest_mtime_timestamp(paths: list[Path]) -> int:
    """The build timestamp (ms since 1900) of the newest of ``paths`` by modification time."""
    newest = max(path.stat().st_mtime for path in paths)
    return timestamp_from_datetime(datetime.fromtimestamp(newest, timezone.utc))


def build_firmware(project: Path, command: str, app_version: str, patch: int) -> list[tuple[Path, int]]:
    """Run ``otalab build`` of ``project`` at ``app_version``/``patch``; its ROM files and addresses."""
    from otalib.firmware.build import run_build

    result = run_build(project, command, app_version, patch)
    if not result.ok:
        raise BuildError(f"firmware build failed (exit {result.returncode}): {' '.join(result.command)}")
    found: dict[Path, int] = {}
    for rom in result.roms:
        if rom.address is not None and rom.error is None:
            found.setdefault(rom.path, rom.address)
    if not found:
        raise BuildError(f"the build of {project} left no ROM image with a known flash address")
    return sorted(found.items(), key=lambda item: item[1])


def virtual_layout(firmware: Firmware | None) -> Layout | None:
    """The virtual board's flash layout whose slots the firmware's ROMs go to (by ``address & 0xFFFFF``);
    None (the chip's default) for otalab's demo images."""
    from otalib.board.sim.flash import ESP8266_LAYOUT, HOST_LAYOUT

    if firmware is None:
        return None
    wanted = {rom.address & ADDRESS_MASK for rom in firmware.roms}
    for layout in (ESP8266_LAYOUT, HOST_LAYOUT):
        if wanted & {addr & ADDRESS_MASK for addr in layout.roms}:
            return layout
    addresses = ", ".join(f"{rom.address:#x}" for rom in firmware.roms)
    raise LabError(f"ROM address(es) {addresses} fit no slot of a virtual board (esp8266 0x2000, host 0x8000)")


def prepare_inputs(spec: CampaignSpec, config: LabConfig | None = None) -> BenchInputs:
    """Load the key and read (or build) the firmware ``spec`` names; check them against its trials.

    Runs before anything of the campaign starts (no broker, no run directory). A real board
    whose trials sign or encrypt takes ``OTA_KEY`` of the lab configuration when the spec
    names no key; a virtual board takes a fresh key.
    """
    trials = spec.trials()
    real = sorted({t.board for t in trials if is_real_board(t.board)})
    key, key_source = _load_key(spec, trials, real, config)
    firmware = _firmware(spec, trials, config)
    if firmware is not None and any(not is_real_board(t.board) for t in trials):
        virtual_layout(firmware)  # the virtual board can take it
    return BenchInputs(key, key_source, firmware, spec.allow_demo_image)


def _load_key(spec: CampaignSpec, trials: list, real: list[str], config: LabConfig | None) -> tuple[LabKey | None, str]:
    if spec.key is not None:
        path = spec.resolve_path(spec.key)
        try:
            return load_key(path), f"key {path}"
        except OtaLabError as exc:
            raise LabError(f"campaign key: {exc}") from None
    if any(is_real_board(t.board) and t.mode.needs_key for t in trials):
        from otalib.config import load_config

        config = config or load_config()
        check_key_path(config.OTA_KEY, f"OTA_KEY ({config.source})")
        try:
            return load_key(Path(config.OTA_KEY).expanduser()), f"OTA_KEY {config.OTA_KEY} ({config.source})"
        except OtaLabError as exc:
            raise LabError(
                f"the real board {real[0]} needs its key for signed/encrypted trials "
                f"(key: in the spec, --key, or OTA_KEY): {exc}"
            ) from None
    return LabKey.generate(), "generated (a fresh key per campaign)"


def _firmware(spec: CampaignSpec, trials: list, config: LabConfig | None) -> Firmware | None:
    given = spec.firmware_spec()
    if given is None:
        return None
    patch = given.get("patch")
    if patch is None:
        patch = next((t.patch for t in trials if t.patch is not None), None)
    if patch is None and "project" in given:
        from otalib.config import load_config

        patch = (config or load_config()).APP_VERSION_PATCH
    if patch is None:
        raise LabError("firmware.project: give firmware.patch (or APP_VERSION_PATCH in the lab configuration)")
    if "project" in given:
        project = spec.resolve_path(given["project"])
        major, minor, *_ = trials[0].version.split(".")
        files = build_firmware(project, given.get("command", "make"), f"{major}.{minor}", patch)
        source = f"otalab build of {project} (APP_VERSION_PATCH={patch})"
    else:
        files = [(spec.resolve_path(file), address) for file, address in map(parse_rom_spec, given["roms"])]
        source = "ROM files"
    roms = read_roms(files)
    if len(roms) > 1 and any(t.mode is UpdateMode.STANDARD for t in trials):
        raise LabError(f"standard mode publishes one raw image, and {source} gave {len(roms)} ROMs")
    stamp = given.get("build_timestamp")
    if stamp is None:
        stamp, stamp_source = newest_mtime_timestamp([rom.path for rom in roms]), "the newest ROM file's mtime"
    else:
        stamp_source = "firmware.build_timestamp"
    return Firmware(roms, patch, stamp, source, stamp_source)


def check_resume(inputs: BenchInputs, previous: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run with another firmware or key than its trials had (``previous``: its metadata).

    A run whose key was generated takes a fresh one each time (a virtual board is made per trial).
    """
    if not previous.get("sessions"):
        return
    described = inputs.describe()
    old_firmware, new_firmware = previous.get("firmware"), described["firmware"]
    if isinstance(old_firmware, dict) or isinstance(new_firmware, dict):
        old = [r.get("sha256") for r in old_firmware.get("roms", [])] if isinstance(old_firmware, dict) else None
        new = [r["sha256"] for r in new_firmware["roms"]] if isinstance(new_firmware, dict) else None
        if old != new:
            shown = ", ".join(h[:12] for h in new) if new else "otalab's demo images"
            raise LabError(
                f"{run_dir} was run with another firmware (now {shown}): use --new to start over "
                "(the old run is kept) or another directory"
            )
    old_key = previous.get("key") if isinstance(previous.get("key"), dict) else {}
    if inputs.key_source.startswith("generated") or str(old_key.get("source", "")).startswith("generated"):
        return
    if old_key.get("verify_key_sha256") != described["key"]["verify_key_sha256"]:
        raise LabError(
            f"{run_dir} was run with another key (verify key sha256 {str(old_key.get('verify_key_sha256'))[:12]}): "
            "use --new to start over (the old run is kept) or another directory"
        )
