"""The lab configuration, in the Sming framework's own variable names.

Read from a TOML file (``load_config(path)``, ``$OTALAB_CONFIG`` or ``./otalab.toml``),
overridden by environment variables of the same names; explicit CLI options win
over both; ``otalab config`` shows each value and its source. :meth:`LabConfig.device_build`
makes the device's :class:`~otalib.board.sim.build.DeviceBuild` of them, :attr:`LabConfig.broker_url`
the broker's URL (``mqtts://`` with ``ENABLE_SSL``). Example ``otalab.toml``::

    APP_ID = "test"
    APP_VERSION = "4.3"
    MQTT_URL = "mqtt://127.0.0.1:1883"
    ENABLE_OTA_ADVANCED = 1
    OTA_KEY = "ota.key"
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from otalib.errors import ConfigError, UsageError
from otalib.formats.version import Version

if TYPE_CHECKING:
    from otalib.board.sim.build import DeviceBuild
    from otalib.keys import DeviceKeys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILE = "otalab.toml"


@dataclass(frozen=True)
class LabConfig:
    """Settings a Sming user already knows (names as in the framework's makefiles)."""

    APP_ID: str = "test"
    APP_VERSION: str = "4.3"
    APP_VERSION_PATCH: int | None = None
    MQTT_URL: str = "mqtt://127.0.0.1:1883"
    ENABLE_SSL: bool = False
    ENABLE_CLIENT_CERTIFICATE: bool = False
    MQTT_FINGERPRINT_SHA1: str = ""
    #: None (unset): each command's default (``otalab board`` is advanced, ``inspect`` asks the file).
    ENABLE_OTA_ADVANCED: bool | None = None
    ENABLE_OTA_VARINT_VERSION: bool = True
    #: The framework's defaults; a device's build takes them only when set (else its keys decide).
    ENABLE_OTA_SIGNING: bool = True
    ENABLE_OTA_ENCRYPTION: bool = False
    #: Sming's ``ENABLE_OTA_DOWNGRADE`` (default 0): 1 builds without downgrade protection.
    ENABLE_OTA_DOWNGRADE: bool = False
    OTA_KEY: str = "ota.key"
    #: Build time of the board's firmware (ms since 1900, as in the .ota header); None: unknown.
    FIRMWARE_BUILD_TIMESTAMP: int | None = None
    #: The virtual board's device timing (otalab's own: esp8266, esp8266-160, esp32 or none).
    TIMING: str = "none"
    source: str = "defaults"
    #: The settings given in the file or the environment (the others are defaults).
    explicit: frozenset[str] = frozenset()
    #: Where each explicit setting came from: the file's path, ``environment`` or ``option``.
    origins: tuple[tuple[str, str], ...] = ()

    @property
    def version(self) -> Version:
        """``APP_VERSION`` with ``APP_VERSION_PATCH`` as a :class:`Version`."""
        base = Version.parse(self.APP_VERSION)
        return Version(base.major, base.minor, self.APP_VERSION_PATCH or 0)

    @property
    def topic(self) -> str:
        """The update topic a device with this configuration subscribes to."""
        from otalib.formats.version import topic_for

        return topic_for(self.APP_ID, self.version)

    @property
    def broker_url(self) -> str:
        """``MQTT_URL``, made ``mqtts://`` when ``ENABLE_SSL`` is on (as the firmware's client connects)."""
        url = self.MQTT_URL
        if self.ENABLE_SSL and url.lower().startswith("mqtt://"):
            url = "mqtts://" + url[len("mqtt://") :]
        return url

    def pins_for(self, url: str) -> tuple[str, ...]:
        """``MQTT_FINGERPRINT_SHA1`` as the pin of a TLS connection to ``url`` (none for plain MQTT)."""
        if self.MQTT_FINGERPRINT_SHA1 and url.lower().startswith("mqtts://"):
            from otalib.mqtt.tls import parse_pin

            try:
                parse_pin(self.MQTT_FINGERPRINT_SHA1)
            except UsageError as exc:
                raise ConfigError(f"MQTT_FINGERPRINT_SHA1 ({self.origin('MQTT_FINGERPRINT_SHA1')}): {exc}") from None
            return (self.MQTT_FINGERPRINT_SHA1,)
        return ()

    def check_client_certificate(self, url: str, client_cert: object) -> None:
        """A device built with ``ENABLE_CLIENT_CERTIFICATE=1`` has a client certificate for TLS:
        :class:`UsageError` when a TLS connection to ``url`` would be made without one."""
        if self.ENABLE_CLIENT_CERTIFICATE and url.lower().startswith("mqtts://") and client_cert is None:
            where = self.origin("ENABLE_CLIENT_CERTIFICATE")
            raise UsageError(f"ENABLE_CLIENT_CERTIFICATE=1 ({where}): give the board --client-cert and --client-key")

    def deploy_url(self) -> str:
        """The broker's URL (:attr:`broker_url`) with the update topic as its path."""
        return self.broker_url.rstrip("/") + "/" + self.topic

    def origin(self, name: str) -> str:
        """Where setting ``name`` came from: the file's path, ``environment``, ``option`` or ``default``."""
        return dict(self.origins).get(name, "default")

    def items(self) -> list[tuple[str, object]]:
        """Every setting with its effective value, in the file's order."""
        return [(name, getattr(self, name)) for name in SETTINGS]

    def device_build(self, base: DeviceBuild | None = None, *, load_keys: bool = True) -> DeviceBuild:
        """``base`` (default: a :class:`DeviceBuild`'s defaults) with this configuration's explicit settings.

        ``OTA_KEY`` is read only when it is set explicitly and the build signs or encrypts
        (``load_keys=False``: the caller gives the keys itself); then unset signing/encryption
        flags take Sming's defaults (signing on, encryption off).
        """
        from otalib.board.sim.build import DeviceBuild

        build = base or DeviceBuild()
        given = self.explicit
        changes: dict[str, object] = {}
        if "APP_ID" in given:
            changes["app_id"] = self.APP_ID
        if "APP_VERSION" in given:
            changes["version"] = self.version
        if "APP_VERSION_PATCH" in given and self.APP_VERSION_PATCH is not None:
            changes["current_patch"] = self.APP_VERSION_PATCH
        for name, attr in _BUILD_FLAGS.items():
            if name in given and getattr(self, name) is not None:
                changes[attr] = getattr(self, name)
        if self.FIRMWARE_BUILD_TIMESTAMP is not None:
            changes["firmware_timestamp"] = self.FIRMWARE_BUILD_TIMESTAMP
        build = replace(build, **changes)  # type: ignore[arg-type]
        wants_keys = build.is_advanced and (build.signing is not False or build.encryption)
        if load_keys and "OTA_KEY" in given and wants_keys:
            # the key file holds both keys: the flags choose, with Sming's defaults (signing on, encryption off)
            signing = True if build.signing is None else build.signing
            encryption = False if build.encryption is None else build.encryption
            build = replace(build, keys=self.device_keys(), signing=signing, encryption=encryption)
        return build

    def device_keys(self) -> DeviceKeys:
        """The device keys of ``OTA_KEY`` (a :class:`ConfigError` naming it when it is missing)."""
        from otalib.keys import DeviceKeys, load_key

        path = Path(self.OTA_KEY).expanduser()
        if not path.is_file():
            raise ConfigError(f"OTA_KEY={self.OTA_KEY} ({self.origin('OTA_KEY')}): no such key file (`otalab keygen`)")
        return DeviceKeys.of(load_key(path))


#: The settings, in declaration order.
SETTINGS = tuple(f.name for f in fields(LabConfig) if f.name not in ("source", "explicit", "origins"))
_NAMES = SETTINGS
#: Build flags and the :class:`DeviceBuild` field each one sets.
_BUILD_FLAGS = {
    "ENABLE_OTA_ADVANCED": "advanced",
    "ENABLE_OTA_SIGNING": "signing",
    "ENABLE_OTA_ENCRYPTION": "encryption",
    "ENABLE_OTA_VARINT_VERSION": "varint",
    "ENABLE_OTA_DOWNGRADE": "allow_downgrade",
}
#: Settings holding secrets or paths to them: shown as given, never read out.
KEY_SETTINGS = frozenset({"OTA_KEY"})
_TIMINGS = ("esp8266", "esp8266-160", "esp32", "none")  # TimingProfile's values (no import cycle at load)
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


def _coerce(name: str, value: object) -> object:
    kind = LabConfig.__dataclass_fields__[name].type
    text = str(value).strip()
    if "bool" in str(kind):
        if isinstance(value, bool):
            return value
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"bad {name}={value!r}: expected 1 or 0")
    if "int" in str(kind):
        if text == "":
            return None
        try:
            number = int(text)
        except ValueError:
            raise ConfigError(f"bad {name}={value!r}: expected a whole number") from None
        if number < 0:
            raise ConfigError(f"bad {name}={value!r}: must not be negative")
        return number
    return text


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
) -> LabConfig:
    """Defaults, then the TOML file, then the environment, then ``options`` (a command's own)."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    source = "defaults"
    explicit = path or env.get("OTALAB_CONFIG")
    file = Path(explicit) if explicit else Path(CONFIG_FILE)
    if file.is_file():
        try:
            data = tomllib.loads(file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"bad configuration file {file}: {exc}") from None
        unknown = sorted(set(data) - set(_NAMES))
        if unknown:
            raise ConfigError(f"unknown setting(s) in {file}: {', '.join(unknown)}")
        values.update({k: _coerce(k, v) for k, v in data.items()})
        origins.update(dict.fromkeys(data, str(file)))
        source = str(file)
    elif explicit:
        raise ConfigError(f"configuration file not found: {file}")
    for name in _NAMES:
        if name in env:
            values[name] = _coerce(name, env[name])
            origins[name] = "environment"
            source = f"{source}+env" if "+env" not in source else source
    for name, value in (options or {}).items():
        if name not in _NAMES:
            raise ConfigError(f"unknown setting {name} (one of {', '.join(_NAMES)})")
        values[name] = _coerce(name, value)
        origins[name] = "option"
    config = LabConfig(
        **values,  # type: ignore[arg-type]
        source=source,
        explicit=frozenset(values),
        origins=tuple(sorted(origins.items())),
    )
    if config.TIMING not in _TIMINGS:
        raise ConfigError(f"bad TIMING={config.TIMING!r} ({config.origin('TIMING')}): one of {', '.join(_TIMINGS)}")
    try:
        config.version  # noqa: B018 - validates APP_VERSION
    except UsageError as exc:
        where = source if config.origin("APP_VERSION") != "option" else "option"
        raise ConfigError(f"bad APP_VERSION={config.APP_VERSION!r} ({where}): {exc}") from None
    return config
