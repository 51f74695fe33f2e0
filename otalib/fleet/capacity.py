"""Will a fleet fit this machine? An estimate of its memory and file descriptors, checked before it starts."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from otalib.errors import LabError

#: Resident memory of one board with its device, client and console buffer (measured: bench_fleet).
BOARD_BYTES = 192 * 1024
#: A process's own memory before any board (Python, numpy, pandas, paho).
BASE_BYTES = 150 * 1024 * 1024
#: File descriptors a process needs besides its boards' sockets.
SPARE_FDS = 64


@dataclass(frozen=True)
class Estimate:
    """What a fleet needs: memory (bytes) and file descriptors per process."""

    boards: int
    memory_bytes: int
    fds_per_process: int
    broker_fds: int

    def describe(self) -> str:
        return (
            f"{self.boards} boards need about {self.memory_bytes / 2**20:.0f} MiB of memory and "
            f"{self.fds_per_process} file descriptors per fleet process ({self.broker_fds} for the broker)"
        )


def estimate(boards: int, package_bytes: int, processes: int = 1, console_bytes: int = 64 * 1024) -> Estimate:
    """The estimate for ``boards`` split over ``processes``; the firmware is stored once per process."""
    per_process = -(-boards // max(1, processes))
    memory = processes * (BASE_BYTES + 2 * package_bytes) + boards * (BOARD_BYTES + console_bytes)
    return Estimate(boards, memory, per_process + SPARE_FDS, boards + SPARE_FDS)


def available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_capacity(need: Estimate, *, managed_broker: bool = True) -> None:
    """Refuse a fleet the machine cannot hold, naming the limit and the estimate."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if need.fds_per_process > limit:
        raise LabError(
            f"too many boards for this machine: {need.describe()}, the open-file limit (RLIMIT_NOFILE) is {limit}"
        )
    if managed_broker and need.broker_fds > limit:
        raise LabError(
            f"too many boards for the managed broker: {need.describe()}, its open-file limit (RLIMIT_NOFILE) is {limit}"
        )
    available = available_memory()
    if available is not None and need.memory_bytes > available:
        raise LabError(
            f"too many boards for this machine: {need.describe()}, {available / 2**20:.0f} MiB are available"
        )
