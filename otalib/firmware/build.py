"""Run a firmware project's own build and find the ROM images it produced.

The Sming framework builds with ``make`` and takes the application version as
make variables (``make APP_VERSION=4.3 APP_VERSION_PATCH=5``); its images land
in ``out/<arch>/<config>/firmware/`` (``rom0.bin`` for ESP8266, which serves
both slots through rBoot's big-flash mapping, ``app.bin`` for ESP32). Slot addresses
come from a partition table found in the firmware folder (Sming's ``partitions.bin``
or a hardware-config JSON), else from the default layouts (protocol.md §4).

make rebuilds only what changed on disk, and Sming compiles ``APP_VERSION_PATCH``
into the sources that use it: so that a new version reaches the firmware,
:func:`run_build` touches those sources first (:func:`touch_version_users`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otalib import procs
from otalib.errors import BuildError, ImageError, InputError, UsageError
from otalib.firmware.image import ImageInfo, inspect_image, is_esp_image

#: Default slot addresses when the firmware folder has no partition table.
DEFAULT_ADDRESSES: dict[str, dict[str, int]] = {
    "esp8266": {"rom0": 0x2000, "rom1": 0x102000},  # a real ESP8266 (Sming's spiffs-two-roms)
    "host": {"rom0": 0x8000, "rom1": 0x108000},  # Sming's Host emulator
    "esp32": {"app": 0x10000, "factory": 0x10000, "ota_0": 0x10000},
}
#: Programs that take ``NAME=value`` arguments as make variables.
MAKE_PROGRAMS = ("make", "gmake", "mingw32-make")
LOG_TAIL_LINES = 40
DEMO_HINT = "otalab image demo --chip esp8266 --app-id test --version 4.3.0 -o rom0.bin"

_APP_VERSION_RE = re.compile(r"^\d+\.\d+$")
_TOOLCHAIN_MISSING_RE = re.compile(
    r"(xtensa-\S+|riscv32-\S+|esptool\S*)(: not found|: command not found|: No such file or directory)"
    r"|\b(SMING_HOME|ESP_HOME|IDF_PATH)\b.*\b(not set|undefined|not defined|invalid)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RomFile:
    """A ROM image found in a build's firmware folder and the flash slot it belongs to."""

    path: Path
    slot: str
    address: int | None
    arch: str = ""
    config: str = ""
    address_source: str = "default"  # "partitions" | "default" | "unknown"
    info: ImageInfo | None = None
    #: Every slot this file is flashed to, ``(name, address)``; the first is ``slot``/``address``.
    slots: tuple[tuple[str, int | None], ...] = ()
    error: str | None = None  # why the image could not be read

    @property
    def all_slots(self) -> tuple[tuple[str, int | None], ...]:
        return self.slots or ((self.slot, self.address),)

    def image_facts(self) -> dict[str, Any] | None:
        """Chip, format, entry, size, SHA-256 of the file, segments, checksum, app (if marked)."""
        info = self.info
        if info is None:
            return None
        return {
            "chip": info.chip,
            "format": info.format.value,
            "entry": info.entry,
            "entry_hex": f"{info.entry:#010x}",
            "size": info.size,
            "sha256": info.file_sha256,
            "segments": len(info.segments),
            "valid": info.valid,
            "checksum_valid": info.checksum_valid,
            "app_id": info.app_id,
            "app_version": info.app_version,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "slot": self.slot,
            "address": self.address,
            "address_hex": f"{self.address:#x}" if self.address is not None else None,
            "address_source": self.address_source,
            "slots": [
                {"slot": name, "address": addr, "address_hex": f"{addr:#x}" if addr is not None else None}
                for name, addr in self.all_slots
            ],
            "arch": self.arch,
            "config": self.config,
            "image": self.image_facts(),
            "image_error": self.error,
        }


@dataclass
class BuildResult:
    """What a build run did: the command, its exit status, the ROMs found and the end of its log."""

    command: list[str]
    returncode: int
    roms: list[RomFile] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    toolchain_missing: bool = False
    #: Sources touched before the build so that the version variables reach the firmware.
    recompiled: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "returncode": self.returncode,
            "ok": self.ok,
            "duration_s": round(self.duration_s, 3),
            "toolchain_missing": self.toolchain_missing,
            "recompiled": [str(p) for p in self.recompiled],
            "roms": [rom.to_dict() for rom in self.roms],
            "log_tail": self.log_tail,
        }


def check_app_version(version: str) -> str:
    """``MAJOR.MINOR`` (the framework's ``APP_VERSION``), else :class:`UsageError`."""
    if not _APP_VERSION_RE.match(str(version)):
        raise UsageError(f"bad app version {version!r}: expected MAJOR.MINOR, e.g. 4.3")
    return str(version)


def check_patch(patch: int | str) -> int:
    """A non-negative patch number (``APP_VERSION_PATCH``), else :class:`UsageError`."""
    try:
        value = int(str(patch), 10)
    except ValueError:
        raise UsageError(f"bad patch {patch!r}: expected a non-negative integer") from None
    if value < 0:
        raise UsageError(f"bad patch {patch!r}: expected a non-negative integer")
    return value


def build_command(command: str, app_version: str | None, patch: int | None) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of a build: variables go to both (as make arguments for make)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"bad build command {command!r}: {exc}") from None
    if not argv:
        raise UsageError("empty build command")
    variables: dict[str, str] = {}
    if app_version is not None:
        variables["APP_VERSION"] = check_app_version(app_version)
    if patch is not None:
        variables["APP_VERSION_PATCH"] = str(check_patch(patch))
    if Path(argv[0]).name in MAKE_PROGRAMS:
        argv += [f"{name}={value}" for name, value in variables.items()]
    return argv, variables


def no_toolchain_message(program: str) -> str:
    """The one line said when the build program does not exist."""
    return (
        f"no firmware toolchain found (`{program}` is not installed); "
        f"for a demo image without a toolchain use: {DEMO_HINT}"
    )


def run_build(
    project: Path | str,
    command: str = "make",
    app_version: str | None = None,
    patch: int | None = None,
    *,
    timeout: float | None = None,
) -> BuildResult:
    """Run the project's own build in ``project`` and return what it did and the ROMs it left.

    A missing build program raises :class:`BuildError` (one line, pointing to
    ``otalab image demo``); a failing build is a result with a non-zero
    ``returncode`` and the end of its log.
    """
    folder = Path(project)
    if not folder.is_dir():
        raise InputError(f"no such project folder: {folder}")
    argv, variables = build_command(command, app_version, patch)
    recompiled = touch_version_users(folder, variables)
    env = {**os.environ, **variables}
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    missing = False
    started = time.monotonic()
    try:
        proc = procs.popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise BuildError(no_toolchain_message(argv[0])) from None
    except PermissionError:
        raise BuildError(f"build command is not executable: {argv[0]}") from None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            missing = missing or bool(_TOOLCHAIN_MISSING_RE.search(line))
            if timeout is not None and time.monotonic() - started > timeout:
                proc.kill()
                raise BuildError(f"build timed out after {timeout:g} s: {shlex.join(argv)}")
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BuildError(f"build timed out after {timeout:g} s: {shlex.join(argv)}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    duration = time.monotonic() - started
    if returncode == 127:
        missing = True
    return BuildResult(
        command=argv,
        returncode=returncode,
        roms=find_roms(folder),
        log_tail=list(tail),
        duration_s=duration,
        toolchain_missing=missing,
        recompiled=recompiled,
    )


# --------------------------------------------------------------------------- version variables

#: Source files that may compile the version in (make tracks their dates, not the variables).
SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".ino")
_SOURCE_LIMIT = 1 << 20  # larger files are not sources of an application
_SKIP_DIRS = {"out", "build", "node_modules", "__pycache__"}


def version_users(project: Path, names: Iterable[str]) -> list[Path]:
    """The project's source files that mention one of the variables ``names`` (outside ``out/``)."""
    needles = [name.encode() for name in names]
    found: list[Path] = []
    if not needles:
        return found
    for root, dirs, files in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() not in SOURCE_SUFFIXES:
                continue
            try:
                if path.stat().st_size > _SOURCE_LIMIT:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if any(needle in data for needle in needles):
                found.append(path)
    return found


def touch_version_users(project: Path, variables: dict[str, str]) -> list[Path]:
    """Touch the sources that use the given version variables, so make recompiles them.

    Sming passes ``APP_VERSION``/``APP_VERSION_PATCH`` as compiler defines, and make
    only rebuilds what is older than its sources: without this, a new patch would
    silently never reach the image (only ``BuildTimestamp.cpp`` is always rebuilt).
    """
    touched = version_users(project, variables)
    for path in touched:
        try:
            os.utime(path)
        except OSError as exc:
            raise BuildError(f"cannot touch {path} (it compiles in the version): {exc.strerror or exc}") from None
    return touched


# --------------------------------------------------------------------------- ROMs and partitions


def _chip_of_arch(arch: str) -> str:
    name = arch.lower()
    if name.startswith("esp8266"):
        return "esp8266"
    if name.startswith("esp32"):
        return "esp32"
    if name.startswith("host"):
        return "host"
    return name


def read_partition_table(data: bytes) -> dict[str, int]:
    """{label: offset} of the app partitions in an ESP-IDF/Sming binary partition table."""
    from otalib.firmware.partitions import app_partitions

    return app_partitions(data)


def _parse_int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def read_partitions_json(data: Any) -> dict[str, tuple[int, str | None]]:
    """{name: (address, filename)} from a Sming hardware-config JSON (``{"partitions": {...}}``)."""
    partitions = data.get("partitions") if isinstance(data, dict) else None
    found: dict[str, tuple[int, str | None]] = {}
    if isinstance(partitions, dict):
        items = list(partitions.items())
    elif isinstance(partitions, list):
        items = [(p.get("name", ""), p) for p in partitions if isinstance(p, dict)]
    else:
        return found
    for name, spec in items:
        if not isinstance(spec, dict):
            continue
        address = _parse_int(spec.get("address", spec.get("offset")))
        if address is None or not name:
            continue
        filename = spec.get("filename")
        found[str(name)] = (address, Path(filename).name if isinstance(filename, str) and filename else None)
    return found


def _folder_partitions(folder: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """(address by slot name, slot names by ROM file name) from partition files in ``folder``."""
    addresses: dict[str, int] = {}
    by_file: dict[str, list[str]] = {}
    for table in sorted(folder.glob("partitions*.bin")):
        try:
            addresses.update(read_partition_table(table.read_bytes()))
        except OSError:
            continue
    for config in sorted(folder.glob("*.json")):
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        for name, (address, filename) in read_partitions_json(data).items():
            addresses[name] = address
            if filename and name not in by_file.setdefault(filename, []):
                by_file[filename].append(name)
    return addresses, by_file


def _is_rom_candidate(path: Path) -> bool:
    stem = path.stem.lower()
    if "boot" in stem or "partition" in stem or stem.startswith(("esp_init", "blank", "spiff", "fwfs", "lfs")):
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return is_esp_image(head)


def find_roms(project: Path | str) -> list[RomFile]:
    """The ROM images in ``project/out/<arch>/<config>/firmware/`` with every slot each one serves.

    A slot's file is named by a hardware-config JSON, else is ``<slot>.bin``; on an
    ESP8266 the slots left without a file of their own take the first ROM (rBoot maps
    the same ``rom0.bin`` into either slot, and Sming flashes it to both).
    """
    out = Path(project) / "out"
    if not out.is_dir():
        return []
    roms: list[RomFile] = []
    for firmware in sorted(p for p in out.glob("**/firmware") if p.is_dir()):
        parts = firmware.relative_to(out).parts[:-1]
        arch = parts[0] if parts else ""
        config = "/".join(parts[1:])
        chip = _chip_of_arch(arch)
        addresses, by_file = _folder_partitions(firmware)
        defaults = DEFAULT_ADDRESSES.get(chip, {})
        files = [p for p in sorted(firmware.glob("*.bin")) if p.is_file() and _is_rom_candidate(p)]
        served = {path: by_file.get(path.name) or [path.stem] for path in files}
        if chip in ("esp8266", "host") and files:
            known = {slot for slots in served.values() for slot in slots}
            first = next((p for p in files if "rom0" in served[p]), files[0])
            slots = list(addresses) if addresses else list(defaults)
            served[first] += [slot for slot in slots if slot not in known and slot.startswith("rom")]
        for path in files:
            located = []
            for slot in served[path]:
                address, source = addresses.get(slot), "partitions"
                if address is None:
                    address = defaults.get(slot)
                    source = "default" if address is not None else "unknown"
                located.append((slot, address, source))
            info, error = _read_image(path)
            slot, address, source = located[0]
            roms.append(
                RomFile(
                    path,
                    slot,
                    address,
                    arch,
                    config,
                    source,
                    info,
                    tuple((name, addr) for name, addr, _ in located),
                    error,
                )
            )
    return roms


def _read_image(path: Path) -> tuple[ImageInfo | None, str | None]:
    try:
        return inspect_image(path.read_bytes()), None
    except ImageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
