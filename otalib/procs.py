"""Child processes and temp folders that do not outlive otalab.

Every subprocess otalib starts goes through :func:`popen` (or :func:`run`): on Linux
the child asks the kernel, before it executes its program, for a signal when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), so ``kill -9`` of ``otalab broker`` or
``otalab campaign`` also stops the Mosquitto it started. The kernel sends that
signal when the *thread* that created the child exits, so long-lived children are
created by one daemon thread that lives as long as the process.

A ``kill -9`` still leaves the parent's temp folders: :func:`owned_tempdir` names
them ``<prefix>-<pid>-<random>`` and, each time it makes one, removes those whose
owner process is dead (only folders of this user, never through a symlink).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
PR_SET_PDEATHSIG = 1
#: Folder names :func:`owned_tempdir` makes: ``otalab-<kind>-<owner pid>-<random>``.
OWNED_DIR_RE = re.compile(r"^otalab-[a-z0-9]+-(?P<pid>[1-9][0-9]*)-[A-Za-z0-9_]+$")


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


_PRCTL = _load_prctl()

#: True where children can be tied to their parent's life (Linux).
DIES_WITH_PARENT = _PRCTL is not None


def _die_with(parent_pid: int, sig: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that ties a child to ``parent_pid`` (None where prctl is missing)."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def setup() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(127)

    return setup


class _Spawner:
    """One daemon thread that creates the long-lived children (their PDEATHSIG parent)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="otalab-spawner", daemon=True)
                self._thread.start()
        if threading.current_thread() is self._thread:
            return fn()
        done: Future[Any] = Future()
        self._jobs.put((fn, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed back to the caller's thread
                done.set_exception(exc)


_SPAWNER = _Spawner()


def popen(argv: Sequence[str], *, death_signal: int = signal.SIGTERM, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **kwargs)`` for a child that gets ``death_signal`` when otalab dies.

    The child is created by a thread that lives as long as the process, whichever
    thread calls this. ``preexec_fn`` is otalib's own; pass no other.
    """
    if "preexec_fn" in kwargs:
        raise TypeError("procs.popen sets preexec_fn itself")
    setup = _die_with(os.getpid(), death_signal)
    return _SPAWNER.call(lambda: subprocess.Popen(list(argv), preexec_fn=setup, **kwargs))


def run(argv: Sequence[str], *, death_signal: int = signal.SIGTERM, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, **kwargs)`` for a short-lived child that dies with otalab.

    The calling thread waits for the child, so it may create it itself.
    """
    if "preexec_fn" in kwargs:
        raise TypeError("procs.run sets preexec_fn itself")
    return subprocess.run(list(argv), preexec_fn=_die_with(os.getpid(), death_signal), **kwargs)


# -- temp folders of dead owners ------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True if a process ``pid`` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def stale_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders in ``root`` (default: the temp folder) made by :func:`owned_tempdir` of a dead process.

    Only real folders (not symlinks) owned by this user count.
    """
    folder = Path(root if root is not None else tempfile.gettempdir())
    found: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = OWNED_DIR_RE.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if not pid_alive(int(match["pid"])):
            found.append(Path(entry.path))
    return found


def remove_stale_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the folders :func:`stale_dirs` finds; return them."""
    removed = stale_dirs(root)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def owned_tempdir(kind: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A new temp folder ``otalab-<kind>-<pid>-<random>``, after removing those of dead owners."""
    if not re.fullmatch(r"[a-z0-9]+", kind):
        raise ValueError(f"bad temp folder kind {kind!r}")
    with contextlib.suppress(OSError):
        remove_stale_dirs(root)
    return Path(tempfile.mkdtemp(prefix=f"otalab-{kind}-{os.getpid()}-", dir=root))


__all__ = [
    "DIES_WITH_PARENT",
    "owned_tempdir",
    "pid_alive",
    "popen",
    "remove_stale_dirs",
    "run",
    "stale_dirs",
]
