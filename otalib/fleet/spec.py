"""A fleet spec: the population in groups and the one update published to it.

::

    name: f
    seed: 0                      # rate faults without their own seed= take it
    timeout_s: 120               # after every board subscribed, how long the fleet runs at most
    broker: mqtt://host:1883     # optional: an external broker (else otalab's managed Mosquitto)
    update: {size: 64KiB, mode: signed, patch: 2}   # key: FILE (else a fresh key)
    groups:
      - {count: 900, chip: esp8266, version: 4.3.1, timing: esp8266, link: wifi, fault: "drops:rate=0.01"}
      - {count: 100, chip: esp32, version: 4.3.1, timing: esp32, link: dsl}

A group may also name ``name``, ``app_id``, ``mode`` (how its devices were built: the update
modes; default the update's), ``key`` (``same``: the update's key, ``other``: a key that did
not sign it), ``profile`` (``sming-6.1``/``reference``), ``debug_level`` and ``tcp_mss`` (the
largest TCP segment the device's stack hands over: 1460 on an ESP8266; larger ones coalesce the
device's work per segment, for big fleets). Groups on one
topic (app id and major.minor) get one package (with one ROM per chip when their chips differ:
each device takes the ROM whose address matches its slot); groups on different topics get one each.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from otalib.errors import LabError, OtaLabError, UsageError
from otalib.formats.version import DeviceProfile, Version, topic_for
from otalib.lab.campaign import known_links, parse_size, read_spec_file
from otalib.lab.trial import FaultSpec
from otalib.mqtt.streaming import ESP_TCP_MSS, RECV_CHUNK
from otalib.vocabulary import UpdateMode

_SPEC_KEYS = ("name", "seed", "timeout_s", "broker", "update", "groups")
_UPDATE_KEYS = ("size", "mode", "patch", "key")
_GROUP_KEYS = ("name", "count", "chip", "version", "app_id", "mode", "key", "profile", "timing", "link", "fault")
_GROUP_KEYS += ("debug_level", "tcp_mss")
CHIPS = ("esp8266", "esp32")
KEY_CHOICES = ("same", "other")
#: Deterministic faults a fleet board takes (at a payload fraction); ``stall`` is the campaign's alone.
FLEET_FAULTS = ("none", "cut", "corrupt", "power-loss")
#: Most boards one spec may hold (the machine's own limit is checked separately).
MAX_BOARDS = 100_000
#: A group's version unless it names one.
DEFAULT_GROUP_VERSION = Version(4, 3, 1)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def timing_profiles() -> tuple[str, ...]:
    """The device timing profiles (``none`` only until the timing model exists)."""
    try:
        from otalib.board.sim import timing  # noqa: F401  (the model the profiles need)
        from otalib.vocabulary import TimingProfile
    except ImportError:
        return ("none",)
    return tuple(p.value for p in TimingProfile)


@dataclass(frozen=True)
class UpdateSpec:
    """The update: a demo image of ``size`` bytes at ``patch``, packed in ``mode``."""

    size: int = 64 * 1024
    mode: UpdateMode = UpdateMode.SIGNED
    patch: int = 2
    key: str | None = None


@dataclass(frozen=True)
class GroupSpec:
    """One group of identical boards."""

    name: str
    count: int
    chip: str = "esp8266"
    version: Version = DEFAULT_GROUP_VERSION
    app_id: str = "test"
    mode: UpdateMode | None = None  # None: the update's
    key: str = "same"
    profile: DeviceProfile = DeviceProfile.SMING_61
    timing: str = "none"
    link: str = "lan"
    fault: str = "none"
    debug_level: int = 3
    tcp_mss: int = ESP_TCP_MSS  # the largest TCP segment the device's stack hands over

    @property
    def topic(self) -> str:
        return topic_for(self.app_id, self.version)

    def rate_Bps(self) -> float | None:
        rate = known_links()[self.link]["rate_Bps"]
        return None if math.isnan(rate) else float(rate)

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["version"] = str(self.version)
        out["mode"] = self.mode.value if self.mode else None
        out["profile"] = self.profile.value
        return out


@dataclass(frozen=True)
class FleetSpec:
    """A fleet: its groups, the update, a seed, the time limit and optionally an external broker."""

    name: str
    groups: tuple[GroupSpec, ...]
    update: UpdateSpec = field(default_factory=UpdateSpec)
    seed: int = 0
    timeout_s: float = 120.0
    broker: str | None = None
    base_dir: Path | None = field(default=None, compare=False, repr=False)

    @property
    def count(self) -> int:
        return sum(g.count for g in self.groups)

    def topics(self) -> dict[str, list[GroupSpec]]:
        """Topic -> the groups on it."""
        out: dict[str, list[GroupSpec]] = {}
        for group in self.groups:
            out.setdefault(group.topic, []).append(group)
        return out

    def scaled(self, factor: float) -> FleetSpec:
        """The same fleet with each group's count scaled (at least one board per group)."""
        counts = [max(1, round(g.count * factor)) for g in self.groups]
        _check_total(sum(counts))  # before any board is made: a huge factor is refused, not allocated
        return _replace(self, groups=tuple(_replace(g, count=n) for g, n in zip(self.groups, counts, strict=True)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "timeout_s": self.timeout_s,
            "broker": self.broker,
            "update": {**asdict(self.update), "mode": self.update.mode.value},
            "groups": [g.describe() for g in self.groups],
        }

    # -- reading --
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "fleet spec", base_dir: Path | None = None) -> FleetSpec:
        """Build and check a spec; every problem is one :class:`LabError` line naming it."""
        try:
            return _parse(data, base_dir)
        except OtaLabError as exc:
            raise LabError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> FleetSpec:
        data = read_spec_file(path, "fleet spec")
        return cls.from_dict(data, source=f"fleet spec {path}", base_dir=Path(path).resolve().parent)


def _check_total(total: int) -> None:
    if total > MAX_BOARDS:
        raise LabError(f"{total} boards: at most {MAX_BOARDS} in one spec")


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)


def _mapping(data: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise LabError(f"{what}: expected a mapping with keys {', '.join(keys)}")
    unknown = [str(k) for k in data if k not in keys]
    if unknown:
        raise LabError(f"{what}: unknown key(s) {', '.join(unknown)} (expected {', '.join(keys)})")
    return data


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabError(f"bad {what} {value!r}: an integer {low}..{high}")
    return value


def _parse(data: Any, base_dir: Path | None) -> FleetSpec:
    data = _mapping(data, _SPEC_KEYS, "the spec")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LabError(f"bad or missing name {name!r}: letters, digits, '_', '.', '-'")
    seed = _int(data.get("seed", 0), "seed", 0, 2**63 - 1)
    timeout = data.get("timeout_s", 120.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86_400:
        raise LabError(f"bad timeout_s {timeout!r}: seconds, 0 < t <= 86400")
    broker = data.get("broker")
    if broker is not None:
        from otalib.mqtt.url import parse_url

        try:
            parse_url(str(broker))
        except OtaLabError as exc:
            raise LabError(f"bad broker {broker!r}: {exc}") from None
    update = _parse_update(data.get("update") or {})
    raw_groups = data.get("groups")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise LabError("'groups' must be a non-empty list of groups")
    groups = tuple(_parse_group(raw, i) for i, raw in enumerate(raw_groups))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise LabError(f"group names must differ: {', '.join(names)}")
    _check_total(sum(g.count for g in groups))
    spec = FleetSpec(name, groups, update, seed, float(timeout), broker, base_dir)
    for topic, on_topic in spec.topics().items():
        chips = {g.chip for g in on_topic}
        if len(chips) > 1 and update.mode is UpdateMode.STANDARD:  # a raw image has no ROM per chip
            raise LabError(
                f"groups {', '.join(g.name for g in on_topic)} share topic {topic} but differ in chip, and a"
                " standard-mode package is one raw image: give them different app ids"
            )
    return spec


def _parse_update(data: Any) -> UpdateSpec:
    data = _mapping(data, _UPDATE_KEYS, "update")
    size = parse_size(data.get("size", 64 * 1024))
    if not 0 < size <= 16 << 20:
        raise LabError(f"update size {size}: 1 byte .. 16 MiB")
    try:
        mode = UpdateMode.parse(data.get("mode", "signed"))
    except (UsageError, ValueError) as exc:
        raise LabError(f"update: {exc}") from None
    patch = _int(data.get("patch", 2), "update patch", 0, 255)
    key = data.get("key")
    if key is not None and not isinstance(key, str):
        raise LabError("update key: a key file's path")
    return UpdateSpec(size, mode, patch, key)


def _parse_group(raw: Any, index: int) -> GroupSpec:
    data = _mapping(raw, _GROUP_KEYS, f"group {index + 1}")
    name = str(data.get("name", f"g{index + 1}"))
    what = f"group {name}"
    if not _NAME_RE.match(name):
        raise LabError(f"bad group name {name!r}: letters, digits, '_', '.', '-'")
    count = _int(data.get("count", 1), f"{what} count", 1, MAX_BOARDS)
    chip = str(data.get("chip", "esp8266"))
    if chip not in CHIPS:
        raise LabError(f"{what}: unknown chip {chip!r} (choose from {', '.join(CHIPS)})")
    try:
        version = Version.parse(str(data.get("version", "4.3.1")))
    except (OtaLabError, ValueError) as exc:
        raise LabError(f"{what}: bad version {data.get('version')!r}: {exc}") from None
    app_id = str(data.get("app_id", "test"))
    from otalib.firmware.image import check_app_id

    try:
        check_app_id(app_id)
    except OtaLabError as exc:
        raise LabError(f"{what}: {exc}") from None
    mode = None
    if data.get("mode") is not None:
        try:
            mode = UpdateMode.parse(data["mode"])
        except (UsageError, ValueError) as exc:
            raise LabError(f"{what}: {exc}") from None
    key = str(data.get("key", "same"))
    if key not in KEY_CHOICES:
        raise LabError(f"{what}: unknown key {key!r} (choose from {', '.join(KEY_CHOICES)})")
    try:
        profile = DeviceProfile(data.get("profile", DeviceProfile.SMING_61.value))
    except ValueError:
        choices = ", ".join(p.value for p in DeviceProfile)
        raise LabError(f"{what}: unknown profile {data.get('profile')!r} (choose from {choices})") from None
    timing = str(data.get("timing", "none"))
    if timing not in timing_profiles():
        raise LabError(f"{what}: unknown timing {timing!r} (choose from {', '.join(timing_profiles())})")
    link = str(data.get("link", "lan"))
    links = known_links()
    if link not in links:
        raise LabError(f"{what}: unknown link {link!r} (choose from {', '.join(sorted(links))})")
    fault = str(data.get("fault", "none"))
    try:
        parsed = FaultSpec.parse(fault)
    except OtaLabError as exc:
        raise LabError(f"{what}: {exc}") from None
    if parsed.rate is None and parsed.kind not in FLEET_FAULTS:
        raise LabError(
            f"{what}: fault {fault!r} is not one a fleet takes (use {', '.join(FLEET_FAULTS)} or a rate fault)"
        )
    debug_level = _int(data.get("debug_level", 3), f"{what} debug_level", 0, 3)
    tcp_mss = _int(data.get("tcp_mss", ESP_TCP_MSS), f"{what} tcp_mss", 1, RECV_CHUNK)
    return GroupSpec(name, count, chip, version, app_id, mode, key, profile, timing, link, fault, debug_level, tcp_mss)
