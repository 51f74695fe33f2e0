"""Parse a Sming device's console into events, and infer update outcomes.

:data:`DEFAULT_PATTERNS` is a table of named regular expressions for the console of
Sming's OTA-over-MQTT Upgrade sample (Sming 6.1; Host emulator banner, rBoot / ESP
ROM boot banners). Named groups become fields (numbers converted). Users extend the
table for their firmware with :meth:`ConsoleParser.add` or ``extra=``.

Debug lines (``debug_e/w/i/d``) start with a microsecond counter, which the parser
moves into ``fields["us"]``. Several numbers the device prints are wrong in its own
format strings (``…ll`` timestamps are the low 32 bits of a millisecond value; the
number after ``ROM`` is a pointer; the end address after ``Update slot`` is 0 in a
build that mixed libraries): the parser keeps the printed values, do not trust them.

The Host emulator's threads print ``Thread '…' running`` lines into the middle of other
lines; the parser takes such a line apart and joins the interrupted line with its rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otalib.board.protocol import ConsoleLine
from otalib.errors import DEVICE_ERROR_TEXT, DeviceErrorCode
from otalib.vocabulary import Outcome, OutcomeKind

#: Device error message text -> device error name (``"Downgrade not allowed"`` -> ``"DowngradeNotAllowed"``).
ERROR_NAME_BY_TEXT: dict[str, str] = {text: code.value for code, text in DEVICE_ERROR_TEXT.items()}


def _hex(value: str) -> int:
    return int(value, 16)


#: How named groups are converted (any other group stays a string).
FIELD_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "slot": int,
    "from_slot": int,
    "to_slot": int,
    "count": int,
    "total": int,
    "value": int,
    "timestamp": int,
    "free_heap": int,
    "cpu_mhz": int,
    "code": int,
    "rst_cause": int,
    "port": int,
    "length": int,
    "ssl": int,
    "address": _hex,
    "from_addr": _hex,
    "to_addr": _hex,
    "start": _hex,
    "end": _hex,
    "size": _hex,
    "subtype": _hex,
    "flash_size": _hex,
}


@dataclass(frozen=True)
class Pattern:
    """A named console pattern; named groups become fields.

    ``regex`` may be given as a string. ``derive`` (optional) computes extra fields from
    the converted ones (e.g. the device error name from its message text).
    """

    name: str
    regex: re.Pattern
    derive: Callable[[dict], Mapping[str, Any]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.regex, str):
            object.__setattr__(self, "regex", re.compile(self.regex))
        object.__setattr__(self, "_prefix", literal_prefix(self.regex))

    def match(self, message: str) -> dict | None:
        """Fields of ``message`` if this pattern matches it (``re.search``), else None."""
        if not message.startswith(self._prefix):  # cheap rejection of most lines
            return None
        m = self.regex.search(message)
        if m is None:
            return None
        fields: dict[str, Any] = {}
        for key, value in m.groupdict().items():
            if value is None:
                continue
            convert = FIELD_CONVERTERS.get(key)
            try:
                fields[key] = convert(value) if convert else value
            except ValueError:
                fields[key] = value
        if self.derive is not None:
            fields.update(self.derive(fields))
        return fields


_REGEX_SPECIAL = set(".^$*+?{}[]|()\\")


def literal_prefix(regex: re.Pattern) -> str:
    """The literal text every match of an ``^``-anchored ``regex`` starts with ('' when unsure)."""
    source = regex.pattern
    if not isinstance(source, str) or not source.startswith("^") or regex.flags & (re.IGNORECASE | re.VERBOSE):
        return ""
    depth = 0
    for i, char in enumerate(source):  # a top-level alternative makes the anchor apply to one branch only
        if char == "\\":
            continue
        if source[i - 1 : i] == "\\":
            continue
        depth += char == "("
        depth -= char == ")"
        if char == "|" and depth == 0:
            return ""
    prefix: list[str] = []
    i = 1
    while i < len(source):
        char = source[i]
        if char == "\\" and i + 1 < len(source) and not source[i + 1].isalnum():
            literal, step = source[i + 1], 2
        elif char in _REGEX_SPECIAL:
            break
        else:
            literal, step = char, 1
        if source[i + step : i + step + 1] in ("*", "?", "{", "+"):  # the literal may repeat or be absent
            break
        prefix.append(literal)
        i += step
    return "".join(prefix)


def _error_name(fields: dict) -> dict:
    name = ERROR_NAME_BY_TEXT.get(fields.get("message", "").strip())
    return {"error": name} if name else {}


def _signature_bytes(fields: dict) -> dict:
    return {"signature": bytes.fromhex(fields["signature"].replace(" ", "")).hex()}


_ERROR_ALTERNATIVES = "|".join(re.escape(t) for t in ERROR_NAME_BY_TEXT)
_SLOT = r"(?P<name>[A-Za-z_]*?(?P<slot>\d+))"

#: Patterns for the console of Sming's Upgrade (OTA over MQTT) sample, tried in order.
DEFAULT_PATTERNS: tuple[Pattern, ...] = (
    # boot banners: Host emulator, ESP8266 ROM, ESP32 ROM, rBoot second stage. The ESP8266 ROM
    # prints at 74880 baud: read at 115200 its banner comes with noise around it (or only noise),
    # so the ROM and rBoot lines are searched anywhere in the line.
    Pattern(
        "boot",
        r"^Welcome to the Sming (?P<platform>Host) emulator"
        r"|ets Jan {1,2}8 2013,\s*rst cause:(?P<rst_cause>\d+), boot mode:\((?P<boot_mode>[\d,]+)\)"
        r"|^ets \w{3} +\d+ \d{4} \d\d:\d\d:\d\d$",
    ),
    Pattern("bootloader", r"rBoot v(?P<rboot_version>\d[\w.]*) - "),
    # rBoot's choice of slot ("Booting rom N.", or the GPIO-selected / temporary rom)
    Pattern("rom_boot", r"Booting (?:GPIO-selected |temp )?rom (?P<slot>\d+)\.?$"),
    Pattern(
        "rom_found",
        r"^Found '" + _SLOT + r"' @ 0x(?P<address>[0-9a-fA-F]+), size 0x(?P<size>[0-9a-fA-F]+), "
        r"subtype 0x(?P<subtype>[0-9a-fA-F]+)$",
    ),
    Pattern(
        "rom_count",
        r"^ROM count = (?P<count>\d+), current = (?P<slot>\d+)(?:, (?P<roms>#.*))?$",
    ),
    Pattern(
        "show_info",
        r"^(?:SDK: v(?P<sdk>\S+)|Free Heap: (?P<free_heap>\d+)|CPU Frequency: (?P<cpu_mhz>\d+) MHz"
        r"|System Chip ID: (?P<chip_id>[0-9a-fA-F]+))$",
    ),
    Pattern(
        "partition",
        r"^(?P<device>\w+)/" + _SLOT + r", (?P<type>\w+)/(?P<subtype_name>\w+) @ 0x(?P<address>[0-9a-fA-F]+), "
        r"size 0x(?P<size>[0-9a-fA-F]+)$",
    ),
    Pattern("bootable_roms", r"^Bootable ROMs found: (?P<count>\d+)$"),
    Pattern(
        "running",
        r"^Currently running " + _SLOT + r": 0x(?P<address>[0-9a-fA-F]+)\. Application version: (?P<version>\S+)$",
    ),
    # the network and the MQTT connection (verbose level, except IP_CHANGE)
    Pattern(
        "network_up",
        r"^IP_CHANGE, ip: (?P<ip>[\d.]+), netmask: (?P<netmask>[\d.]+), gateway: (?P<gateway>[\d.]+)$",
    ),
    Pattern("checking", r"^Checking for a new application firmware\.\.\.$"),
    Pattern("connecting", r"^MQTT start connection$"),
    Pattern("tcp_connect", r'^TCP (?P<conn>[0-9a-fA-F]+) connect to "(?P<host>[^"]*):(?P<port>\d+)"$'),
    Pattern("tcp_connected", r"^TCP (?P<conn>[0-9a-fA-F]+) connected: useSSL: (?P<ssl>\d+), Error: (?P<code>-?\d+)$"),
    Pattern("subscribing", r"^Subscribing to topic: (?P<topic>\S+)$"),
    Pattern("subscribed", r"^subscription '(?P<topic>[^']*)' registered$"),
    Pattern("tcp_received", r"^TCP (?P<conn>[0-9a-fA-F]+) received: (?P<length>\d+) bytes$"),
    Pattern("ota_write", r"^ota_write_flash: item\.size: (?P<total>\d+)$"),
    Pattern("build_timestamp_current", r"^Build timestamp of current firmware: (?P<timestamp>\d+)ll$"),
    Pattern("build_timestamp_file", r"^Build timestamp of OTA upgrade file: (?P<timestamp>\d+)ll$"),
    Pattern("ota_started", r"^Starting firmware upgrade, receive (?P<count>\d+) image\(s\)$"),
    Pattern(
        "update_slot",
        r"^Update slot " + _SLOT + r" \[0x(?P<start>[0-9a-fA-F]+)\.\.0x(?P<end>[0-9a-fA-F]+)\)$",
    ),
    Pattern("skip_rom", r"^Skip ROM image for \[0x(?P<start>[0-9a-fA-F]+)\.\.0x(?P<end>[0-9a-fA-F]+)\)$"),
    Pattern("signature", r"^Signature/Checksum: (?P<signature>[0-9a-fA-F]{2}(?: [0-9a-fA-F]{2})*)$", _signature_bytes),
    Pattern("rom_update_complete", r"^ROM update complete$"),
    Pattern("rom_activated", r"^ROM (?P<value>\d+) activated$"),
    Pattern(
        "swapping",
        r"^Swapping from (?P<from_name>[A-Za-z_]*?(?P<from_slot>\d+)) @ 0x(?P<from_addr>[0-9a-fA-F]+) "
        r"to (?P<to_name>[A-Za-z_]*?(?P<to_slot>\d+)) @ 0x(?P<to_addr>[0-9a-fA-F]+)\.$",
    ),
    Pattern("switch_ok", r"^Switching was successful\. Restarting\.\.\.$"),
    Pattern("switch_failed", r"^Switching failed!$"),
    Pattern("device_error", r"^Error: (?P<message>" + _ERROR_ALTERNATIVES + r")$", _error_name),
    Pattern("got_error", r"^Got error: (?P<message>.+)$", _error_name),
    Pattern("terminated", r"^signal_handler: (?P<signal>SIG\w+)"),
    Pattern("exit_code", r"^returning (?P<code>\d+)$"),
    Pattern("restart", r"^>> Normal Exit <<$"),
    # firmware that fails to start (a corrupted image) and rBoot finding no bootable slot
    Pattern("crash", r"^Fatal exception (?P<code>\d+)\((?P<cause>\w+)\):$"),
    Pattern("no_good_rom", r"^No good rom available\.$"),
    Pattern("rom_bad", r"^Rom (?P<slot>\d+) is bad\.$"),
    # the Host emulator's threads
    Pattern("thread", r"^Thread '(?P<thread>[^']+)' (?P<state>running|complete|destroyed)$"),
)

_US_PREFIX = re.compile(r"^(\d+) (?=\S)")
_US_ONLY = re.compile(r"\d+ ")
#: A Host thread's line printed into the middle of another line (which goes on on the next line).
_SPLICED_THREAD = re.compile(r"^(?P<head>.*?\S.*?)(?P<thread>Thread '[^']+' (?:running|complete|destroyed))$")


#: Distinct messages a :class:`ConsoleParser` remembers the match of (then it starts over).
PARSE_MEMO_LINES = 1024


class ConsoleParser:
    """Turn raw console lines into :class:`ConsoleLine` events with a pattern table."""

    def __init__(self, patterns: Iterable[Pattern] = DEFAULT_PATTERNS, extra: Iterable[Pattern] = ()) -> None:
        self.patterns: list[Pattern] = list(extra) + list(patterns)
        self._spliced: tuple[str, float] | None = None  # head of a line cut by a thread's line
        self._memo: dict[str, tuple[str | None, dict[str, Any]]] = {}  # message -> (event, fields)
        self._memo_key = (id(self.patterns), len(self.patterns))

    def add(self, pattern: Pattern) -> None:
        """Add a pattern, tried before all existing ones (so it can override a default)."""
        self.patterns.insert(0, pattern)

    def parse(self, line: str, t: float) -> ConsoleLine:
        """Parse one line (without its newline); the microsecond prefix goes to ``fields["us"]``.

        A line that ends in a Host thread's line (``…sizThread 'keyboard' running``) is
        parsed as that thread line, and its head is put before the next line
        (``e 0xf8000``), which is then parsed whole: one line in, one line out.
        """
        text = line.rstrip("\r\n")
        if self._spliced is not None:
            head, t = self._spliced
            self._spliced = None
            text = head + text
        if "Thread '" in text:
            spliced = _SPLICED_THREAD.match(text)
            if spliced and not _US_ONLY.fullmatch(spliced.group("head")):
                self._spliced = (spliced.group("head"), t)
                text = spliced.group("thread")
        message = text.rstrip()
        m = _US_PREFIX.match(message)
        if m is None:
            event, matched = self._match(message)
            return ConsoleLine(t, text, event, dict(matched))
        event, matched = self._match(message[m.end() :])
        fields = dict(matched)
        fields["us"] = int(m.group(1))
        return ConsoleLine(t, text, event, fields)

    def _match(self, message: str) -> tuple[str | None, dict[str, Any]]:
        """The first pattern matching ``message`` (sans microsecond prefix) and its fields, remembered:
        a device repeats the same messages (two per TCP segment), the prefix is what changes."""
        patterns = self.patterns
        key = (id(patterns), len(patterns))
        if key != self._memo_key:  # patterns added or replaced: what was remembered no longer holds
            self._memo.clear()
            self._memo_key = key
        hit = self._memo.get(message)
        if hit is not None:
            return hit
        found: tuple[str | None, dict[str, Any]] = (None, {})
        for pattern in patterns:
            if not message.startswith(pattern._prefix):  # most patterns, without a call
                continue
            fields = pattern.match(message)
            if fields is not None:
                found = (pattern.name, fields)
                break
        if len(self._memo) >= PARSE_MEMO_LINES:
            self._memo.clear()
        self._memo[message] = found
        return found


# -- outcome inference ------------------------------------------------------------------------------------------

#: Events that show an update is being received or processed.
OTA_ACTIVITY = frozenset(
    {
        "ota_write",
        "build_timestamp_current",
        "build_timestamp_file",
        "ota_started",
        "update_slot",
        "skip_rom",
        "signature",
        "rom_update_complete",
        "rom_activated",
        "swapping",
        "switch_ok",
    }
)


#: Events that mean the board (re)booted: the Host emulator's or the chip ROM's banner, rBoot's banner
#: and its choice of slot (a garbled ROM banner leaves the rBoot lines), the Host emulator's exit.
BOOT_EVENTS = frozenset({"boot", "bootloader", "rom_boot", "restart"})


class OutcomeTracker:
    """Infer the outcome of one update attempt from console lines.

    Outcomes (:class:`~otalib.vocabulary.Outcome`, by kind): ``updated`` (a restart, then the device
    runs a different slot or version), ``rejected`` with the device's error (a device error line, e.g.
    ``rejected:VerificationFailed``; for errors found mid-stream — downgrade, format, decryption — that
    ``Error: …`` line is all the device prints; no error when only ``Switching failed!`` shows),
    ``restarted`` (restart, but same slot and version), ``skipped`` (no OTA line and no restart for
    ``quiet`` s after the publish), ``bricked`` (after the update the firmware crashes or rBoot finds no
    bootable slot), ``timeout`` (activity or restart seen but no decision within ``timeout`` s).

    Works at the default debug level too, where only the restart and the new
    ``Currently running …`` line show. Feed every line (from boot on, so the tracker
    learns the running slot/version), call :meth:`published` at publish time, and
    :meth:`poll` with the current time while waiting.
    """

    def __init__(self, quiet: float = 10.0, timeout: float = 120.0) -> None:
        self.quiet = quiet
        self.timeout = timeout
        self.slot: int | None = None
        self.version: str | None = None
        self.outcome: Outcome | None = None
        self.evidence: list[ConsoleLine] = []
        self._t_publish: float | None = None
        self._baseline: tuple[int | None, str | None] | None = None
        self._activity = False
        self._restarted = False
        self._terminated = False

    def published(self, t: float) -> None:
        """Start an attempt: the update was published at time ``t``."""
        self._t_publish = t
        self._baseline = (self.slot, self.version)
        self.outcome = None
        self.evidence = []
        self._activity = self._restarted = False

    @property
    def started(self) -> bool:
        return self._t_publish is not None

    def _decide(self, kind: OutcomeKind, line: ConsoleLine | None = None, error: str | None = None) -> Outcome:
        if line is not None:
            self.evidence.append(line)
        self.outcome = Outcome(kind, DeviceErrorCode(error) if error else None)
        return self.outcome

    def feed(self, line: ConsoleLine) -> Outcome | None:
        """Take one line; return the outcome once it is decided (then keep returning it)."""
        ev, f = line.event, line.fields
        if ev == "running":
            self.slot, self.version = f.get("slot"), f.get("version")
        elif ev == "rom_count" and self.slot is None:
            self.slot = f.get("slot")
        if self.outcome is not None:
            return self.outcome
        if self._t_publish is None:
            # Not armed: arm implicitly at the first sign of an update, or (default debug level,
            # where nothing else shows) at a restart of a board whose running slot is known.
            if (
                ev in OTA_ACTIVITY
                or ev in ("device_error", "got_error", "switch_failed")
                or (ev in BOOT_EVENTS and self.slot is not None and not self._terminated)
            ):
                self.published(line.t)
            else:
                if ev == "terminated":
                    self._terminated = True
                elif ev == "rom_boot":  # a first boot: learn its slot (not an update)
                    self.slot = f.get("slot")
                return None
        if ev in OTA_ACTIVITY:
            self._activity = True
            if ev in ("swapping", "switch_ok", "rom_activated"):
                self.evidence.append(line)
        elif ev in ("device_error", "got_error") and f.get("error"):
            return self._decide(OutcomeKind.REJECTED, line, f["error"])
        elif ev == "switch_failed":
            return self._decide(OutcomeKind.REJECTED, line)
        elif ev in ("crash", "no_good_rom"):
            return self._decide(OutcomeKind.BRICKED, line)
        elif ev == "terminated":
            self._terminated = True
        elif ev in BOOT_EVENTS and not self._terminated:
            self._restarted = True
            self.evidence.append(line)
            if ev == "rom_boot":  # rBoot's choice is the slot that runs
                self.slot = f.get("slot")
        elif ev == "running":
            self._terminated = False  # a fresh boot
            if not self._restarted:
                return None
            self.evidence.append(line)
            before = self._baseline or (None, None)
            if before == (None, None) or (f.get("slot"), f.get("version")) != before:
                return self._decide(OutcomeKind.UPDATED)
            return self._decide(OutcomeKind.RESTARTED)
        return None

    def poll(self, now: float) -> Outcome | None:
        """Time-based decisions (``skipped``, ``timeout``) at time ``now``."""
        if self.outcome is not None or self._t_publish is None:
            return self.outcome
        waited = now - self._t_publish
        if not self._activity and not self._restarted and waited >= self.quiet:
            return self._decide(OutcomeKind.SKIPPED)
        if waited >= self.timeout:
            return self._decide(OutcomeKind.TIMEOUT)
        return None

    def rearm(self) -> None:
        """Forget the decided attempt; the next one arms at the next sign of an update."""
        self._t_publish = None
        self._baseline = None
        self.outcome = None
        self.evidence = []
        self._activity = self._restarted = self._terminated = False


def outcome_of(lines: Iterable[ConsoleLine], published: float, now: float, **kwargs: Any) -> Outcome | None:
    """Outcome of a recorded console (``published`` and ``now`` on the lines' clock)."""
    tracker = OutcomeTracker(**kwargs)
    armed = False
    for line in lines:
        if not armed and line.t >= published:
            tracker.published(published)
            armed = True
        result = tracker.feed(line)
        if result is not None:
            return result
    if not armed:
        tracker.published(published)
    return tracker.poll(now)


# -- decisions as console lines --------------------------------------------------------------------------------------


def outcome_line(outcome: Outcome, t: float) -> ConsoleLine:
    """A synthetic line reporting an inferred outcome (``event == "outcome"``; JSON-ready: its text form)."""
    return ConsoleLine(t=t, line="", event="outcome", fields={"outcome": outcome.text})


def reached(line: ConsoleLine, until: str) -> bool:
    """Does ``line`` satisfy ``--until``: its event name, or an inferred outcome (``updated``, ``rejected``…)."""
    if line.event == until:
        return True
    if line.event != "outcome" or not line.fields.get("outcome"):
        return False
    outcome = Outcome.parse(line.fields["outcome"])
    return until in (outcome.text, outcome.kind.value)
