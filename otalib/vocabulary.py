"""The lab's words, one definition each: update modes, device states, decisions, outcomes.

- :class:`UpdateMode` — how a package is made (``standard`` … ``signed+encrypted``), and what the
  device must be built with to take it (:class:`FirmwareParser`, signing/encryption, keys).
- :class:`FirmwareParser` — the payload parser compiled into the device (``ENABLE_OTA_ADVANCED``).
- :class:`DeviceState` — what the (virtual) device is doing: off, running, receiving, …
- :class:`Decision` — what a device does with one package (applied, skipped, rejected, …): the
  virtual device's own result and ``otalab inspect``'s verdict.
- :class:`TimingProfile` — which device the virtual board takes time like (``esp8266``, ``esp32``, ``none``).
- :class:`Outcome` — what a trial or a console watcher OBSERVED of one update attempt (updated,
  rejected with a device error, timeout, …). Its text form ``rejected:VerificationFailed`` is for
  data frames and JSON only (:meth:`Outcome.text`, :meth:`Outcome.parse`).

Values that are written to data or JSON are ``str`` enums: they compare and serialise as their value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

from otalib.errors import DeviceErrorCode, UsageError

if TYPE_CHECKING:
    from otalib.keys import DeviceKeys, LabKey


_W = TypeVar("_W", bound="_Word")


class _Word(str, Enum):
    """A ``str`` enum that prints as its value (``f"{mode}"`` is ``signed``)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _noun(cls) -> str:
        """What one of these words is called in an error message."""
        return cls.__name__

    @classmethod
    def parse(cls: type[_W], text: str | _W) -> _W:
        """``text`` as one of these words, or :class:`~otalib.errors.UsageError` naming the choices."""
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(word.value for word in cls)
            raise UsageError(f"unknown {cls._noun()} {text!r}: one of {choices}") from None


class FirmwareParser(_Word):
    """The payload parser the device firmware is built with: ``ENABLE_OTA_ADVANCED`` 0 or 1."""

    STANDARD = "standard"  # StandardPayloadParser: the raw ROM image, written without a check
    ADVANCED = "advanced"  # AdvancedPayloadParser: an .ota upgrade file (checksum, signature, encryption)


class UpdateMode(_Word):
    """How a package is made; the order is the order charts list (and colour) the modes in.

    ``md5`` is an unsigned, unencrypted OTA upgrade file (checksum only) for an advanced device.
    """

    STANDARD = "standard"
    SIGNED = "signed"
    ENCRYPTED = "encrypted"
    SIGNED_ENCRYPTED = "signed+encrypted"
    MD5 = "md5"

    @classmethod
    def _noun(cls) -> str:
        return "update mode"

    @property
    def parser(self) -> FirmwareParser:
        """The payload parser the device needs (``ENABLE_OTA_ADVANCED``)."""
        return FirmwareParser.STANDARD if self is UpdateMode.STANDARD else FirmwareParser.ADVANCED

    @property
    def advanced(self) -> bool:
        """True when the device must be built with ``ENABLE_OTA_ADVANCED=1``."""
        return self.parser is FirmwareParser.ADVANCED

    @property
    def signed(self) -> bool:
        """Signed package: the device is built with ``ENABLE_OTA_SIGNING=1`` and holds the verify key."""
        return self in (UpdateMode.SIGNED, UpdateMode.SIGNED_ENCRYPTED)

    @property
    def encrypted(self) -> bool:
        """Encrypted package: the device is built with ``ENABLE_OTA_ENCRYPTION=1`` and holds the decrypt key."""
        return self in (UpdateMode.ENCRYPTED, UpdateMode.SIGNED_ENCRYPTED)

    @property
    def needs_key(self) -> bool:
        """Making the package needs the lab key."""
        return self.signed or self.encrypted

    @property
    def build_flags(self) -> dict[str, bool]:
        """The device build flags this mode needs, by their Sming names."""
        return {
            "ENABLE_OTA_ADVANCED": self.advanced,
            "ENABLE_OTA_SIGNING": self.signed,
            "ENABLE_OTA_ENCRYPTION": self.encrypted,
        }

    def device_keys(self, key: LabKey | None) -> DeviceKeys:
        """The keys a device built for this mode holds, from the lab ``key``."""
        from otalib.keys import DeviceKeys

        if key is None:
            if self.needs_key:
                raise UsageError(f"mode {self.value!r} needs a key")
            return DeviceKeys()
        return DeviceKeys(key.verify_key if self.signed else None, key.decrypt_key if self.encrypted else None)


class TimingProfile(_Word):
    """The device whose time the virtual board spends (:mod:`otalib.board.sim.timing`); ``none`` = instant."""

    @classmethod
    def _noun(cls) -> str:
        return "timing profile"

    ESP8266 = "esp8266"  # ESP8266 at 80 MHz
    ESP8266_160 = "esp8266-160"  # ESP8266 at 160 MHz
    ESP32 = "esp32"  # ESP32 (LX6, 240 MHz)
    NONE = "none"  # no device time: today's instant board


class DeviceState(_Word):
    """What the virtual device is doing."""

    OFF = "off"  # not booted yet
    RUNNING = "running"  # firmware up, waiting for a message
    RECEIVING = "receiving"  # inside an MQTT message (an update streaming in)
    RESTART_PENDING = "restart_pending"  # boot slot switched; the restart comes next
    BRICKED = "bricked"  # nothing bootable: crash loop or rBoot found no good ROM


class Decision(_Word):
    """What a device does with one package (or MQTT message)."""

    APPLIED = "applied"  # boot slot switched, restart pending
    SKIPPED = "skipped"  # older patch: nothing written
    REJECTED = "rejected"  # a device error (its name alongside)
    ABANDONED = "abandoned"  # the connection dropped mid-message (virtual device)
    IGNORED = "ignored"  # empty message, or the device not running (virtual device)
    UNKNOWN = "unknown"  # the device's key is needed to tell (inspect)


class OutcomeKind(_Word):
    """The kind of an observed update outcome."""

    UPDATED = "updated"  # a restart, then a different slot or version runs
    RESTARTED = "restarted"  # a restart, but the same slot and version
    SKIPPED = "skipped"  # nothing happened (a virtual board says so; a real one stays quiet)
    REJECTED = "rejected"  # the device printed an error / "Switching failed!"
    TIMEOUT = "timeout"  # no decision in time
    BRICKED = "bricked"  # after the update the firmware crashes or nothing boots


@dataclass(frozen=True)
class Outcome:
    """An observed outcome: its kind and, when rejected, the device's error name (if it printed one)."""

    kind: OutcomeKind
    error: DeviceErrorCode | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OutcomeKind(self.kind))
        if self.error is not None:
            if self.kind is not OutcomeKind.REJECTED:
                raise ValueError(f"only a rejected outcome carries a device error, not {self.kind.value}")
            object.__setattr__(self, "error", DeviceErrorCode(self.error))

    @property
    def text(self) -> str:
        """The data-frame / JSON form: ``updated``, ``rejected:VerificationFailed``."""
        return self.kind.value if self.error is None else f"{self.kind.value}:{self.error.value}"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:  # short in a notebook, and still Python
        return f"Outcome.parse({self.text!r})"

    @classmethod
    def parse(cls, text: str) -> Outcome:
        """The inverse of :attr:`text`; ValueError on anything else."""
        kind, sep, error = str(text).partition(":")
        try:
            return cls(OutcomeKind(kind), DeviceErrorCode(error) if sep else None)
        except ValueError:
            raise ValueError(f"not an outcome: {text!r}") from None


__all__ = ["Decision", "DeviceState", "FirmwareParser", "Outcome", "OutcomeKind", "TimingProfile", "UpdateMode"]
