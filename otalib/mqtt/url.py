"""Deploy URLs as the reference deployer takes them.

``mqtt[s]://user:password@host[:port]/a/<app>/u/<major>.<minor>[/<channel>]``:
default ports 1883 (``mqtt``) and 8883 (``mqtts``); the topic is the path
without leading and trailing slashes; user and password are percent-decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from otalib.errors import UsageError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class MqttUrl:
    """A parsed ``mqtt://`` / ``mqtts://`` URL."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    topic: str | None = None

    @property
    def tls(self) -> bool:
        """True for ``mqtts://``."""
        return self.scheme == "mqtts"

    def _netloc(self, with_password: bool) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = ""
        if self.username is not None:
            user = quote(self.username, safe="")
            if with_password and self.password is not None:
                user += ":" + quote(self.password, safe="")
            user += "@"
        return f"{user}{host}:{self.port}"

    def without_credentials(self) -> str:
        """The URL with the password left out (safe to print and record)."""
        path = f"/{self.topic}" if self.topic else ""
        return f"{self.scheme}://{self._netloc(False)}{path}"

    def with_credentials(self) -> str:
        """The full URL, password included (never print this)."""
        path = f"/{self.topic}" if self.topic else ""
        return f"{self.scheme}://{self._netloc(True)}{path}"

    def __str__(self) -> str:
        return self.without_credentials()


def parse_url(url: str) -> MqttUrl:
    """Parse a deploy URL; raise :class:`UsageError` with a one-line reason if it is not one."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError("empty broker URL")
    text = url.strip()
    if "://" not in text:
        raise UsageError(f"not an MQTT URL (expected mqtt://host/topic or mqtts://...): {_masked(text)}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"bad broker URL ({exc}): {_masked(text)}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"unsupported URL scheme {parts.scheme!r} (use mqtt:// or mqtts://)")
    host = parts.hostname
    if not host:
        raise UsageError(f"no host in broker URL: {_masked(text)}")
    if port == 0:
        raise UsageError(f"bad port 0 in broker URL: {_masked(text)}")
    if "?" in text or "#" in text:
        raise UsageError(
            "a broker URL takes no '?' or '#' (no query or fragment; a topic wildcard cannot be published to;"
            " percent-encode them in a password)"
        )
    topic = unquote(parts.path).strip("/") or None
    if topic is not None and ("+" in topic or "#" in topic):
        raise UsageError(f"topic {topic!r} contains a wildcard (+ or #): cannot publish to it")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return MqttUrl(scheme, host, port or DEFAULT_PORTS[scheme], username, password, topic)


def _masked(text: str) -> str:
    """``text`` with any password replaced by ``***`` (for error messages)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    return f"{scheme}://{netloc}{slash}{path}"
