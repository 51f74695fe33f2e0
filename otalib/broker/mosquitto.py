"""Mosquitto as a managed subprocess with a generated configuration.

Files in the workdir: ``mosquitto.conf``, ``passwd`` (via ``mosquitto_passwd``, or the
same ``$7$`` PBKDF2-SHA512 format written here if that tool is missing), ``acl`` and
``mosquitto.log`` (``log_type all``: it includes ``subscribe`` and ``debug``, the client
subscriptions and ``Sending PUBLISH to <client> (…)`` lines that
:class:`~otalib.broker.log_watch.BrokerLogWatch` reads as a trial's evidence). The deployer
may publish ``a/#``; a device user may only read ``a/<app_id>/u/#``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

from otalib import procs
from otalib.broker.base import Broker
from otalib.errors import BrokerError
from otalib.fileio import SECRET_MODE, write_atomic

#: Folders searched after PATH (Debian/Ubuntu, source installs, Homebrew).
EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/usr/local/opt/mosquitto/sbin")


def _search_dirs() -> list[str]:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += EXTRA_DIRS
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        dirs += [os.path.join(conda, "bin"), os.path.join(conda, "sbin")]
    dirs.append(os.path.dirname(sys.executable))
    return list(dict.fromkeys(dirs))


def find_tool(name: str) -> Path | None:
    """A Mosquitto tool (``mosquitto``, ``mosquitto_passwd``) on PATH or in the usual sbin folders."""
    for folder in _search_dirs():
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_mosquitto() -> Path | None:
    """The ``mosquitto`` binary, or None.

    ``OTALAB_MOSQUITTO`` overrides the search: a path to the binary, or ``none`` to
    pretend Mosquitto is not installed.
    """
    override = os.environ.get("OTALAB_MOSQUITTO", "").strip()
    if override.lower() in ("none", "no", "0", "off"):
        return None
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    return find_tool("mosquitto")


def mosquitto_version(binary: Path) -> str:
    """``2.0.11`` from ``mosquitto -h`` (empty if it cannot be told)."""
    try:
        out = procs.run([str(binary), "-h"], capture_output=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(rb"mosquitto version (\S+)", out)
    return match.group(1).decode() if match else ""


def password_line(name: str, password: str) -> str:
    """One ``passwd`` line in Mosquitto 2's ``$7$`` format (PBKDF2-SHA512, 101 rounds)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{name}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class MosquittoBroker(Broker):
    """Mosquitto run from ``binary`` (default: :func:`find_mosquitto`)."""

    backend = "mosquitto"
    log_name = "mosquitto.log"

    def __init__(
        self,
        *,
        binary: Path | None = None,
        max_connections: int | None = None,
        log_types: tuple[str, ...] | None = None,
        **kwargs,
    ) -> None:
        """``max_connections``: mosquitto's limit (None: unlimited); ``log_types``: what it logs
        (None: everything, as trials read the log; a fleet logs only errors and warnings)."""
        self.max_connections = max_connections
        self.log_types = log_types
        found = binary or find_mosquitto()
        if found is None:
            raise BrokerError("mosquitto not found (install it, or use the embedded broker)")
        self.binary = Path(found)
        super().__init__(**kwargs)
        self.version = mosquitto_version(self.binary)
        self.conf_path = self.workdir / "mosquitto.conf"
        self.passwd_path = self.workdir / "passwd"
        self.acl_path = self.workdir / "acl"
        self._write_auth_files()

    def _write_auth_files(self) -> None:
        if not self.users:
            return
        tool = self.binary.parent / "mosquitto_passwd"
        tool = tool if tool.is_file() else find_tool("mosquitto_passwd")
        self.passwd_path.unlink(missing_ok=True)
        if tool is not None:
            write_atomic(self.passwd_path, b"", mode=SECRET_MODE)
            for user in self.users:
                done = procs.run(
                    [str(tool), "-b", str(self.passwd_path), user.name, user.password],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
                if done.returncode != 0:
                    raise BrokerError(f"mosquitto_passwd failed: {done.stderr.decode(errors='replace').strip()}")
            os.chmod(self.passwd_path, SECRET_MODE)
        else:
            lines = "".join(password_line(u.name, u.password) + "\n" for u in self.users)
            write_atomic(self.passwd_path, lines.encode(), mode=SECRET_MODE)
        acl = []
        for user in self.users:
            acl.append(f"user {user.name}")
            if user.role == "deployer":
                acl.append("topic readwrite a/#")
            else:
                acl.append(f"topic read {user.read_topic}")
            acl.append("")
        write_atomic(self.acl_path, "\n".join(acl).encode())

    def config_text(self) -> str:
        """The mosquitto.conf for the current ports."""
        lines = [
            "# written by otalab",
            "per_listener_settings false",
            "persistence false",
            f"log_dest file {self.log_path}",
            # all: the board's subscriptions and deliveries (broker/log_watch.py)
            *[f"log_type {t}" for t in self.log_types or ("all",)],
            "log_timestamp true",
            "connection_messages true",
            "set_tcp_nodelay true",
            f"allow_anonymous {'false' if self.users else 'true'}",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")  # do not drop to 'mosquitto'
        if self.max_packet_size is not None:
            lines.append(f"max_packet_size {self.max_packet_size}")
        if self.users:
            lines += [f"password_file {self.passwd_path}", f"acl_file {self.acl_path}"]
        lines += ["", f"listener {self.port} {self.host}"]
        if self.max_connections is not None:
            lines.append(f"max_connections {self.max_connections}")
        if self.tls:
            assert self.pki is not None
            lines += [
                f"cafile {self.pki.ca.cert}",
                f"certfile {self.pki.server.cert}",
                f"keyfile {self.pki.server.key}",
                "tls_version tlsv1.2",
            ]
            if self.require_client_cert:
                lines += ["require_certificate true", "use_identity_as_username false"]
            if self.plain_port:
                lines += ["", f"listener {self.plain_port} {self.host}"]
        return "\n".join(lines) + "\n"

    def _command(self) -> list[str]:
        write_atomic(self.conf_path, self.config_text().encode())
        return [str(self.binary), "-c", str(self.conf_path)]
