"""cgroup id → container → pod, against the real cgroup2 tree and a real dockerd."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.cgroups import (
    CgroupContainer,
    find_cgroup2_root,
    is_container_root,
    parse_container_cgroup,
    scan_cgroup_tree,
)
from services.common.containers import (
    ContainerInfo,
    ContainerResolver,
    PodInfo,
    container_info_from_docker,
)
from services.common.docker import parse_docker_time
from tests.docker_fixtures import DockerDaemon

ID = "4f1c0a5e3b2d" + "9" * 52  # 64 lowercase hex
ID2 = "ab" * 32
UID = "0f9e8d7c-6b5a-4321-9876-543210fedcba"
UID_SYSTEMD = UID.replace("-", "_")
STATIC_POD_UID = "6f4b0c1e2a9d8e7f6a5b4c3d2e1f0a9b"

ResolverFactory = Callable[..., Awaitable[ContainerResolver]]


# -- the path parser --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(f"/docker/{ID}", CgroupContainer("docker", ID, None), id="docker-cgroupfs"),
        pytest.param(
            f"/system.slice/docker-{ID}.scope",
            CgroupContainer("docker", ID, None),
            id="docker-systemd",
        ),
        pytest.param(
            f"/system.slice/containerd.service/cri-containerd-{ID}.scope",
            CgroupContainer("containerd", ID, None),
            id="containerd-systemd",
        ),
        pytest.param(
            f"/system.slice/nerdctl-{ID}.scope",
            CgroupContainer("containerd", ID, None),
            id="nerdctl",
        ),
        pytest.param(
            f"/machine.slice/crio-{ID}.scope", CgroupContainer("crio", ID, None), id="crio-systemd"
        ),
        pytest.param(
            f"/machine.slice/libpod-{ID}.scope",
            CgroupContainer("podman", ID, None),
            id="podman-systemd",
        ),
        pytest.param(
            f"/libpod_parent/libpod-{ID}", CgroupContainer("podman", ID, None), id="podman-cgroupfs"
        ),
        pytest.param(
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container",
            CgroupContainer("podman", ID, None),
            id="podman-rootless-nested",
        ),
        pytest.param(
            f"/kubepods/burstable/pod{UID}/{ID}",
            CgroupContainer(None, ID, UID),
            id="kubepods-cgroupfs-burstable",
        ),
        pytest.param(
            f"/kubepods/pod{UID}/{ID}",
            CgroupContainer(None, ID, UID),
            id="kubepods-cgroupfs-guaranteed",
        ),
        pytest.param(
            f"/kubepods/besteffort/pod{STATIC_POD_UID}/{ID}",
            CgroupContainer(None, ID, STATIC_POD_UID),
            id="kubepods-static-pod-uid",
        ),
        pytest.param(
            f"/kubepods/burstable/pod{UID}/crio-{ID}",
            CgroupContainer("crio", ID, UID),
            id="kubepods-cgroupfs-crio",
        ),
        pytest.param(
            "/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope",
            CgroupContainer("containerd", ID, UID),
            id="kubepods-systemd-containerd",
        ),
        pytest.param(
            f"/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-{ID}.scope",
            CgroupContainer("crio", ID, UID),
            id="kubepods-systemd-guaranteed-crio",
        ),
        pytest.param(
            "/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{UID_SYSTEMD}.slice/docker-{ID}.scope",
            CgroupContainer("docker", ID, UID),
            id="kubepods-systemd-docker",
        ),
        pytest.param(
            f"/docker/{ID}/init.scope", CgroupContainer("docker", ID, None), id="nested-sub-cgroup"
        ),
        pytest.param(
            f"/docker/{ID}/docker/{ID2}",
            CgroupContainer("docker", ID2, None),
            id="docker-in-docker-deepest-wins",
        ),
        pytest.param(f"/docker/{ID}/", CgroupContainer("docker", ID, None), id="trailing-slash"),
        pytest.param(f"/custom-parent/{ID}", CgroupContainer(None, ID, None), id="bare-id"),
    ],
)
def test_parse_container_cgroup_finds_container(path: str, expected: CgroupContainer) -> None:
    """Runtime, container id and pod uid come out of every runtime's cgroup layout."""
    assert parse_container_cgroup(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/", id="root"),
        pytest.param("", id="empty"),
        pytest.param("/docker", id="docker-parent"),
        pytest.param("/system.slice/ssh.service", id="systemd-service"),
        pytest.param("/user.slice/user-1000.slice/session-3.scope", id="session"),
        pytest.param(f"/machine.slice/libpod-conmon-{ID}.scope", id="podman-conmon"),
        pytest.param(f"/system.slice/crio-conmon-{ID}.scope", id="crio-conmon"),
        pytest.param(f"/kubepods/burstable/pod{UID}", id="pod-without-container"),
        pytest.param(f"/docker/{ID.upper()}", id="uppercase-id"),
        pytest.param(f"/docker/{ID[:63]}", id="short-id"),
        pytest.param(f"/docker/{ID}0", id="long-id"),
        pytest.param(f"/system.slice/docker-{ID}.scope.bak", id="suffix"),
    ],
)
def test_parse_container_cgroup_host_paths_are_none(path: str) -> None:
    """Host cgroups, pod-level cgroups and near-miss names are not containers."""
    assert parse_container_cgroup(path) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(f"/docker/{ID}", True, id="container"),
        pytest.param(f"/system.slice/docker-{ID}.scope", True, id="scope"),
        pytest.param(f"/docker/{ID}/init.scope", False, id="sub-cgroup"),
        pytest.param("/docker", False, id="parent"),
    ],
)
def test_is_container_root(path: str, expected: bool) -> None:
    """Only a container's own cgroup counts as the container going away."""
    assert is_container_root(path) is expected


# -- Docker's timestamps and inspect document -----------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2026-11-28T11:38:12.88383592Z", 1795865892_883835920, id="8-digits"),
        pytest.param("2026-11-28T11:38:12.883835921Z", 1795865892_883835921, id="9-digits"),
        pytest.param("2026-11-28T11:38:12.5Z", 1795865892_500000000, id="1-digit"),
        pytest.param("2026-11-28T11:38:12Z", 1795865892_000000000, id="no-fraction"),
        pytest.param("2026-11-28T12:38:12.000000001+01:00", 1795865892_000000001, id="offset"),
        pytest.param("2026-11-28T06:08:12-05:30", 1795865892_000000000, id="negative-offset"),
        pytest.param("0001-01-01T00:00:00Z", None, id="go-zero-time-never-started"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="missing"),
        pytest.param(1795866292, None, id="not-a-string"),
        pytest.param("2026-11-28 11:38:12Z", None, id="space-separator"),
        pytest.param("2026-11-28T11:38:12.1234567891Z", None, id="10-digits"),
        pytest.param("2026-13-28T11:38:12Z", None, id="month-13"),
        pytest.param("2026-11-28T11:38:12", None, id="no-zone"),
    ],
)
def test_parse_docker_time(value: object, expected: int | None) -> None:
    """StartedAt becomes exact ns since the epoch; "never" and junk become None."""
    assert parse_docker_time(value) == expected


def test_container_info_from_docker_sparse_document() -> None:
    """A created-but-not-started container: null labels, pid 0, zero time → None fields."""
    inspect: dict[str, Any] = {
        "Id": ID,
        "Name": "/quiet",
        "Image": "sha256:" + "1" * 64,
        "Config": {"Image": "busybox", "Labels": None},
        "State": {"Pid": 0, "StartedAt": "0001-01-01T00:00:00Z"},
    }
    info = container_info_from_docker(inspect, ID)
    assert info == ContainerInfo(
        runtime="docker",
        id=ID,
        name="quiet",
        image="busybox",
        image_id="sha256:" + "1" * 64,
        labels={},
        started_ns=None,
        pid=None,
        pod=None,
        resolved=True,
    )
    hash(info)  # usable as a dict key despite its labels mapping


# -- finding and indexing the cgroup2 tree ---------------------------------------------


@pytest.mark.parametrize(
    ("mounts", "expected"),
    [
        pytest.param(
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
            "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
            "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
            "/sys/fs/cgroup/unified",
            id="hybrid",
        ),
        pytest.param("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "/sys/fs/cgroup", id="unified"),
        pytest.param(
            "none /mnt/with\\040space cgroup2 rw 0 0\n", "/mnt/with space", id="escaped-space"
        ),
    ],
)
def test_find_cgroup2_root_reads_mounts(mounts: str, expected: str) -> None:
    """The cgroup2 mount point comes from the mount table, escapes decoded."""
    assert find_cgroup2_root(mounts) == Path(expected)


def test_find_cgroup2_root_fails_without_cgroup2() -> None:
    """No cgroup2 mount is an error saying what to do."""
    with pytest.raises(Exception, match="no cgroup2 filesystem"):
        find_cgroup2_root("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")


def test_scan_cgroup_tree_ids_are_directory_inodes(cgroup_root: Path) -> None:
    """The scan's ids (readdir inodes) are what stat says, i.e. the kernel's cgroup ids."""
    scanned = scan_cgroup_tree(cgroup_root)
    assert scanned[cgroup_root.stat().st_ino] == "/"
    for cgroup_id, path in scanned.items():
        try:
            assert (cgroup_root / path.lstrip("/")).stat().st_ino == cgroup_id, path
        except FileNotFoundError:
            continue  # went away since the scan


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cgroup_root() -> Path:
    return find_cgroup2_root()


@pytest.fixture
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("creates cgroups: run as root")


@pytest.fixture
async def make_resolver(cgroup_root: Path) -> AsyncIterator[ResolverFactory]:
    """Started ContainerResolvers with the given settings, closed after the test."""
    made: list[ContainerResolver] = []

    async def make(**settings: Any) -> ContainerResolver:
        resolver = ContainerResolver(cgroup_root=cgroup_root, **settings)
        await resolver.start()
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.close()


class ScratchCgroups:
    """cgroups made by hand under the cgroup2 root; removes what it made."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[Path] = []

    def make(self, relative: str) -> tuple[int, str]:
        """mkdir (with missing parents); the new cgroup's id and path."""
        missing = []
        directory = self.root / relative.strip("/")
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for directory in reversed(missing):
            directory.mkdir()
            self.made.append(directory)
        return (self.root / relative.strip("/")).stat().st_ino, "/" + relative.strip("/")

    def remove(self, relative: str) -> None:
        directory = self.root / relative.strip("/")
        directory.rmdir()
        self.made.remove(directory)

    def remove_all(self) -> None:
        for directory in reversed(self.made):
            directory.rmdir()
        self.made.clear()


@pytest.fixture
def scratch_cgroups(cgroup_root: Path, need_root: None) -> Iterator[ScratchCgroups]:
    scratch = ScratchCgroups(cgroup_root)
    yield scratch
    scratch.remove_all()


def cgroup_id_of(cgroup_root: Path, path: str) -> int:
    """What bpf_get_current_cgroup_id() returns in that cgroup: its directory's inode."""
    return (cgroup_root / path.lstrip("/")).stat().st_ino


def container_cgroup_id(cgroup_root: Path, pid: int) -> tuple[int, str]:
    """A process's cgroup2 id and path, from /proc/<pid>/cgroup ("0::<path>")."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    path = next(line[3:] for line in lines if line.startswith("0::"))
    return cgroup_id_of(cgroup_root, path), path


class RunningContainer:
    def __init__(self, docker: DockerDaemon, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.labels = labels
        self.id = docker.run(
            "run",
            "-d",
            "--name",
            name,
            *(arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")),
            "ocellus-test-busybox",
            "sleep",
            "300",
        )
        self.inspect: dict[str, Any] = _inspect(docker, self.id)


def _inspect(docker: DockerDaemon, container_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(docker.run("inspect", container_id))[0]
    return document


@pytest.fixture
def run_container(
    docker_daemon: DockerDaemon, busybox_image: str
) -> Iterator[Callable[[dict[str, str]], RunningContainer]]:
    """Runs labelled busybox containers; removes them after the test."""
    started: list[RunningContainer] = []

    def run(labels: dict[str, str]) -> RunningContainer:
        container = RunningContainer(docker_daemon, f"ocellus-test-{secrets.token_hex(6)}", labels)
        started.append(container)
        return container

    yield run
    for container in started:
        docker_daemon.run("rm", "-f", container.id)


def pod_labels(pod_uid: str) -> dict[str, str]:
    return {
        "io.kubernetes.pod.name": "web-1",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.uid": pod_uid,
        "io.kubernetes.container.name": "app",
    }


# -- resolving real containers -----------------------------------------------------------


async def test_container_of_resolves_docker_container(
    make_resolver: ResolverFactory,
    run_container: Callable[[dict[str, str]], RunningContainer],
    docker_daemon: DockerDaemon,
    cgroup_root: Path,
) -> None:
    """A running container's cgroup id gives its id, name, image, labels, pid, start and pod."""
    pod_uid = str(uuid.uuid4())
    container = run_container({**pod_labels(pod_uid), "team": "payments"})
    pid = container.inspect["State"]["Pid"]
    container_cgroup, path = container_cgroup_id(cgroup_root, pid)
    assert path == f"/docker/{container.id}"  # Docker's cgroupfs layout on this host
    assert container_cgroup == cgroup_id_of(cgroup_root, f"docker/{container.id}")
    resolver = await make_resolver(docker_socket=docker_daemon.socket)

    info = await resolver.container_of(container_cgroup)

    assert info is not None
    assert info.resolved
    assert (info.runtime, info.id, info.name) == ("docker", container.id, container.name)
    assert info.image == "ocellus-test-busybox"
    assert info.image_id == container.inspect["Image"]
    assert info.image_id is not None
    assert info.image_id.startswith("sha256:")
    assert dict(info.labels) == container.labels
    assert info.pid == pid
    assert info.started_ns == parse_docker_time(container.inspect["State"]["StartedAt"])
    assert info.started_ns is not None
    assert abs(time.time_ns() - info.started_ns) < 120 * 10**9
    assert info.pod == PodInfo(namespace="shop", name="web-1", uid=pod_uid, container_name="app")
    assert resolver.counters["runtime_lookups"] == 1


async def test_container_of_plain_container_has_no_pod(
    make_resolver: ResolverFactory,
    run_container: Callable[[dict[str, str]], RunningContainer],
    docker_daemon: DockerDaemon,
    cgroup_root: Path,
) -> None:
    """Without CRI labels a container resolves with pod None."""
    container = run_container({})
    cgroup_id, _ = container_cgroup_id(cgroup_root, container.inspect["State"]["Pid"])
    resolver = await make_resolver(docker_socket=docker_daemon.socket)

    info = await resolver.container_of(cgroup_id)

    assert info is not None
    assert info.resolved
    assert info.pod is None
    assert dict(info.labels) == {}


async def test_container_of_host_cgroup_is_none(
    make_resolver: ResolverFactory, docker_daemon: DockerDaemon, cgroup_root: Path
) -> None:
    """The test process's own cgroup (and the root) are host cgroups: None, no runtime call."""
    resolver = await make_resolver(docker_socket=docker_daemon.socket)
    own_id, own_path = container_cgroup_id(cgroup_root, os.getpid())

    assert parse_container_cgroup(own_path) is None
    assert await resolver.container_of(own_id) is None
    assert await resolver.container_of(cgroup_id_of(cgroup_root, "/")) is None
    assert resolver.counters["runtime_lookups"] == 0


async def test_container_of_id_unknown_to_daemon_is_unresolved(
    make_resolver: ResolverFactory,
    scratch_cgroups: ScratchCgroups,
    docker_daemon: DockerDaemon,
) -> None:
    """A docker/<id> cgroup the daemon never heard of: resolved=False, counted, then cached."""
    container_id = secrets.token_hex(32)
    cgroup_id, path = scratch_cgroups.make(f"docker/{container_id}")
    resolver = await make_resolver(docker_socket=docker_daemon.socket)

    info = await resolver.container_of(cgroup_id)
    again = await resolver.container_of(cgroup_id)
    scratch_cgroups.remove(path)
    resolver.cgroup_removed(cgroup_id, path)

    assert info == ContainerInfo.unresolved("docker", container_id)
    assert again == info
    assert resolver.counters["unknown_containers"] == 1
    assert resolver.counters["runtime_lookups"] == 1


class SilentDaemon:
    """A unix socket that accepts connections and never answers."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(16)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("daemon", ["missing", "refusing", "silent"])
async def test_container_of_without_daemon_is_unresolved(
    make_resolver: ResolverFactory,
    scratch_cgroups: ScratchCgroups,
    tmp_path: Path,
    daemon: str,
) -> None:
    """No socket, a refused connection or a daemon that never answers: resolved=False,
    counted as a runtime error, within the call timeout, and nothing raised."""
    socket_path = tmp_path / "docker.sock"
    silent = None
    if daemon == "refusing":
        SilentDaemon(socket_path).close()  # the socket file stays; nobody listens
    elif daemon == "silent":
        silent = SilentDaemon(socket_path)
    container_id = secrets.token_hex(32)
    cgroup_id, _ = scratch_cgroups.make(f"docker/{container_id}")
    resolver = await make_resolver(docker_socket=socket_path, runtime_timeout=0.5)

    try:
        started = time.monotonic()
        info = await resolver.container_of(cgroup_id)
        waited = time.monotonic() - started
    finally:
        if silent is not None:
            silent.close()

    assert info == ContainerInfo.unresolved("docker", container_id)
    assert resolver.counters["runtime_errors"] == 1
    assert waited < 1.5


async def test_container_of_removed_container_resolves_within_grace(
    make_resolver: ResolverFactory,
    run_container: Callable[[dict[str, str]], RunningContainer],
    docker_daemon: DockerDaemon,
    cgroup_root: Path,
) -> None:
    """After `docker rm -f` and cgroup_rmdir, late events still resolve for deleted_grace."""
    container = run_container(pod_labels(str(uuid.uuid4())))
    cgroup_id, path = container_cgroup_id(cgroup_root, container.inspect["State"]["Pid"])
    resolver = await make_resolver(docker_socket=docker_daemon.socket, deleted_grace=1.0)
    alive = await resolver.container_of(cgroup_id)

    docker_daemon.run("rm", "-f", container.id)
    assert not (cgroup_root / path.lstrip("/")).exists()
    resolver.cgroup_removed(cgroup_id, path)
    late = await resolver.container_of(cgroup_id)
    await asyncio.sleep(1.2)
    too_late = await resolver.container_of(cgroup_id)

    assert alive is not None
    assert alive.resolved
    assert late == alive
    assert resolver.counters["runtime_lookups"] == 1
    assert too_late is None  # the cgroup is gone and forgotten


async def test_container_of_concurrent_lookups_share_one_call(
    make_resolver: ResolverFactory,
    run_container: Callable[[dict[str, str]], RunningContainer],
    docker_daemon: DockerDaemon,
    cgroup_root: Path,
) -> None:
    """20 events of a new container at once make one runtime call and get one answer."""
    container = run_container({})
    cgroup_id, _ = container_cgroup_id(cgroup_root, container.inspect["State"]["Pid"])
    resolver = await make_resolver(docker_socket=docker_daemon.socket)

    infos = await asyncio.gather(*(resolver.container_of(cgroup_id) for _ in range(20)))

    assert resolver.counters["runtime_lookups"] == 1
    assert all(info is infos[0] for info in infos)
    assert infos[0] is not None
    assert infos[0].id == container.id


async def test_container_of_cache_expires_after_ttl(
    make_resolver: ResolverFactory,
    run_container: Callable[[dict[str, str]], RunningContainer],
    docker_daemon: DockerDaemon,
    cgroup_root: Path,
) -> None:
    """Container info is served from the cache for ttl seconds, then asked for again."""
    container = run_container({})
    cgroup_id, _ = container_cgroup_id(cgroup_root, container.inspect["State"]["Pid"])
    resolver = await make_resolver(docker_socket=docker_daemon.socket, ttl=0.5)

    await resolver.container_of(cgroup_id)
    await resolver.container_of(cgroup_id)
    assert (resolver.counters["runtime_lookups"], resolver.counters["cache_hits"]) == (1, 1)
    await asyncio.sleep(0.6)
    await resolver.container_of(cgroup_id)
    assert resolver.counters["runtime_lookups"] == 2


# -- keeping the index current -----------------------------------------------------------


async def test_cgroup_path_rescans_on_miss(
    make_resolver: ResolverFactory, scratch_cgroups: ScratchCgroups
) -> None:
    """cgroups made after start are found by one shared, rate-limited rescan; an id
    still unknown after it is remembered as unknown and costs no further rescans."""
    resolver = await make_resolver(rescan_min_interval=0.5)
    name = f"ocellus-test-{secrets.token_hex(4)}"
    first_id, first_path = scratch_cgroups.make(f"{name}/a")
    second_id, second_path = scratch_cgroups.make(f"{name}/b")
    gone_id, gone_path = scratch_cgroups.make(f"{name}/gone")
    scratch_cgroups.remove(gone_path)

    started = time.monotonic()
    paths = await asyncio.gather(resolver.cgroup_path(first_id), resolver.cgroup_path(second_id))
    waited = time.monotonic() - started
    assert paths == [first_path, second_path]
    assert resolver.counters["rescans"] == 1
    assert waited < 2.0

    assert await resolver.cgroup_path(gone_id) is None
    assert await resolver.cgroup_path(gone_id) is None
    assert resolver.counters["rescans"] == 2
    assert resolver.counters["index_misses"] == 3


async def test_cgroup_path_created_event_needs_no_rescan(
    make_resolver: ResolverFactory, scratch_cgroups: ScratchCgroups
) -> None:
    """A cgroup announced by cgroup_created resolves without a rescan."""
    resolver = await make_resolver()
    cgroup_id, path = scratch_cgroups.make(f"ocellus-test-{secrets.token_hex(4)}")

    resolver.cgroup_created(cgroup_id, path)

    assert await resolver.cgroup_path(cgroup_id) == path
    assert (resolver.counters["rescans"], resolver.counters["index_misses"]) == (0, 0)


async def test_cgroup_path_removed_cgroup_remembered_for_grace(
    make_resolver: ResolverFactory, scratch_cgroups: ScratchCgroups
) -> None:
    """After cgroup_removed the path still resolves for deleted_grace, then not at all."""
    resolver = await make_resolver(deleted_grace=0.3, rescan_min_interval=0.0)
    cgroup_id, path = scratch_cgroups.make(f"ocellus-test-{secrets.token_hex(4)}")
    resolver.cgroup_created(cgroup_id, path)

    scratch_cgroups.remove(path)
    resolver.cgroup_removed(cgroup_id, path)
    assert await resolver.cgroup_path(cgroup_id) == path
    await asyncio.sleep(0.4)
    assert await resolver.cgroup_path(cgroup_id) is None


async def test_container_of_kubepods_bare_id_asks_docker(
    make_resolver: ResolverFactory,
    run_container: Callable[[dict[str, str]], RunningContainer],
    scratch_cgroups: ScratchCgroups,
    docker_daemon: DockerDaemon,
) -> None:
    """A kubepods cgroupfs path names no runtime: Docker is asked; an id it knows is
    "docker" (pod uid taken from the path when the labels lack it), others "unknown"."""
    labels = pod_labels("")
    del labels["io.kubernetes.pod.uid"]
    container = run_container(labels)
    pod_uid = str(uuid.uuid4())
    known_id, _ = scratch_cgroups.make(f"kubepods/burstable/pod{pod_uid}/{container.id}")
    stranger = secrets.token_hex(32)
    unknown_id, _ = scratch_cgroups.make(f"kubepods/burstable/pod{pod_uid}/{stranger}")
    resolver = await make_resolver(docker_socket=docker_daemon.socket)

    known = await resolver.container_of(known_id)
    unknown = await resolver.container_of(unknown_id)

    assert known is not None
    assert (known.runtime, known.id, known.resolved) == ("docker", container.id, True)
    assert known.pod == PodInfo(namespace="shop", name="web-1", uid=pod_uid, container_name="app")
    assert unknown == ContainerInfo.unresolved("unknown", stranger)
