"""cgroup id → container → pod: the cgroup index says which cgroup an event
came from, its path names the container, and the runtime (Docker Engine API)
gives name, image and labels; CRI labels give the pod."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from services.common.cgroups import (
    CgroupContainer,
    CgroupIndex,
    find_cgroup2_root,
    is_container_root,
    parse_container_cgroup,
)
from services.common.docker import DockerClient, DockerUnavailableError, parse_docker_time
from services.common.lifecycle import RateLimitedLog
from services.common.logging import get_logger

log = get_logger("ocellus.containers")

DEFAULT_DOCKER_SOCKET = Path("/var/run/docker.sock")
# The runtime of a kubepods cgroupfs path ("/kubepods/<qos>/pod<uid>/<id>"),
# which does not say; Docker is asked, and "docker" is reported if it knows the id.
UNKNOWN_RUNTIME = "unknown"

POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"


@dataclasses.dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    container_name: str


@dataclasses.dataclass(frozen=True)
class ContainerInfo:
    runtime: str  # "docker" | "containerd" | "crio" | "podman" | "unknown" (UNKNOWN_RUNTIME)
    id: str  # full container id (64 hex)
    name: str | None  # without Docker's leading "/"
    image: str | None  # image name as the runtime knows it (Config.Image)
    image_id: str | None  # Image ("sha256:...")
    labels: Mapping[str, str] = dataclasses.field(hash=False)  # read-only
    started_ns: int | None  # wall-clock ns since the epoch (State.StartedAt)
    pid: int | None  # host pid of the container's init process (State.Pid)
    pod: PodInfo | None  # from the CRI labels
    resolved: bool  # False: the runtime could not be asked or did not know it; id and runtime only

    @classmethod
    def unresolved(cls, runtime: str, container_id: str) -> ContainerInfo:
        return cls(
            runtime=runtime,
            id=container_id,
            name=None,
            image=None,
            image_id=None,
            labels=MappingProxyType({}),
            started_ns=None,
            pid=None,
            pod=None,
            resolved=False,
        )


def container_info_from_docker(inspect: Mapping[str, Any], container_id: str) -> ContainerInfo:
    """A ContainerInfo from Docker's ``GET /containers/<id>/json`` document."""
    config = _mapping(inspect.get("Config"))
    state = _mapping(inspect.get("State"))
    labels = {str(k): str(v) for k, v in _mapping(config.get("Labels")).items()}
    pid = state.get("Pid")
    return ContainerInfo(
        runtime="docker",
        id=str(inspect.get("Id") or container_id),
        name=_str_or_none(inspect.get("Name"), strip="/"),
        image=_str_or_none(config.get("Image")),
        image_id=_str_or_none(inspect.get("Image")),
        labels=MappingProxyType(labels),
        started_ns=parse_docker_time(state.get("StartedAt")),
        pid=pid if isinstance(pid, int) and pid > 0 else None,  # 0 when not running
        pod=pod_from_labels(labels),
        resolved=True,
    )


def pod_from_labels(labels: Mapping[str, str]) -> PodInfo | None:
    """The pod from the labels the CRI puts on every Kubernetes container."""
    name = labels.get(POD_NAME_LABEL)
    namespace = labels.get(POD_NAMESPACE_LABEL)
    if not name or not namespace:
        return None
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=labels.get(POD_UID_LABEL, ""),
        container_name=labels.get(CONTAINER_NAME_LABEL, ""),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}  # JSON null for an empty section


def _str_or_none(value: object, strip: str = "") -> str | None:
    if not isinstance(value, str):
        return None
    return value.lstrip(strip) or None


@dataclasses.dataclass
class _CachedContainer:
    info: ContainerInfo
    expires: float  # time.monotonic()


class ContainerResolver:
    """Answers "which container is cgroup id N in?" for the enricher (events)
    and the enforcer (scoped policies).

    Container info is cached by id for ``ttl`` seconds (``unresolved_ttl`` for
    ids the runtime did not know or could not be asked about, so a dead daemon
    costs one call per container per ``unresolved_ttl``), at most
    ``max_containers`` entries. A container whose cgroup is removed stays
    resolvable for ``deleted_grace`` seconds. Concurrent lookups of one
    container share one runtime call."""

    def __init__(
        self,
        *,
        cgroup_root: Path | None = None,
        docker_socket: Path = DEFAULT_DOCKER_SOCKET,
        ttl: float = 60.0,
        deleted_grace: float = 30.0,
        rescan_min_interval: float = 1.0,
        unresolved_ttl: float = 5.0,
        runtime_timeout: float = 2.0,
        max_containers: int = 4096,
    ) -> None:
        self.counters: collections.Counter[str] = collections.Counter()
        self.cgroup_root = cgroup_root
        self.ttl = ttl
        self.deleted_grace = deleted_grace
        self.rescan_min_interval = rescan_min_interval
        self.unresolved_ttl = unresolved_ttl
        self.max_containers = max_containers
        self._docker = DockerClient(docker_socket, timeout=runtime_timeout)
        self._index: CgroupIndex | None = None
        self._cache: collections.OrderedDict[str, _CachedContainer] = collections.OrderedDict()
        self._in_flight: dict[str, asyncio.Task[ContainerInfo]] = {}
        self._runtime_errors_log = RateLimitedLog(30.0)

    async def start(self) -> None:
        """Find the cgroup2 root (unless given) and build the cgroup index."""
        if self.cgroup_root is None:
            self.cgroup_root = find_cgroup2_root()
        self._index = CgroupIndex(
            self.cgroup_root,
            self.counters,
            deleted_grace=self.deleted_grace,
            rescan_min_interval=self.rescan_min_interval,
            missing_ttl=self.ttl,
        )
        await self._index.start()
        log.info("cgroup index built", cgroup_root=str(self.cgroup_root), cgroups=len(self._index))

    async def close(self) -> None:
        """Cancel lookups in flight and close the runtime connection; idempotent."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._in_flight.clear()
        if self._index is not None:
            await self._index.close()
        await self._docker.close()

    def cgroup_created(self, cgroup_id: int, path: str) -> None:
        """From ``cgroup:cgroup_mkdir`` of the cgroup2 hierarchy only (the
        tracepoint's ``root`` is 0 there): v1 hierarchies number their own cgroups."""
        self._started_index().created(cgroup_id, path)

    def cgroup_removed(self, cgroup_id: int, path: str) -> None:
        """From ``cgroup:cgroup_rmdir`` (cgroup2 only): events that arrive late,
        within ``deleted_grace``, still resolve to the cgroup and its container."""
        self._started_index().removed(cgroup_id, path)
        container = parse_container_cgroup(path)
        if container is None or not is_container_root(path):
            return  # a sub-cgroup went; the container lives on
        cached = self._cache.get(container.container_id)
        if cached is not None:
            # Remember it for the grace period and no longer: asking the runtime
            # again about a removed container would only get a 404.
            cached.expires = time.monotonic() + self.deleted_grace

    def cgroups(self) -> dict[int, str]:
        """Every cgroup the index knows now: id → path."""
        return self._started_index().snapshot()

    async def rescan(self) -> None:
        """Walk the cgroup tree again (bounded by ``rescan_min_interval``)."""
        await self._started_index().rescan()

    async def cgroup_path(self, cgroup_id: int) -> str | None:
        """The cgroup's path below the cgroup2 root ("/" for the root itself),
        rescanning the tree on a miss; None when no such cgroup exists."""
        return await self._started_index().path(cgroup_id)

    async def container_of(self, cgroup_id: int) -> ContainerInfo | None:
        """The container the cgroup belongs to; None for a host cgroup (or an
        unknown cgroup id, counted as ``unknown_cgroups``)."""
        path = await self.cgroup_path(cgroup_id)
        if path is None:
            self.counters["unknown_cgroups"] += 1
            return None
        container = parse_container_cgroup(path)
        if container is None:
            return None
        cached = self._cache.get(container.container_id)
        if cached is not None and cached.expires > time.monotonic():
            self.counters["cache_hits"] += 1
            return cached.info
        task = self._in_flight.get(container.container_id)
        if task is None:
            task = asyncio.create_task(self._look_up(container))
            self._in_flight[container.container_id] = task
        # Shielded: one caller giving up must not cancel the lookup others share.
        return await asyncio.shield(task)

    async def _look_up(self, container: CgroupContainer) -> ContainerInfo:
        try:
            info = await self._ask_runtime(container)
            # Not yet running (no init pid): ask again soon, the details change.
            ttl = self.ttl if info.resolved and info.pid is not None else self.unresolved_ttl
            self._remember(container.container_id, info, ttl)
            return info
        finally:
            self._in_flight.pop(container.container_id, None)

    async def _ask_runtime(self, container: CgroupContainer) -> ContainerInfo:
        runtime = container.runtime or UNKNOWN_RUNTIME
        if runtime not in ("docker", UNKNOWN_RUNTIME):
            # Only the Docker Engine API is spoken here; containerd and CRI-O
            # need their CRI sockets.
            self.counters["unsupported_runtime"] += 1
            return ContainerInfo.unresolved(runtime, container.container_id)
        self.counters["runtime_lookups"] += 1
        try:
            inspect = await self._docker.inspect_container(container.container_id)
        except DockerUnavailableError as e:
            self.counters["runtime_errors"] += 1
            if self._runtime_errors_log.ready():
                log.warning(
                    "container runtime unavailable; events carry container ids only",
                    reason=str(e),
                    errors=self.counters["runtime_errors"],
                )
            return ContainerInfo.unresolved(runtime, container.container_id)
        if inspect is None:
            self.counters["unknown_containers"] += 1
            return ContainerInfo.unresolved(runtime, container.container_id)
        info = container_info_from_docker(inspect, container.container_id)
        if info.pod is not None and not info.pod.uid and container.pod_uid:
            # The labels lack the uid; the kubelet's cgroup path has it.
            info = dataclasses.replace(
                info, pod=dataclasses.replace(info.pod, uid=container.pod_uid)
            )
        return info

    def _remember(self, container_id: str, info: ContainerInfo, ttl: float) -> None:
        self._cache[container_id] = _CachedContainer(info, time.monotonic() + ttl)
        self._cache.move_to_end(container_id)
        while len(self._cache) > self.max_containers:
            self._cache.popitem(last=False)

    def _started_index(self) -> CgroupIndex:
        if self._index is None:
            raise RuntimeError("ContainerResolver.start() has not been awaited")
        return self._index
