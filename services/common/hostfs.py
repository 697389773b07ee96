"""Facts about the host's mounts, shared by the sensor and the enricher."""

from __future__ import annotations

import time
from pathlib import Path


def boot_time_ns() -> int:
    """Wall-clock nanoseconds at boot: a kernel ktime (CLOCK_BOOTTIME) + this = wall time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def mounted_types(mounts: Path = Path("/proc/self/mounts")) -> dict[str, str]:
    """Mount point → filesystem type."""
    result = {}
    for line in mounts.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            result[parts[1]] = parts[2]
    return result


def cgroup2_root(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on
    hybrid hosts); None if it is not."""
    roots = [Path(m) for m, t in mounted_types(mounts).items() if t == "cgroup2"]
    return min(roots, key=lambda p: len(p.parts)) if roots else None
