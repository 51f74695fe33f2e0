"""Campaigns: a parameter grid × repeats, run trial by trial into a run directory.

A spec (YAML, JSON or a dict)::

    name: size-sweep
    repeats: 3
    fixed: {device_profile: sming-6.1, timeout_s: 60}
    grid:
      size: [64KiB, 256KiB]
      mode: [standard, signed]
      link: [lan, wifi, lte]     # lan, wifi, slow, dsl: the link proxy's profiles
    links:                       # more named link profiles (optional)
      lte: {rate_Bps: 125000, latency_ms: 40}
    build_timestamp: 4004872437378  # the virtual board's firmware build time (optional;
                                    # ms since 1900 as in the .ota header; default unknown)
    key: ota.key                    # the board's key, roms:/firmware: what to publish,
    roms: [rom0.bin@0x2000]         # allow_demo_image: see otalib.lab.inputs
    firmware: {patch: 7}
    power: "uhubctl -a cycle -p 2"  # a real board's power hook: a command, or {off: …, on: …, off_s: 2}
                                    # (power-loss trials on a real board need it)
    board_reset: rts                # a real board's fresh start per trial: rts (RTS -> EN), power, none
    seed: 7                         # faults at rates (drops:rate=0.1, ...) without their own seed= take it
    parallel: 2                     # trials run at once (virtual boards; default 1); not part of the
                                    # spec's identity: a run resumes with any parallel

The trial itself is a pluggable callable ``TrialConfig -> TrialResult``. With ``parallel: K``
(or ``run_campaign(parallel=K)``, ``otalab campaign --parallel K``) K trials run at once in threads
(:class:`~otalib.lab.trial.Bench` gives each its own board, topic and MQTT client id on the shared
broker); each finished trial is stored as it ends, so the run holds the same rows as a serial one.

A run directory belongs to one spec: its ``metadata.json`` keeps the spec and its
SHA-256 (:meth:`CampaignSpec.sha256`), a resumed run must have the same spec, and
starting over (``resume=False``, ``otalab campaign --new``) keeps the old run beside
it under another name. Nothing a campaign wrote is ever deleted; a campaign that stops
before its first trial finished removes only the run directory it created itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from otalib.errors import InputError, LabError, OtaLabError
from otalib.fileio import read_input
from otalib.lab import store
from otalib.lab.campaign_progress import CampaignProgress, campaign_progress
from otalib.lab.inputs import FIRMWARE_KEYS, check_key_path, is_real_board, parse_rom_spec
from otalib.lab.metadata import collect_metadata, utc_now
from otalib.lab.schema import TrialConfig, TrialResult, redact_url
from otalib.net.faults import is_rate_fault
from otalib.vocabulary import UpdateMode

#: A trial: runs one configuration on a board and reports what it observed.
TrialRunner = Callable[[TrialConfig], TrialResult]

#: Link profiles every spec knows (plus the link proxy's named ones); a spec's ``links:`` adds or overrides.
LINK_PROFILES: dict[str, dict[str, float]] = {"unlimited": {"rate_Bps": math.nan, "latency_ms": 0.0}}


def known_links() -> dict[str, dict[str, float]]:
    """:data:`LINK_PROFILES` and the named profiles of :mod:`otalib.net.link` (lan, wifi, ...)."""
    profiles = dict(LINK_PROFILES)
    try:
        from otalib.net.link import PROFILES
    except ImportError:  # pragma: no cover - the link proxy ships with otalib
        return profiles
    for name, link in PROFILES.items():
        rate = math.nan if link.rate_Bps is None else float(link.rate_Bps)
        profiles.setdefault(name, {"rate_Bps": rate, "latency_ms": link.latency_s * 1000.0})
    return profiles


#: Parameters a grid or ``fixed`` may set (``campaign`` and ``repeat`` come from the spec).
PARAMETERS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name not in ("campaign", "repeat"))

_SPEC_KEYS = ("name", "grid", "repeats", "fixed", "links", "build_timestamp", "key", "roms", "firmware")
_SPEC_KEYS += ("allow_demo_image", "power", "board_reset", "seed", "parallel")
#: Spec keys that say how a campaign runs, not what it measures: left out of its SHA-256 (resume with any).
_EXECUTION_KEYS = ("parallel",)
#: What the campaign's inputs (key, firmware) add to a spec when given (``None``/False: not stored).
_INPUT_KEYS = ("key", "roms", "firmware", "allow_demo_image")
#: Most trials one campaign may have (at a second or more each, this is more than a day).
MAX_TRIALS = 100_000
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]i?[bB]?|[bB])?\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "ki": 1024, "kib": 1024, "kb": 1024, "m": 1 << 20, "mi": 1 << 20}
_SIZE_UNITS |= {"mib": 1 << 20, "mb": 1 << 20}


def max_parallel() -> int:
    """Most trials one campaign runs at once on this machine: 8 per CPU core, at most 64 (a trial mostly
    waits on its board and link; each holds a board, a link proxy and their threads)."""
    return min(64, 8 * (os.cpu_count() or 1))


def check_parallel(value: Any, what: str = "'parallel'") -> int:
    """``value`` as a number of trials to run at once; :class:`LabError` (one line) unless 1..:func:`max_parallel`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LabError(f"{what} must be an integer >= 1 (trials at once), got {value!r}")
    limit = max_parallel()
    if value > limit:
        raise LabError(
            f"{what} {value} is more than this machine's limit of {limit} trials at once "
            f"(8 per CPU core, {os.cpu_count() or 1} cores, at most 64)"
        )
    return value


def parse_size(value: Any) -> int:
    """A size in bytes from an int or a string like ``64KiB``, ``1M`` (binary units)."""
    if isinstance(value, bool):
        raise LabError(f"size {value!r}: expected bytes (e.g. 65536 or 64KiB)")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise LabError(f"size {value!r}: expected bytes (e.g. 65536 or 64KiB)")
    number, unit = match.groups()
    size = float(number) * _SIZE_UNITS[(unit or "").lower()]
    if not size.is_integer():
        raise LabError(f"size {value!r} is not a whole number of bytes")
    return int(size)


def _link_label(rate: float, latency: float) -> str:
    rate_text = "unlimited" if math.isnan(rate) else f"{rate:g}Bps"
    return f"{rate_text}+{latency:g}ms"


def read_spec_file(path: str | Path, what: str) -> Any:
    """The data of a YAML/JSON spec file (``what``: "campaign spec", "fleet spec"); one-line LabErrors."""
    try:
        text = read_input(path, what).decode("utf-8")
    except InputError as exc:
        raise LabError(str(exc)) from None
    except UnicodeDecodeError:
        raise LabError(f"{what} {path} is not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise LabError(f"{what} {path} is not valid YAML/JSON: {problem}{where}") from None


@dataclass
class CampaignSpec:
    """A campaign: every combination of ``grid`` values, each run ``repeats`` times."""

    name: str
    grid: dict[str, list[Any]]
    repeats: int = 1
    fixed: dict[str, Any] = field(default_factory=dict)
    links: dict[str, dict[str, float]] = field(default_factory=dict)
    build_timestamp: int | None = None  # the virtual board's firmware build time, ms since 1900
    key: str | None = None  # the board's key file (otalib.lab.inputs)
    roms: list[str] | None = None  # FILE@ADDRESS of the ROMs to publish
    firmware: dict[str, Any] | None = None  # patch, build_timestamp; or a project to build
    allow_demo_image: bool = False  # otalab's demo images onto a real board
    #: The folder relative paths (key, roms, project) are in: the spec file's (not part of the spec).
    base_dir: Path | None = field(default=None, compare=False, repr=False)
    power: str | dict[str, Any] | None = None  # a real board's power hook (serial_board.PowerHook.from_spec)
    board_reset: str = "rts"  # a real board's fresh start per trial (serial_board.BoardReset)
    seed: int | None = None  # the seed of rate faults without their own (otalib.net.faults)
    parallel: int = 1  # trials run at once (not part of the spec's identity, see _EXECUTION_KEYS)

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_dict(
        cls, data: Any, *, source: str = "campaign spec", base_dir: Path | None = None, overrides: dict | None = None
    ) -> CampaignSpec:
        """Build and check a spec from a mapping (as read from YAML or JSON); ``overrides`` (the
        CLI's ``--key``/``--rom``/``--allow-demo-image``, absolute paths) replace its keys."""
        if isinstance(data, dict) and overrides:
            given = {k: v for k, v in overrides.items() if v is not None and v is not False and v != []}
            if "patch" in given:  # --patch: the firmware's patch
                firmware = data.get("firmware")
                given["firmware"] = {**(firmware if isinstance(firmware, dict) else {}), "patch": given.pop("patch")}
            data = {**data, **given}
        if not isinstance(data, dict):
            raise LabError(f"{source}: expected a mapping with keys {', '.join(_SPEC_KEYS)}")
        unknown = [str(k) for k in data if k not in _SPEC_KEYS]
        if unknown:
            raise LabError(f"{source}: unknown key(s) {', '.join(unknown)} (expected {', '.join(_SPEC_KEYS)})")
        if "name" not in data:
            raise LabError(f"{source}: missing 'name'")
        try:
            return cls(
                name=data["name"],
                grid=data.get("grid") or {},
                repeats=data.get("repeats", 1),
                fixed=data.get("fixed") or {},
                links=data.get("links") or {},
                build_timestamp=data.get("build_timestamp"),
                key=data.get("key"),
                roms=data.get("roms"),
                firmware=data.get("firmware"),
                allow_demo_image=data.get("allow_demo_image", False),
                base_dir=base_dir,
                power=data.get("power"),
                board_reset=data.get("board_reset", "rts"),
                seed=data.get("seed"),
                parallel=data.get("parallel", 1),
            )
        except LabError as exc:
            raise LabError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> CampaignSpec:
        """Read a spec from a YAML or JSON file (relative paths in it: from its folder)."""
        data = read_spec_file(path, "campaign spec")
        base = Path(path).resolve().parent
        return cls.from_dict(data, source=f"campaign spec {path}", base_dir=base, overrides=overrides)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (JSON-ready; NaN as null)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: (redact(v) if k == "broker_url" else clean(v)) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        def redact(value: Any) -> Any:  # never a password in metadata.json
            if isinstance(value, list):
                return [redact(v) for v in value]
            return redact_url(value) if isinstance(value, str) else value

        spec = {"name": self.name, "repeats": self.repeats, "grid": self.grid, "fixed": self.fixed, "links": self.links}
        if self.build_timestamp is not None:
            spec["build_timestamp"] = self.build_timestamp
        for name in _INPUT_KEYS:  # only when given: older specs keep their hash
            if getattr(self, name) not in (None, False):
                spec[name] = getattr(self, name)
        if self.power is not None:
            spec["power"] = self.power
        if self.board_reset != "rts":
            spec["board_reset"] = self.board_reset
        if self.seed is not None:
            spec["seed"] = self.seed
        if self.parallel != 1:
            spec["parallel"] = self.parallel
        return clean(spec)

    def resolve_path(self, text: str) -> Path:
        """A path of the spec (key, ROM, project): relative to the spec file's folder."""
        path = Path(text).expanduser()
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    def firmware_spec(self) -> dict[str, Any] | None:
        """The firmware to publish (``roms`` folded into ``firmware``), None for otalab's demo images."""
        if self.roms is None and self.firmware is None:
            return None
        firmware = dict(self.firmware or {})
        if self.roms is not None:
            firmware["roms"] = self.roms
        return firmware

    def _check(self) -> None:
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise LabError(f"'seed' must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise LabError("'name' must be a non-empty string")
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats < 1:
            raise LabError(f"'repeats' must be an integer >= 1, got {self.repeats!r}")
        if not isinstance(self.grid, dict):
            raise LabError("'grid' must be a mapping of parameter -> list of values")
        if not isinstance(self.fixed, dict):
            raise LabError("'fixed' must be a mapping of parameter -> value")
        for section, mapping in (("grid", self.grid), ("fixed", self.fixed)):
            for key in mapping:
                if key not in PARAMETERS:
                    raise LabError(f"{section}: unknown parameter {key!r} (known: {', '.join(PARAMETERS)})")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise LabError(f"grid.{key} must be a non-empty list")
        both = sorted(set(self.grid) & set(self.fixed))
        if both:
            raise LabError(f"parameter(s) both in grid and fixed: {', '.join(both)}")
        stamp = self.build_timestamp
        if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool) or not 0 <= stamp < 1 << 64):
            raise LabError(f"'build_timestamp' must be ms since 1900 (an integer 0..2^64-1), got {stamp!r}")
        if not isinstance(self.links, dict):
            raise LabError("'links' must be a mapping of name -> {rate_Bps, latency_ms}")
        for name, profile in self.links.items():
            if not isinstance(name, str):
                raise LabError(f"links: the profile name {name!r} must be a string")
            if not isinstance(profile, dict) or set(profile) - {"rate_Bps", "latency_ms"}:
                raise LabError(f"links.{name} must be a mapping with rate_Bps and/or latency_ms")
        check_parallel(self.parallel)
        self._check_inputs()
        self._check_real_board_control()
        count = self.count_trials()
        if count > MAX_TRIALS:
            points = count // self.repeats
            raise LabError(
                f"{count} trials ({self.repeats} repeats x {points} grid points) is more than {MAX_TRIALS}: "
                "split the campaign"
            )
        self._check_firmware_use(self._configs(repeats=1))  # every grid point must make a valid trial

    def _check_inputs(self) -> None:
        """The shapes of ``key``, ``roms``, ``firmware``, ``allow_demo_image``."""
        if self.key is not None and (not isinstance(self.key, str) or not self.key.strip()):
            raise LabError(f"'key' must be the path of a key file, got {self.key!r}")
        if self.key is not None:
            check_key_path(self.key, "'key'")
        if not isinstance(self.allow_demo_image, bool):
            raise LabError(f"'allow_demo_image' must be true or false, got {self.allow_demo_image!r}")
        if self.firmware is not None and not isinstance(self.firmware, dict):
            raise LabError(f"'firmware' must be a mapping with keys {', '.join(FIRMWARE_KEYS)}")
        firmware = self.firmware or {}
        unknown = [str(k) for k in firmware if k not in FIRMWARE_KEYS]
        if unknown:
            raise LabError(f"firmware: unknown key(s) {', '.join(unknown)} (expected {', '.join(FIRMWARE_KEYS)})")
        if self.roms is not None and "roms" in firmware:
            raise LabError("give the ROMs once: 'roms' or 'firmware.roms'")
        roms = self.roms if self.roms is not None else firmware.get("roms")
        if roms is not None:
            if not isinstance(roms, list) or not roms:
                raise LabError("'roms' must be a non-empty list of FILE@ADDRESS")
            for rom in roms:
                parse_rom_spec(rom)
        project = firmware.get("project")
        if self.firmware is not None and (roms is None) == (project is None):
            raise LabError("firmware: give either 'roms' (FILE@ADDRESS files) or 'project' (a folder to build)")
        if project is not None and (not isinstance(project, str) or not project.strip()):
            raise LabError(f"firmware.project must be a folder path, got {project!r}")
        command = firmware.get("command")
        if command is not None and (project is None or not isinstance(command, str) or not command.strip()):
            raise LabError("firmware.command is the build command of firmware.project (a string)")
        patch = firmware.get("patch")
        if patch is not None and (not isinstance(patch, int) or isinstance(patch, bool) or patch < 0):
            raise LabError(f"firmware.patch must be the firmware's APP_VERSION_PATCH (an integer >= 0), got {patch!r}")
        stamp = firmware.get("build_timestamp")
        if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool) or not 0 <= stamp < 1 << 64):
            raise LabError(f"firmware.build_timestamp must be ms since 1900 (an integer 0..2^64-1), got {stamp!r}")

    def _check_firmware_use(self, points: list[TrialConfig]) -> None:
        """The firmware's patch and ROMs against the trials; no demo image onto a real board unless allowed."""
        firmware = self.firmware_spec()
        real = sorted({p.board for p in points if is_real_board(p.board)})
        if firmware is None:
            if real and not self.allow_demo_image:
                raise LabError(
                    f"refusing to publish otalab's demo image (no application code) to the real board {real[0]}: "
                    "give its firmware (roms: / firmware: in the spec, --rom) or allow_demo_image: true"
                )
            return
        if "patch" in self.grid:
            raise LabError("the firmware has one patch: give it as firmware.patch, not in the grid")
        given, fixed = firmware.get("patch"), self.fixed.get("patch")
        if given is not None and fixed is not None and given != fixed:
            raise LabError(f"fixed.patch {fixed} is not the firmware's patch {given} (firmware.patch)")
        if given is None and fixed is None and "roms" in firmware:  # a build may take APP_VERSION_PATCH
            raise LabError(
                "give the firmware's APP_VERSION_PATCH as firmware.patch or --patch (a ROM file does not carry it)"
            )
        if len(firmware.get("roms") or ()) > 1 and any(p.mode is UpdateMode.STANDARD for p in points):
            raise LabError("standard mode publishes one raw image: give one ROM, or only advanced modes")
        if "project" in firmware and len({p.version.rsplit(".", 1)[0] for p in points}) > 1:
            raise LabError("a firmware project is built at one APP_VERSION: give the trials one version")

    def _check_real_board_control(self) -> None:
        """The power hook and the reset method parse; a power-loss trial on a real board has a hook."""
        from otalib.board.serial_board import BoardReset, PowerHook
        from otalib.errors import BoardError

        try:
            hook = PowerHook.from_spec(self.power)
        except BoardError as exc:
            raise LabError(f"'power': {exc}") from None
        if self.board_reset not in [r.value for r in BoardReset]:
            raise LabError(f"'board_reset' must be one of {', '.join(r.value for r in BoardReset)}")
        if self.board_reset == BoardReset.POWER.value and hook is None:
            raise LabError("'board_reset: power' needs a 'power' hook")
        boards = self.grid.get("board", [self.fixed.get("board", "virtual")])
        real = sorted({str(b) for b in boards if b != "virtual"})
        if real and self.parallel > 1:
            raise LabError(
                f"parallel {self.parallel} needs virtual boards: the real board {real[0]} runs one trial at a time"
            )
        if hook is None:
            faults = self.grid.get("fault", [self.fixed.get("fault", "none")])
            if real and any(str(f or "none").partition("@")[0] == "power-loss" for f in faults):
                from otalib.lab.trial import check_power_hook

                check_power_hook(real[0], None)

    def count_trials(self) -> int:
        """How many trials the spec makes (repeats x grid points), counted without making them."""
        return self.repeats * math.prod(len(values) for values in self.grid.values())

    def sha256(self) -> str:
        """SHA-256 of the spec as stored in a run's metadata (its parsed content, not its text)."""
        return spec_sha256(self.to_dict())

    def _resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Sizes parsed; link name and link parameters made consistent."""
        params = dict(params)
        if "size" in params:
            params["size"] = parse_size(params["size"])
        if params.get("rate_Bps") is None and "rate_Bps" in params:
            params["rate_Bps"] = math.nan
        profiles = {**known_links(), **self.links}
        if "link" in params:
            name = params["link"]
            if not isinstance(name, str):
                raise LabError(f"link {name!r}: expected a link profile name")
            explicit = {k for k in ("rate_Bps", "latency_ms") if k in params}
            if name in profiles:
                for key, value in profiles[name].items():
                    if key not in explicit:
                        params[key] = math.nan if value is None else value
            elif len(explicit) < 2:
                known = ", ".join(sorted(profiles))
                raise LabError(f"unknown link profile {name!r} (known: {known}; or define it under 'links')")
        elif "rate_Bps" in params or "latency_ms" in params:
            try:
                rate, latency = float(params.get("rate_Bps", math.nan)), float(params.get("latency_ms", 0.0))
            except (TypeError, ValueError):
                raise LabError(f"rate_Bps/latency_ms must be numbers, got {params}") from None
            params["link"] = _link_label(rate, latency)
        return params

    def trials(self) -> list[TrialConfig]:
        """Every trial, in a deterministic order: repeat by repeat, the grid's product in each."""
        return self._configs(self.repeats)

    def _configs(self, repeats: int) -> list[TrialConfig]:
        keys = list(self.grid)
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(self.grid[k] for k in keys))]
        points: list[TrialConfig] = []  # repeat 0 of each grid point, each resolved and checked once
        seen: dict[str, dict[str, Any]] = {}
        for combo in combos:
            params = self._resolve({**self.fixed, **combo})
            fault = params.get("fault")
            if self.seed is not None and isinstance(fault, str) and is_rate_fault(fault) and "seed=" not in fault:
                params["fault"] = f"{fault},seed={self.seed}"  # the fault column and the trial id carry it
            try:
                config = TrialConfig(campaign=self.name, repeat=0, **params)
            except TypeError as exc:
                raise LabError(f"bad trial parameters {combo}: {exc}") from None
            if config.trial_id in seen:
                raise LabError(f"grid has the same trial twice: {combo} and {seen[config.trial_id]}")
            seen[config.trial_id] = combo
            points.append(config)
        configs = list(points)
        for repeat in range(1, repeats):
            configs += [dataclasses.replace(point, repeat=repeat) for point in points]
        return configs


def spec_sha256(spec: dict[str, Any]) -> str:
    """SHA-256 of a spec as plain data (:meth:`CampaignSpec.to_dict`, or as read back from metadata.json),
    without the keys that only say how it runs (:data:`_EXECUTION_KEYS`)."""
    spec = {k: v for k, v in spec.items() if k not in _EXECUTION_KEYS}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _is_run(run_dir: Path) -> bool:
    """True if ``run_dir`` holds any part of a run."""
    return any((run_dir / name).exists() for name in (store.METADATA, store.TRIALS_DIR, store.CONSOLIDATED))


def set_aside_name(run_dir: Path) -> Path:
    """Where ``--new`` keeps the run now in ``run_dir``: ``<name>.old-<start of that run, UTC>``."""
    run_dir = Path(run_dir) if Path(run_dir).name else Path(run_dir).resolve()
    try:
        meta = store.read_metadata(run_dir)
    except LabError:  # a damaged metadata.json: name the old run by its folder's time
        meta = {}
    started = next((s.get("started_at") for s in meta.get("sessions") or [] if isinstance(s, dict)), None)
    try:
        when = datetime.fromisoformat(str(started)) if started else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        when = datetime.fromtimestamp(run_dir.stat().st_mtime, timezone.utc)
    stamp = when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return run_dir.with_name(f"{run_dir.name}.old-{stamp}")


def check_run_dir(spec: CampaignSpec, out_dir: Path, *, resume: bool = True) -> Path | None:
    """Raise :class:`LabError` if ``spec`` may not run into ``out_dir``; return where an old run would go.

    Resuming needs the run's spec to be ``spec`` (same SHA-256). Starting over
    (``resume=False``) keeps an existing run under :func:`set_aside_name`, and refuses if
    that exists. Nothing is changed on disk.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LabError(f"run directory {out_dir} is not a directory")
    if not out_dir.is_dir() or not _is_run(out_dir):
        return None
    if not resume:
        aside = set_aside_name(out_dir)
        if aside.exists() or aside.is_symlink():
            raise LabError(f"cannot keep the old run of {out_dir} as {aside}: it exists (move one of them away)")
        return aside
    previous = store.read_metadata(out_dir)
    stored = previous.get("campaign")
    if not isinstance(stored, dict):
        if store.done_trial_ids(out_dir):
            raise LabError(
                f"{out_dir} holds trials but no campaign spec in {store.METADATA}: "
                "use --new to start over (the old run is kept) or another directory"
            )
        return None
    old_hash = str(previous.get("campaign_sha256") or spec_sha256(stored))
    if old_hash != spec.sha256():
        raise LabError(
            f"{out_dir} holds campaign {stored.get('name')!r} from another spec "
            f"(sha256 {old_hash[:12]}, this spec {spec.sha256()[:12]}): use --new to start over "
            f"(the old run is kept as {set_aside_name(out_dir).name}) or another directory"
        )
    return None


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; return the folders it created, deepest first."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(f"cannot create run directory {path}: {exc.strerror}") from None
    return missing


def _remove_created(out_dir: Path, created: list[Path]) -> None:
    """Undo a new run that wrote no trial: its metadata.json, then the empty folders this run created."""
    if store.done_trial_ids(out_dir):
        return
    with contextlib.suppress(OSError):
        (out_dir / store.METADATA).unlink(missing_ok=True)
    for folder in [out_dir / store.TRIALS_DIR, *created]:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def run_campaign(
    spec: CampaignSpec,
    out_dir: Path,
    runner: TrialRunner,
    *,
    progress: bool = True,
    resume: bool = True,
    metadata: dict[str, Any] | None = None,
    parallel: int | None = None,
    stop: threading.Event | None = None,
) -> pd.DataFrame:
    """Run every trial of ``spec`` not yet done in ``out_dir``; return all trials of the run.

    Each finished trial is written at once to ``out_dir/trials/<trial_id>.parquet``
    (atomically), so an interruption loses at most the running trial; running
    again with ``resume=True`` skips the trials already done, and refuses a run
    directory that holds another spec (:func:`check_run_dir`). ``resume=False``
    starts over, first renaming an existing run to :func:`set_aside_name`. ``metadata``
    is added to the run's ``metadata.json`` (broker backend and version, device
    profile, firmware hashes...). An exception from ``runner`` (or Ctrl-C) stops
    the campaign after recording the status; the finished trials stay on disk. An otalab
    error before the first trial of a new run finished (a trial the spec describes cannot
    run) removes what this call wrote: its metadata.json and the folders it created.

    ``parallel`` (default the spec's): trials at once, in threads calling ``runner``; the trials
    start in the spec's order and each is stored as it finishes. When the campaign stops early
    (Ctrl-C, a trial's error) no new trial starts, ``stop`` (cleared first) is set so a runner
    watching it ends its running trial at once (:class:`~otalib.lab.trial.Bench` does), the
    trials that finish meanwhile are kept, and ``stop`` is cleared again once they have ended.
    """
    out_dir = Path(out_dir)
    workers = check_parallel(spec.parallel if parallel is None else parallel, "parallel")
    stop = stop if stop is not None else threading.Event()
    stop.clear()
    configs = spec.trials()
    aside = check_run_dir(spec, out_dir, resume=resume)
    if aside is not None:
        try:
            out_dir.rename(aside)
        except OSError as exc:
            raise LabError(f"cannot keep the old run of {out_dir} as {aside}: {exc.strerror}") from None
    fresh = not (out_dir.is_dir() and _is_run(out_dir))
    created = _make_dirs(out_dir)
    previous = store.read_metadata(out_dir)

    done = store.done_trial_ids(out_dir)
    todo = [c for c in configs if c.trial_id not in done]

    session: dict[str, Any] = {"started_at": utc_now(), "finished_at": None, "status": "running", "trials_run": 0}
    session["parallel"] = workers
    sessions = [*previous.get("sessions", []), session]
    meta = collect_metadata(metadata)
    meta.update(
        {
            "campaign": spec.to_dict(),
            "campaign_sha256": spec.sha256(),
            "n_trials": len(configs),
            "status": "running",
            "sessions": sessions,
        }
    )
    if aside is not None:
        meta["previous_run"] = str(aside)

    def save(status: str) -> None:
        session["status"] = meta["status"] = status
        if status != "running":
            session["finished_at"] = utc_now()
        meta["n_done"] = len(store.done_trial_ids(out_dir))
        store.write_metadata(out_dir, meta)

    bar: CampaignProgress | None = None

    def keep(result: TrialResult) -> None:
        store.write_fault_events(out_dir, result.config.trial_id, result.events)  # before the trial marks it done
        store.write_trial(out_dir, result.to_row())
        session["trials_run"] += 1
        if bar is not None:
            bar.set_postfix_str(result.outcome.text, refresh=False)
            bar.update(1)

    try:
        save("running")
        if progress:
            bar = campaign_progress(len(configs), len(configs) - len(todo), spec.name)
        if workers == 1 or len(todo) <= 1:
            for config in todo:
                keep(_run_one(runner, config))
        else:
            _run_parallel(runner, todo, workers, keep, stop)
    except KeyboardInterrupt:
        stop.set()
        _stopped(save, "interrupted")
        raise
    except BaseException as exc:
        stop.set()
        if isinstance(exc, OtaLabError) and fresh and not store.done_trial_ids(out_dir):
            _remove_created(out_dir, created)  # e.g. a trial the spec describes cannot be run: no run to keep
            raise
        _stopped(save, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))
        raise
    finally:
        stop.clear()  # the trials it stopped have ended: the runner (a shared Bench) runs trials again
        if bar is not None:
            bar.close()
    df = store.consolidate(out_dir)
    save("complete")
    return df


def _stopped(save: Callable[[str], None], status: str) -> None:
    """Record why a campaign stopped (a failure to record it does not hide the reason)."""
    with contextlib.suppress(OtaLabError):
        save(status)


def _run_parallel(
    runner: TrialRunner,
    todo: list[TrialConfig],
    workers: int,
    keep: Callable[[TrialResult], None],
    stop: threading.Event,
) -> None:
    """Run ``todo`` with up to ``workers`` trials at once, in order of start; ``keep`` each result as it
    comes (in this thread). The first error (or Ctrl-C) stops new starts and sets ``stop``; the running
    trials are waited for (a runner watching ``stop`` ends them at once), the ones that finished are
    kept, and the error is raised."""
    pending = enumerate(todo)
    running: dict[Future[TrialResult], int] = {}  # a running trial -> its place in todo
    workers = min(workers, len(todo))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trial")

    def start_next() -> None:
        index, config = next(pending, (-1, None))
        if config is not None and not stop.is_set():
            running[pool.submit(_run_one, runner, config)] = index

    try:
        for _ in range(workers):
            start_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=running.__getitem__):
                del running[future]
                keep(future.result())  # a trial's error stops the campaign
                start_next()
    except BaseException:
        stop.set()
        _finish_running(running, keep)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _finish_running(running: dict[Future[TrialResult], int], keep: Callable[[TrialResult], None]) -> None:
    """After a stop: wait for the trials still running, keep those that finished (their errors are the
    stop's consequence). A second Ctrl-C leaves them to end on their own."""
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            del running[future]
            if future.exception() is None:
                with contextlib.suppress(OtaLabError):
                    keep(future.result())


def _run_one(runner: TrialRunner, config: TrialConfig) -> TrialResult:
    """Run one trial; fill in its start time and duration if the runner did not."""
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    result = runner(config)
    elapsed = time.monotonic() - t0
    if not isinstance(result, TrialResult):
        raise LabError(f"trial runner returned {type(result).__name__}, not a TrialResult")
    if result.config.trial_id != config.trial_id:
        raise LabError(f"trial runner returned the result of another trial ({result.config.trial_id})")
    if result.started_at is None:
        result.started_at = started
    if result.duration_s is None:
        t_end = result.phases.get("t_end")
        result.duration_s = float(t_end) if t_end is not None else elapsed
    return result
