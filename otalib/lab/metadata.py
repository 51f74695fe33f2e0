"""The snapshot saved beside a run's data: versions, git revision, machine, time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otalib import __version__, procs

if TYPE_CHECKING:
    from otalib.lab.inputs import BenchInputs

#: Distributions whose versions are recorded with every run.
DEPENDENCIES = (
    "paho-mqtt",
    "pynacl",
    "cryptography",
    "esptool",
    "pyserial",
    "pandas",
    "numpy",
    "pyarrow",
    "matplotlib",
    "amqtt",
)

_REPO = Path(__file__).resolve().parents[2]


def utc_now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dependency_versions(names: tuple[str, ...] = DEPENDENCIES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` if not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(repo: Path = _REPO) -> dict[str, Any] | None:
    """``{"revision", "dirty"}`` of the git work tree at ``repo``; ``None`` if not a repository."""

    def git(*args: str) -> str:
        done = procs.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"revision": revision, "dirty": dirty}


def machine_info() -> dict[str, Any]:
    """Host, OS, CPU count and memory of this machine."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": None,
    }
    try:
        import psutil

        info["memory_bytes"] = int(psutil.virtual_memory().total)
        info["cpu_count_physical"] = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    return info


def collect_metadata(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-ready snapshot of the software and machine a run used.

    Callers add what only they know (broker backend and version, device profile,
    firmware hashes) through ``extra``, which is merged last.
    """
    meta: dict[str, Any] = {
        "otalib": __version__,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "dependencies": dependency_versions(),
        "git": git_revision(),
        "machine": machine_info(),
        "collected_at": utc_now(),
    }
    if extra:
        meta.update(extra)
    return meta


def inputs_metadata(inputs: BenchInputs) -> dict[str, Any]:
    """What a campaign signed with and published: the key's source and verification key fingerprint
    (never the key), the firmware's source, patch, build timestamp and each ROM's SHA-256 (or that
    otalab's demo images were used)."""
    described = inputs.describe()
    return {
        "firmware": described["firmware"],
        "key": described["key"],
        "verify_key_sha256": described["key"]["verify_key_sha256"],
        "allow_demo_image": described["allow_demo_image"],
    }
