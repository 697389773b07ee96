"""Sensor → enricher → JetStream, against the real kernel and nats-server:
process trees, /proc seeding, and robustness to malformed input."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest

from schemas import codec
from schemas.events import GetEventsResponse
from tests.conftest import ServiceProcess, start_enricher

pytestmark = [pytest.mark.bpf]


def marker() -> str:
    return f"ocellus-enr-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def elder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, str]]:
    """A shell started before Ocellus, waiting for a line to run a child."""
    tag = marker()
    proc = subprocess.Popen(["/bin/sh", "-c", f"read x; /bin/true {tag}; :"], stdin=subprocess.PIPE)
    yield proc, tag
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def enricher(
    module_nats_url: str, sensor: ServiceProcess, elder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = start_enricher(
        module_nats_url,
        tmp_path_factory.mktemp("enr") / "enricher.log",
        OCELLUS_ENRICHER_ANCESTORS_DEPTH="4",
    )
    yield service
    assert service.stop() == 0, service.log()


class EventCollector:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.status: list[dict[str, Any]] = []

    async def on_event(self, msg: Any) -> None:
        body = codec.unpack(msg.data)
        body.pop("v")
        GetEventsResponse.from_json_dict(body)  # every event is valid Tetragon JSON
        self.events.append(body)

    async def on_status(self, msg: Any) -> None:
        self.status.append(codec.unpack(msg.data))

    def execs(self, pred) -> list[dict[str, Any]]:
        return [
            e["process_exec"]
            for e in self.events
            if "process_exec" in e and pred(e["process_exec"]["process"])
        ]

    async def wait_execs(self, pred, count: int = 1, within: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(found := self.execs(pred)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return found


@pytest.fixture
async def events(module_nats_url: str, enricher: ServiceProcess) -> AsyncIterator[EventCollector]:
    collector = EventCollector()
    nc = await nats.connect(module_nats_url)
    js = nc.jetstream()
    # A JetStream consumer: what the stream stored, not just what flew past.
    await js.subscribe(
        "ocellus.events.>",
        cb=collector.on_event,
        ordered_consumer=True,
        deliver_policy=nats.js.api.DeliverPolicy.NEW,
    )
    await nc.subscribe("ocellus.status.enricher.>", cb=collector.on_status)
    await nc.flush()
    yield collector
    await nc.close()


def args_has(tag: str):
    return lambda p: tag in p.get("arguments", "")


def true_with(tag: str):
    return lambda p: p.get("binary") == "/bin/true" and p.get("arguments") == tag


async def test_chain_has_parent_links_and_ancestors(events: EventCollector) -> None:
    """sh → sh → /bin/true: parent_exec_id links each to the one before; ancestors go up."""
    tag = marker()
    await asyncio.to_thread(
        subprocess.run, ["/bin/sh", "-c", f'/bin/sh -c "/bin/true {tag}; :"; :'], check=True
    )
    [true] = await events.wait_execs(lambda p: p.get("binary") == "/bin/true" and args_has(tag)(p))
    inner = true["parent"]
    [outer] = events.execs(lambda p: p["exec_id"] == inner["parent_exec_id"])
    assert true["process"]["parent_exec_id"] == inner["exec_id"]
    assert inner["binary"] == "/bin/sh" and outer["process"]["binary"] == "/bin/sh"
    assert true["ancestors"][0]["exec_id"] == outer["process"]["exec_id"]
    assert true["ancestors"][1]["exec_id"] == outer["process"]["parent_exec_id"]
    assert len(true["ancestors"]) <= 4
    # /bin/true may be gone before its cwd is read: then errorCWD says so.
    assert true["process"]["flags"] in ("execve clone", "execve clone errorCWD")


async def test_cwd_is_read_at_exec(events: EventCollector, tmp_path: Path) -> None:
    """A process that lives a moment has its working directory."""
    tag = marker()
    await asyncio.to_thread(subprocess.run, ["/bin/sh", "-c", "sleep 0.3", tag], cwd=tmp_path)
    [ex] = await events.wait_execs(args_has(tag))
    assert ex["process"]["cwd"] == str(tmp_path)
    assert "errorCWD" not in ex["process"]["flags"]


async def test_process_older_than_ocellus_is_a_parent_from_proc(
    events: EventCollector, elder
) -> None:
    """A shell that started before the enricher is its child's parent, flagged procFS."""
    proc, tag = elder
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    [child] = await events.wait_execs(args_has(tag))
    parent = child["parent"]
    assert parent["pid"] == proc.pid
    assert parent["flags"] == "procFS"
    assert parent["binary"].endswith("sh")
    assert child["process"]["parent_exec_id"] == parent["exec_id"]


async def test_exit_event_follows_exec(events: EventCollector) -> None:
    """The exit of a process names the same exec id as its exec, with its status."""
    tag = marker()
    await asyncio.to_thread(subprocess.run, ["/bin/sh", "-c", "exit 5", tag])
    [ex] = await events.wait_execs(args_has(tag))
    eid = ex["process"]["exec_id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        exits = [
            e["process_exit"]
            for e in events.events
            if e.get("process_exit", {}).get("process", {}).get("exec_id") == eid
        ]
        if exits:
            break
        await asyncio.sleep(0.02)
    assert exits and exits[0]["status"] == 5


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xc1\xc1\xc1", id="invalid-msgpack"),
        pytest.param(msgpack.packb({"v": 7, "node": "x"}), id="unknown-version"),
        pytest.param(
            codec.pack(
                {"node": "x", "type": "process_exec", "boot_ns": 1, "records": [{"pid": 1}]}
            ),
            id="missing-fields",
        ),
        pytest.param(
            codec.pack(
                {
                    "node": "x",
                    "type": "process_exec",
                    "boot_ns": 1,
                    "records": [
                        {
                            "ktime": "soon",
                            "pid": 1,
                            "tid": 1,
                            "ppid": 0,
                            "uid": 0,
                            "gid": 0,
                            "cgroup_id": 1,
                            "comm": "x",
                            "flags": 0,
                            "binary": "/x",
                            "argv": ["x"],
                        }
                    ],
                }
            ),
            id="mistyped",
        ),
        pytest.param(
            codec.pack(
                {
                    "node": "x",
                    "type": "process_exec",
                    "boot_ns": 1,
                    "records": [
                        {
                            "ktime": 1,
                            "pid": 1,
                            "tid": 1,
                            "ppid": 0,
                            "uid": 0,
                            "gid": 0,
                            "cgroup_id": 1,
                            "comm": "x",
                            "flags": 0,
                            "binary": "/" + "x" * 100_000,
                            "argv": ["x"],
                        }
                    ],
                }
            ),
            id="huge-string",
        ),
    ],
)
async def test_malformed_raw_input_is_counted_and_harmless(
    events: EventCollector, module_nats_url: str, payload: bytes
) -> None:
    """Bad raw input is counted and logged, and the next real exec still comes through."""
    nc = await nats.connect(module_nats_url)
    while not events.status:  # counters are cumulative: start from the current value
        await asyncio.sleep(0.05)
    before = _malformed(events)
    await nc.publish("ocellus.raw.test_node.process_exec", payload)
    await nc.flush()
    tag = marker()
    await asyncio.to_thread(subprocess.run, ["/bin/true", tag])
    assert await events.wait_execs(args_has(tag), within=5)
    deadline = time.monotonic() + 5
    while _malformed(events) <= before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _malformed(events) == before + 1
    await nc.close()


def _malformed(events: EventCollector) -> int:
    if not events.status:
        return 0
    c = events.status[-1]["counters"]
    return c.get("malformed_messages", 0) + c.get("invalid_records", 0)


@pytest.mark.docker
async def test_container_processes_carry_container_and_pod(
    events: EventCollector, docker_daemon, busybox_image: str
) -> None:
    """A labelled container's processes carry its id, name, image and pod; its own
    tree is in_init_tree, a `docker exec` entry is not."""
    tag = marker()
    name = f"ocellus-{tag[-12:]}"
    cid = docker_daemon.run(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "io.kubernetes.pod.name=web-1",
        "--label",
        "io.kubernetes.pod.namespace=shop",
        "--label",
        "io.kubernetes.pod.uid=5f1f2c1e-8a0c-4c53-9d5e-1f2a3b4c5d6e",
        "--label",
        "io.kubernetes.container.name=app",
        busybox_image,
        "sh",
        "-c",
        f"sleep 1; /bin/true {tag}-init; sleep 300",
    ).strip()
    try:
        # (The docker CLI's own exec carries the tags too: match the binary.)
        [init_child] = await events.wait_execs(true_with(f"{tag}-init"), within=15)
        docker_daemon.run("exec", name, "/bin/true", f"{tag}-exec")
        [exec_child] = await events.wait_execs(true_with(f"{tag}-exec"), within=15)
        image_id = docker_daemon.run("inspect", "-f", "{{.Image}}", name).strip()
    finally:
        docker_daemon.run("rm", "-f", name)

    for ev in (init_child, exec_child):
        process = ev["process"]
        assert process["docker"] == cid[:31]
        pod = process["pod"]
        assert (pod["namespace"], pod["name"]) == ("shop", "web-1")
        container = pod["container"]
        assert container["id"] == f"docker://{cid}"
        assert container["name"] == name
        assert container["image"] == {"id": image_id, "name": busybox_image}
        assert "start_time" in container
    assert init_child["process"]["in_init_tree"] is True
    assert init_child["parent"]["in_init_tree"] is True  # the container's sh, pid 1 inside
    assert exec_child["process"]["in_init_tree"] is False


async def test_host_processes_have_no_container(events: EventCollector) -> None:
    """A host process has no pod, docker field or in_init_tree."""
    tag = marker()
    await asyncio.to_thread(subprocess.run, ["/bin/true", tag])
    [ex] = await events.wait_execs(args_has(tag))
    assert not {"pod", "docker", "in_init_tree"} & ex["process"].keys()
