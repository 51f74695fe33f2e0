"""Helpers for tests that run real ``otalab`` processes: start, read their lines, find their children.

Every wait is bounded; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0


def otalab_env() -> dict[str, str]:
    """The environment for an ``otalab`` subprocess that imports this tree's otalib."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


class OtalabProcess:
    """``python -m otalib ARGS`` with its stdout read line by line into a queue."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otalib", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=otalab_env(),
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, prefix: str, timeout: float = WAIT) -> str:
        """The first line starting with ``prefix`` (every line read is kept in :attr:`lines`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} within {timeout} s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"otalab exited ({self.proc.wait()}) before {prefix!r}: {self.lines}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def finish(self, timeout: float = WAIT) -> int:
        """Wait (bounded) for the process to exit and read all its lines; return its exit code."""
        code = self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while (line := self._queue.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            self.lines.append(line)
        return code

    def field(self, name: str) -> str | None:
        """The value of the ``name: value`` line read so far (None if there is none)."""
        for line in self.lines:
            if line.startswith(f"{name}: "):
                return line.split(": ", 1)[1]
        return None

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)


@contextlib.contextmanager
def otalab_process(*args: str, cwd: Path | None = None) -> Iterator[OtalabProcess]:
    """An :class:`OtalabProcess`, stopped (SIGTERM, then SIGKILL) at the end."""
    process = OtalabProcess(*args, cwd=cwd)
    try:
        yield process
    finally:
        process.stop()


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def gone(pid: int, timeout: float = WAIT) -> bool:
    """True once process ``pid`` has exited (waits at most ``timeout``); a zombie counts as gone."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            proc.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            return True
        except psutil.TimeoutExpired:
            pass
        except psutil.NoSuchProcess:
            return True
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
    return False


#: Lab settings a test must not inherit from the caller's environment.
LAB_SETTINGS = ("MQTT_URL", "APP_ID", "APP_VERSION", "APP_VERSION_PATCH", "ENABLE_OTA_VARINT_VERSION", "OTALAB_CONFIG")
LAB_SETTINGS += ("TIMING",)


def run_otalab(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m otalib ARGS`` with no lab settings from the caller's environment (only ``env``)."""
    full = {k: v for k, v in os.environ.items() if k not in LAB_SETTINGS}
    full["PYTHONPATH"] = str(ROOT) + (os.pathsep + full["PYTHONPATH"] if full.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "otalib", *args],
        cwd=cwd,
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
