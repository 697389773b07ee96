"""The cgroup2 side of container resolution: where cgroup2 is mounted, which
container a cgroup path names, and an index from cgroup id (the inode of the
cgroup's directory, what ``bpf_get_current_cgroup_id()`` returns) to path."""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import OcellusError
from services.common.lifecycle import RateLimitedLog
from services.common.logging import get_logger

log = get_logger("ocellus.cgroups")

PROC_MOUNTS = Path("/proc/self/mounts")

_HEX64 = r"[0-9a-f]{64}"
# One cgroup directory name per row; the first group is the container id. A
# bare id names no runtime: Docker's cgroupfs parent is "docker" (handled in
# parse_container_cgroup), and under kubepods it may be Docker or containerd.
_CONTAINER_SEGMENTS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(rf"docker-({_HEX64})\.scope"), "docker"),
    (re.compile(rf"cri-containerd-({_HEX64})\.scope"), "containerd"),
    (re.compile(rf"nerdctl-({_HEX64})\.scope"), "containerd"),
    (re.compile(rf"crio-({_HEX64})(?:\.scope)?"), "crio"),
    (re.compile(rf"libpod-({_HEX64})(?:\.scope)?"), "podman"),
    (re.compile(rf"({_HEX64})"), None),
)
# kubelet names pod cgroups "pod<uid>" (cgroupfs driver) or
# "kubepods[-<qos>]-pod<uid with _ for ->.slice" (systemd driver). Static pods
# have a 32-hex uid without dashes.
_POD_UID = r"[0-9a-f]{8}(?:[-_]?[0-9a-f]{4}){3}[-_]?[0-9a-f]{12}"
_POD_SEGMENT = re.compile(rf"(?:kubepods(?:-[a-z]+)?-)?pod({_POD_UID})(?:\.slice)?")


class CgroupError(OcellusError):
    """The cgroup2 hierarchy could not be found."""


@dataclass(frozen=True)
class CgroupContainer:
    """What a cgroup path says about its container."""

    runtime: str | None  # None when the path does not name the runtime
    container_id: str
    pod_uid: str | None  # with dashes, when the path holds a kubelet pod segment


@functools.lru_cache(maxsize=8192)
def parse_container_cgroup(path: str) -> CgroupContainer | None:
    """The container a cgroup path belongs to, or None for a host cgroup.

    The deepest container segment wins: a process in a sub-cgroup of a
    container (systemd in a container, Docker in Docker) belongs to it."""
    segments = path.strip("/").split("/")
    for depth in range(len(segments) - 1, -1, -1):
        found = _match_container_segment(segments[depth])
        if found is None:
            continue
        pattern_runtime, container_id = found
        runtime = pattern_runtime
        if runtime is None and depth > 0 and segments[depth - 1] == "docker":
            runtime = "docker"
        return CgroupContainer(runtime, container_id, _pod_uid(segments[:depth]))
    return None


def _match_container_segment(segment: str) -> tuple[str | None, str] | None:
    for pattern, runtime in _CONTAINER_SEGMENTS:
        m = pattern.fullmatch(segment)
        if m is not None:
            return runtime, m.group(1)
    return None


def _pod_uid(parents: list[str]) -> str | None:
    for segment in reversed(parents):
        m = _POD_SEGMENT.fullmatch(segment)
        if m is not None:
            return m.group(1).replace("_", "-")
    return None


def is_container_root(path: str) -> bool:
    """True when ``path`` is a container's own cgroup, not a sub-cgroup of one."""
    last = path.rstrip("/").rpartition("/")[2]
    return _match_container_segment(last) is not None


def find_cgroup2_root(mounts: str | None = None) -> Path:
    """The cgroup2 mount point, from /proc/self/mounts (or the given text).

    On a hybrid v1/v2 host it is e.g. /sys/fs/cgroup/unified; on a pure v2 host
    /sys/fs/cgroup. If there are several, the shortest path wins."""
    text = PROC_MOUNTS.read_text() if mounts is None else mounts
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            found.append(_unescape_mount_path(fields[1]))
    if not found:
        raise CgroupError(
            "no cgroup2 filesystem in /proc/self/mounts; mount one "
            "(mount -t cgroup2 none /sys/fs/cgroup/unified) or set the cgroup root"
        )
    return Path(min(found, key=len))


def _unescape_mount_path(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount paths as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def scan_cgroup_tree(root: Path) -> dict[int, str]:
    """cgroup id → path relative to ``root`` ("/" for the root) for every cgroup.

    Blocking; run it in a thread. On cgroupfs the inode readdir reports is the
    directory's inode, so this costs no stat per cgroup."""
    found = {root.stat().st_ino: "/"}
    pending = [(str(root), "")]
    while pending:
        directory, relative = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = f"{relative}/{entry.name}"
                        found[entry.inode()] = child
                        pending.append((entry.path, child))
        except OSError:
            continue  # removed while we walked: cgroups come and go
    return found


class CgroupIndex:
    """cgroup id → path, kept current by mkdir/rmdir events and by a rescan on
    a miss. Removed cgroups are remembered for ``deleted_grace`` seconds so that
    events which arrive late still resolve; ids still unknown after a rescan
    are remembered as unknown for ``missing_ttl`` so they cost one rescan."""

    def __init__(
        self,
        root: Path,
        counters: collections.Counter[str],
        *,
        deleted_grace: float,
        rescan_min_interval: float,
        missing_ttl: float,
        max_remembered: int = 4096,
    ) -> None:
        self.root = root
        self.counters = counters
        self.deleted_grace = deleted_grace
        self.rescan_min_interval = rescan_min_interval
        self.missing_ttl = missing_ttl
        self.max_remembered = max_remembered
        self._live: dict[int, str] = {}
        self._removed: dict[int, tuple[str, float]] = {}
        self._missing: dict[int, float] = {}
        self._created_during_scan: dict[int, str] = {}
        self._scan_task: asyncio.Task[None] | None = None
        self._scanning = False
        self._last_scan_started = float("-inf")
        self._rescan_errors_log = RateLimitedLog(60.0)

    async def start(self) -> None:
        """The first scan; the index is empty until it is done."""
        await self._scan()

    async def close(self) -> None:
        if self._scan_task is not None and not self._scan_task.done():
            self._scan_task.cancel()
            await asyncio.wait([self._scan_task])  # waits without re-raising its cancellation

    def __len__(self) -> int:
        return len(self._live)

    def created(self, cgroup_id: int, path: str) -> None:
        self._live[cgroup_id] = path
        self._missing.pop(cgroup_id, None)
        self._removed.pop(cgroup_id, None)
        if self._scanning:
            self._created_during_scan[cgroup_id] = path  # the running scan may not see it

    def removed(self, cgroup_id: int, path: str) -> None:
        self._live.pop(cgroup_id, None)
        self._created_during_scan.pop(cgroup_id, None)
        now = time.monotonic()
        self._removed.pop(cgroup_id, None)  # re-inserted at the end: expiry order
        self._removed[cgroup_id] = (path, now + self.deleted_grace)
        self._prune(now)

    def snapshot(self) -> dict[int, str]:
        """Every live cgroup: id → path."""
        return dict(self._live)

    async def rescan(self) -> None:
        """Walk the tree again now (a consumer that may have missed mkdir/rmdir)."""
        await self._scan_started_after(time.monotonic())

    def lookup(self, cgroup_id: int) -> str | None:
        """The path if the index knows it now; no rescan."""
        path = self._live.get(cgroup_id)
        if path is not None:
            return path
        removed = self._removed.get(cgroup_id)
        if removed is not None and removed[1] > time.monotonic():
            return removed[0]
        return None

    async def path(self, cgroup_id: int) -> str | None:
        """The path, rescanning on a miss; None if the cgroup is not there."""
        found = self.lookup(cgroup_id)
        if found is not None:
            return found
        now = time.monotonic()
        expires = self._missing.get(cgroup_id)
        if expires is not None and expires > now:
            return None
        self.counters["index_misses"] += 1
        await self._scan_started_after(now)
        found = self.lookup(cgroup_id)
        if found is None:
            # A scan that began after the event was seen did not find it: the
            # cgroup is gone (or in another hierarchy). Don't rescan for it again soon.
            self._missing.pop(cgroup_id, None)
            self._missing[cgroup_id] = time.monotonic() + self.missing_ttl
            self._prune(time.monotonic())
        return found

    async def _scan_started_after(self, since: float) -> None:
        """Wait for a scan begun at or after ``since``: misses share one scan,
        and scans start no more often than every ``rescan_min_interval``."""
        while self._last_scan_started < since:
            if self._scan_task is None or self._scan_task.done():
                self._scan_task = asyncio.create_task(self._rescan_when_allowed())
            # Shielded: a cancelled caller must not cancel the scan others wait on.
            await asyncio.shield(self._scan_task)

    async def _rescan_when_allowed(self) -> None:
        delay = self._last_scan_started + self.rescan_min_interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.counters["rescans"] += 1
        try:
            await self._scan()
        except CgroupError as e:
            # Events keep flowing unresolved; the next miss tries again.
            self.counters["rescan_errors"] += 1
            if self._rescan_errors_log.ready():
                log.warning("cgroup rescan failed", reason=str(e))

    async def _scan(self) -> None:
        self._last_scan_started = time.monotonic()
        self._scanning = True
        try:
            scanned = await asyncio.to_thread(scan_cgroup_tree, self.root)
        except OSError as e:
            raise CgroupError(f"cannot read the cgroup2 tree at {self.root}: {e}") from e
        finally:
            self._scanning = False
        scanned.update(self._created_during_scan)
        self._created_during_scan.clear()
        for cgroup_id in self._removed:
            scanned.pop(cgroup_id, None)  # rmdir seen after the walk passed it
        self._live = scanned

    def _prune(self, now: float) -> None:
        # Insertion order is expiry order, so expired entries are at the front.
        while self._removed:
            oldest, (_, expires) = next(iter(self._removed.items()))
            if expires > now and len(self._removed) <= self.max_remembered:
                break
            del self._removed[oldest]
        while self._missing:
            oldest, expires = next(iter(self._missing.items()))
            if expires > now and len(self._missing) <= self.max_remembered:
                break
            del self._missing[oldest]
