"""What every lab broker backend shares: users, ports, a managed subprocess, URLs.

A backend subclass writes its configuration and names the command to run; this
base class picks free ports on the host (retrying on a race), starts the process
with its output in ``log_path``, waits (bounded) until the port accepts
connections, and stops it with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from otalib import procs
from otalib.certs import LabPKI
from otalib.errors import BrokerError, UsageError
from otalib.procs import owned_tempdir

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_RETRIES = 5


@dataclass(frozen=True)
class BrokerUser:
    """A broker account: the deployer may publish ``a/#``; a device may only read ``a/<app_id>/u/#``."""

    name: str
    password: str
    role: Literal["deployer", "device"] = "deployer"
    app_id: str = "test"

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in ":#+/ \t\r\n"):
            raise UsageError(f"bad broker user name {self.name!r}")
        if not self.password or "\n" in self.password:
            raise UsageError(f"bad password for broker user {self.name!r}")
        if self.role not in ("deployer", "device"):
            raise UsageError(f"bad role {self.role!r} for broker user {self.name!r} (deployer or device)")
        if not self.app_id or any(c in self.app_id for c in "#+/ \t\r\n"):
            raise UsageError(f"bad app id {self.app_id!r}")

    @property
    def read_topic(self) -> str:
        """The topic filter a device user may read."""
        return f"a/{self.app_id}/u/#"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel's pick for ``host:0``)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True if a listener could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Broker:
    """A running lab broker; use as a context manager. ``stop()`` is idempotent."""

    backend: str = ""
    log_name: str = "broker.log"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        require_client_cert: bool = False,
        users: Sequence[BrokerUser] = (),
        max_packet_size: int | None = None,
        workdir: Path | None = None,
        server_names: Sequence[str] = (),
        plain_port: int | None = None,
    ) -> None:
        if require_client_cert and not tls:
            raise UsageError("require_client_cert needs tls")
        if plain_port is not None and not tls:
            raise UsageError("a plain listener beside the main one needs tls (without tls the broker is plain)")
        if plain_port is not None and not 0 <= plain_port <= 65535:
            raise UsageError(f"bad plain port {plain_port}")
        if plain_port and plain_port == port:
            raise UsageError(f"the plain port {plain_port} is the TLS port")
        if max_packet_size is not None and max_packet_size < 20:
            raise UsageError(f"max_packet_size {max_packet_size} is too small (at least 20 bytes)")
        if not 0 <= port <= 65535:
            raise UsageError(f"bad port {port}")
        names = [u.name for u in users]
        if len(set(names)) != len(names):
            raise UsageError("broker user names must be unique")
        self.host = host
        self.port = port
        self.requested_port = port
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.users: tuple[BrokerUser, ...] = tuple(users)
        self.max_packet_size = max_packet_size
        self.server_names = tuple(server_names)
        self.requested_plain_port = plain_port
        self.plain_port: int | None = None
        self.version = ""
        self.notes: list[str] = []
        self._own_workdir = workdir is None
        self.workdir = owned_tempdir(self.backend) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / self.log_name
        self.pki: LabPKI | None = None
        self.ca_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # -- to be provided by a backend -------------------------------------------
    def _command(self) -> list[str]:
        """Write the configuration for ``self.port``/``self.plain_port``; return the argv to run."""
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        """Environment of the broker process (None: inherit)."""
        return None

    # -- URLs --------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``mqtt://host:port`` or ``mqtts://host:port`` (no credentials)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self._url_host()}:{self.port}"

    @property
    def plain_url(self) -> str | None:
        """URL of the plain listener asked for beside the TLS one (no TLS, no client certificate), if any."""
        return f"mqtt://{self._url_host()}:{self.plain_port}" if self.plain_port else None

    @property
    def plain_warning(self) -> str | None:
        """What the plain listener lets through, if there is one (for the user to read)."""
        if not self.plain_url:
            return None
        what = "bypasses the client-certificate requirement: " if self.require_client_cert else ""
        access = "user:password alone" if self.users else "anyone"
        return f"plain listener {self.plain_url} is not encrypted and {what}{access} can connect and publish"

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def url_for(self, topic: str, user: BrokerUser | None = None) -> str:
        """A deploy URL: ``mqtt[s]://user:password@host:port/<topic>``."""
        scheme, rest = self.url.split("://", 1)
        cred = f"{quote(user.name, safe='')}:{quote(user.password, safe='')}@" if user else ""
        return f"{scheme}://{cred}{rest}/{topic.strip('/')}"

    # -- lifecycle ------------------------------------------------------------------
    def _prepare_tls(self) -> None:
        if self.tls and self.pki is None:
            self.pki = LabPKI(self.workdir / "pki", self.server_names)
            self.ca_path = self.pki.ca.cert

    def start(self) -> Broker:
        """Start the broker process and wait until it accepts connections."""
        if self._proc is not None:
            return self
        atexit.register(self.stop)  # a broker never outlives the Python that started it (e.g. a notebook kernel)
        for wanted in (self.requested_port, self.requested_plain_port):
            if wanted and not port_is_free(self.host, wanted):
                raise BrokerError(f"port {self.host}:{wanted} is in use")
        self._prepare_tls()
        attempts = PORT_RETRIES if self.requested_port == 0 or self.requested_plain_port == 0 else 1
        last = ""
        for _ in range(attempts):
            self.port = self.requested_port or free_port(self.host)
            self.plain_port = self.requested_plain_port
            if self.plain_port == 0:
                self.plain_port = self._free_port_but(self.port)
            elif self.plain_port == self.port:  # the kernel's pick for the main port: pick again
                self.port = self._free_port_but(self.plain_port)
            argv = self._command()
            with open(self.log_path, "ab") as log:
                log.write(f"--- otalab: starting {' '.join(argv)}\n".encode())
                log.flush()
                self._proc = procs.popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=self._env(),
                )
            if self._wait_ready():
                return self
            last = self.log_tail()
            self._terminate()
        raise BrokerError(f"{self.backend} broker did not start on {self.host}:{self.port}: {last}")

    def _free_port_but(self, taken: int) -> int:
        port = free_port(self.host)
        while port == taken:
            port = free_port(self.host)
        return port

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if port_accepts(self.host, self.port) and (not self.plain_port or port_accepts(self.host, self.plain_port)):
                return self._proc.poll() is None
            time.sleep(0.02)
        return False

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    @property
    def pid(self) -> int | None:
        """Process id of the broker, while it runs."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, bounded wait, then SIGKILL); remove the workdir only if we made it."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        self._terminate()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):  # a finaliser never raises
                proc.kill()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend} {self.version} {self.url}>"
