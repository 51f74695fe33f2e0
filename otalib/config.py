"""The lab configuration, in the Sming framework's own variable names.

Read from a TOML file (``--config``, ``$OTALAB_CONFIG`` or ``./otalab.toml``),
overridden by environment variables of the same names; explicit CLI options win
over both. Example ``otalab.toml``::

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
from dataclasses import dataclass, fields
from pathlib import Path

from otalib.errors import ConfigError, UsageError
from otalib.formats.version import Version

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
    ENABLE_OTA_ADVANCED: bool = False
    ENABLE_OTA_VARINT_VERSION: bool = True
    ENABLE_OTA_SIGNING: bool = True
    ENABLE_OTA_ENCRYPTION: bool = False
    OTA_KEY: str = "ota.key"
    #: Build time of the board's firmware (ms since 1900, as in the .ota header); None: unknown.
    FIRMWARE_BUILD_TIMESTAMP: int | None = None
    source: str = "defaults"
    #: The settings given in the file or the environment (the others are defaults).
    explicit: frozenset[str] = frozenset()

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

    def deploy_url(self) -> str:
        """``MQTT_URL`` with the update topic as its path."""
        return self.MQTT_URL.rstrip("/") + "/" + self.topic


_NAMES = [f.name for f in fields(LabConfig) if f.name not in ("source", "explicit")]
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


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> LabConfig:
    """Defaults, then the TOML file, then the environment."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
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
        source = str(file)
    elif explicit:
        raise ConfigError(f"configuration file not found: {file}")
    for name in _NAMES:
        if name in env:
            values[name] = _coerce(name, env[name])
            source = f"{source}+env" if "+env" not in source else source
    config = LabConfig(**values, source=source, explicit=frozenset(values))  # type: ignore[arg-type]
    try:
        config.version  # noqa: B018 - validates APP_VERSION
    except UsageError as exc:
        raise ConfigError(f"bad APP_VERSION={config.APP_VERSION!r} ({source}): {exc}") from None
    return config
