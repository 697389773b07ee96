"""Hook records → process_kprobe / process_tracepoint events, end to end: a real
nats-server, the real enricher process, the hook registry in the real KV bucket, raw
msgpack batches as the sensor publishes them, and the events read back from JetStream."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from google.protobuf import json_format
from nats.aio.client import Client as NATS

from schemas import codec, subjects
from schemas.events import GetEventsResponse, exec_id
from schemas.hooks import HookArgInfo, HookInfo, HookRegistry
from tests.conftest import ServiceProcess, start_enricher
from tests.schemas.test_events import tetragon_pb2  # noqa: F401 (a fixture, used by name)

pytestmark = [pytest.mark.bpf]  # the enricher fixture needs root (as for process events)

NODE = "test.node"
TOKEN = subjects.node_token(NODE)
BOOT_NS = 1_700_000_000 * 10**9
# Above this host's pid_max: no real process can be confused with these.
_pids = itertools.count(10_000_000, 10)
_hook_ids = itertools.count(100)

OPENAT = HookInfo(
    policy="file-monitor",
    kind="process_kprobe",
    subsys="syscalls",
    event="sys_enter_openat",
    function_name="__x64_sys_openat",
    args=[
        HookArgInfo(index=0, type="int"),
        HookArgInfo(index=1, type="string", label="path"),
        HookArgInfo(index=2, type="uint32"),
    ],
    message="file opened",
    tags=["observability.filesystem"],
)
CONNECT = HookInfo(
    policy="net-monitor",
    kind="process_tracepoint",
    subsys="syscalls",
    event="sys_enter_connect",
    args=[
        HookArgInfo(index=5, type="fd"),
        HookArgInfo(index=6, type="sockaddr", label="addr"),
        HookArgInfo(index=7, type="long"),
    ],
)


def header(pid: int, ktime: int, **fields: Any) -> dict[str, Any]:
    rec = {
        "ktime": ktime,
        "pid": pid,
        "tid": pid,
        "ppid": 0,
        "uid": 1000,
        "gid": 1000,
        "cgroup_id": 1,
        "comm": "cat",
        "flags": 0,
    }
    return rec | fields


def exec_rec(pid: int, ktime: int, binary: str, *argv: str) -> dict[str, Any]:
    return header(pid, ktime, ppid=1, binary=binary, argv=[binary, *argv])


def hook_rec(pid: int, ktime: int, hook_id: int, args: list[Any], **fields: Any) -> dict[str, Any]:
    extra = {"hook_id": hook_id, "slot": 0, "selector": 0, "action": 1, "args": args}
    return header(pid, ktime, **(extra | fields))


class Bus:
    """The sensor's and the enforcer's side of the bus, and a JetStream reader of events."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.events: list[dict[str, Any]] = []
        self.status: list[dict[str, Any]] = []

    async def start(self) -> None:
        async def on_event(msg: Any) -> None:
            body = codec.unpack(msg.data)
            body.pop(codec.VERSION_KEY)
            self.events.append(body)

        async def on_status(msg: Any) -> None:
            self.status.append(codec.unpack(msg.data)["counters"])

        await self.js.subscribe(
            subjects.events_all(),
            cb=on_event,
            ordered_consumer=True,
            deliver_policy=nats.js.api.DeliverPolicy.NEW,
        )
        await self.nc.subscribe(subjects.status("enricher", NODE), cb=on_status)
        await self.nc.flush()

    async def registry(self, hooks: dict[int, HookInfo]) -> int:
        """Put the node's registry, as the enforcer does (the bucket is made if missing)."""
        kv = await self.js.create_key_value(bucket=subjects.HOOK_BUCKET)
        return await kv.put(TOKEN, HookRegistry(node=NODE, hooks=hooks).pack())

    async def raw(self, kind: str, *records: dict[str, Any]) -> None:
        batch = {"node": NODE, "type": kind, "boot_ns": BOOT_NS, "records": list(records)}
        await self.nc.publish(subjects.raw(NODE, kind), codec.pack(batch))
        await self.nc.flush()

    async def wait_for(self, kind: str, pid: int, within: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for event in self.events:
                if kind in event and event[kind]["process"]["pid"] == pid:
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} for pid {pid} within {within}s: {self.events[-5:]}")

    def of(self, pid: int) -> list[dict[str, Any]]:
        return [e for e in self.events if any(v["process"]["pid"] == pid for v in _bodies(e))]

    async def counter(self, name: str, at_least: int, within: float = 5.0) -> int:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.status and self.status[-1].get(name, 0) >= at_least:
                return int(self.status[-1][name])
            await asyncio.sleep(0.05)
        last = self.status[-1] if self.status else {}
        raise AssertionError(f"counter {name} not >= {at_least} within {within}s: {last}")


def _bodies(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in event.values() if isinstance(v, dict) and "process" in v]


@pytest.fixture(scope="module")
def enricher(
    module_nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = start_enricher(
        module_nats_url,
        tmp_path_factory.mktemp("enr") / "enricher.log",
        OCELLUS_ENRICHER_HOOK_GRACE="30",
    )
    yield service
    assert service.stop() == 0, service.log()


@pytest.fixture
async def bus(module_nats_url: str, enricher: ServiceProcess) -> AsyncIterator[Bus]:
    client = await nats.connect(module_nats_url)
    b = Bus(client)
    await b.start()
    yield b
    await client.close()


@pytest.fixture
def pb2(request: pytest.FixtureRequest) -> Any:
    """Tetragon's protos, compiled (the schema tests' fixture, imported above)."""
    return request.getfixturevalue("tetragon_pb2")


def assert_tetragon_json(event: dict[str, Any], pb2: Any) -> None:
    """The line is Tetragon's GetEventsResponse to a strict protobuf-JSON parser, and
    our model reads it back unchanged."""
    line = GetEventsResponse.from_json_dict(event).to_json_line()
    message = json_format.Parse(line, pb2.GetEventsResponse())
    assert json_format.MessageToDict(message, preserving_proto_field_name=True) == event


async def test_kprobe_event_carries_process_args_and_policy(bus: Bus, pb2: Any) -> None:
    """An exec then an openat hit: process_kprobe with the exec's process, its parent,
    typed and labelled args, the policy's name, message and tags, the action."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: OPENAT})
    await bus.raw("process_exec", exec_rec(pid, 1_000, "/bin/cat", "/etc/hostname"))
    exec_event = await bus.wait_for("process_exec", pid)
    await bus.raw("process_hook", hook_rec(pid, 2_000, hook_id, [-100, "/etc/hostname", 0]))
    event = await bus.wait_for("process_kprobe", pid)

    kprobe = event["process_kprobe"]
    assert kprobe["process"] == exec_event["process_exec"]["process"]
    assert kprobe["parent"] == exec_event["process_exec"]["parent"]
    assert kprobe["parent"]["pid"] == 1
    assert kprobe["function_name"] == "__x64_sys_openat"
    assert kprobe["args"] == [
        {"int_arg": -100},
        {"string_arg": "/etc/hostname", "label": "path"},
        {"uint_arg": 0},
    ]
    assert kprobe["action"] == "KPROBE_ACTION_POST"
    assert kprobe["policy_name"] == "file-monitor"
    assert kprobe["message"] == "file opened"
    assert kprobe["tags"] == ["observability.filesystem"]
    assert event["node_name"] == NODE
    assert event["time"] == "2023-11-14T22:13:20.000002Z"  # boot_ns + ktime
    assert_tetragon_json(event, pb2)


async def test_tracepoint_event_thread_fault_and_sigkill(bus: Bus, pb2: Any) -> None:
    """A tracepoint hook from a thread: tid is the thread's, the unreadable arg stays in
    place with no value (and is counted), sockaddr and long args are typed."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: CONNECT})
    await bus.raw("process_exec", exec_rec(pid, 1_000, "/usr/bin/curl", "http://127.0.0.1"))
    await bus.wait_for("process_exec", pid)
    sockaddr = {"family": "AF_INET", "addr": "127.0.0.1", "port": 8080}
    await bus.raw(
        "process_hook",
        hook_rec(pid, 3_000, hook_id, [None, sockaddr, -(2**40)], tid=pid + 1, action=3),
    )
    event = await bus.wait_for("process_tracepoint", pid)

    tp = event["process_tracepoint"]
    assert (tp["subsys"], tp["event"]) == ("syscalls", "sys_enter_connect")
    assert tp["process"]["tid"] == pid + 1
    assert tp["process"]["binary"] == "/usr/bin/curl"
    assert tp["args"] == [
        {},
        {"sockaddr_arg": {"family": "AF_INET", "addr": "127.0.0.1", "port": 8080}, "label": "addr"},
        {"long_arg": str(-(2**40))},
    ]
    assert tp["action"] == "KPROBE_ACTION_SIGKILL"
    assert tp["policy_name"] == "net-monitor"
    assert "function_name" not in tp and "message" not in tp
    await bus.counter("hook_args_unread", 1)
    await bus.counter("process_tracepoint_events", 1)
    assert_tetragon_json(event, pb2)


async def test_unknown_pid_gets_a_minimal_process(bus: Bus, pb2: Any) -> None:
    """A hit from a process the cache never saw: pid, tid, uid and comm, flagged miss."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: OPENAT})
    await bus.raw("process_hook", hook_rec(pid, 5_000, hook_id, [3, "/tmp/x", 1]))
    event = await bus.wait_for("process_kprobe", pid)
    assert event["process_kprobe"]["process"] == {
        "pid": pid,
        "tid": pid,
        "uid": 1000,
        "binary": "cat",
        "flags": "miss",
    }
    assert "parent" not in event["process_kprobe"]
    await bus.counter("hook_process_unknown", 1)
    assert_tetragon_json(event, pb2)


async def test_hit_before_exec_belongs_to_the_replaced_image(bus: Bus) -> None:
    """A forked shell opens a redirect, then execs: the sensor publishes the exec first,
    but the hit (older than the exec) is the shell's, not the new binary's."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: OPENAT})
    clone = header(pid, 1_000, ppid=1, parent_tid=1, clone_flags=0)
    await bus.raw("process_clone", clone)
    await bus.raw("process_exec", exec_rec(pid, 3_000, "/bin/cat"))
    await bus.raw("process_hook", hook_rec(pid, 2_000, hook_id, [3, "/tmp/out", 577]))
    await bus.raw("process_hook", hook_rec(pid, 4_000, hook_id, [3, "/etc/hostname", 0]))
    await bus.wait_for("process_kprobe", pid)
    deadline = time.monotonic() + 5
    while len(hits := [e for e in bus.of(pid) if "process_kprobe" in e]) < 2:
        assert time.monotonic() < deadline, bus.of(pid)
        await asyncio.sleep(0.02)
    before, after = (h["process_kprobe"]["process"] for h in hits)
    assert before["exec_id"] == exec_id(NODE, 1_000, pid)  # the clone's image
    assert "clone" in before["flags"]
    assert after["exec_id"] == exec_id(NODE, 3_000, pid)
    assert after["binary"] == "/bin/cat"


async def test_unknown_hook_id_is_counted_then_learnt_live(bus: Bus) -> None:
    """Records of an id not in the registry are dropped and counted; once the registry
    gains the id (while the enricher runs), the next record becomes an event."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({})
    await bus.raw("process_hook", hook_rec(pid, 1_000, hook_id, [1, "/a", 0]))
    unknown = await bus.counter("hook_unknown", 1)
    await asyncio.sleep(0.3)
    assert not bus.of(pid)

    updates = (bus.status[-1] if bus.status else {}).get("hook_registry_updates", 0)
    await bus.registry({hook_id: OPENAT})
    await bus.counter("hook_registry_updates", updates + 1)  # the watch saw it, unasked
    await bus.raw("process_hook", hook_rec(pid, 2_000, hook_id, [1, "/b", 0]))
    event = await bus.wait_for("process_kprobe", pid)
    assert event["process_kprobe"]["args"][1]["string_arg"] == "/b"
    assert bus.status[-1]["hook_unknown"] == unknown


async def test_removed_hook_id_still_resolves_for_in_flight_records(bus: Bus) -> None:
    """A policy deleted while its records are in flight: they still become events."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: OPENAT})
    updates = await bus.counter("hook_registry_updates", 1)
    await bus.registry({})
    await bus.counter("hook_registry_updates", updates + 1)
    await bus.raw("process_hook", hook_rec(pid, 1_000, hook_id, [1, "/late", 0]))
    event = await bus.wait_for("process_kprobe", pid)
    assert event["process_kprobe"]["policy_name"] == "file-monitor"


async def test_enricher_waits_for_the_bucket(nats_url: str, tmp_path: Path) -> None:
    """Started before any enforcer made the bucket, the enricher does not create it,
    keeps running, and uses the registry once the bucket appears."""
    service = start_enricher(nats_url, tmp_path / "enricher.log")
    try:
        client = await nats.connect(nats_url)
        bus = Bus(client)
        await bus.start()
        hook_id, pid = next(_hook_ids), next(_pids)
        await bus.raw("process_hook", hook_rec(pid, 1_000, hook_id, [1, "/a", 0]))
        await bus.counter("hook_unknown", 1)
        with pytest.raises(nats.js.errors.BucketNotFoundError):
            await bus.js.key_value(subjects.HOOK_BUCKET)
        await bus.registry({hook_id: OPENAT})
        await bus.counter("hooks_known", 1, within=10)  # found by the wait, then watched
        await bus.raw("process_hook", hook_rec(pid, 2_000, hook_id, [1, "/b", 0]))
        await bus.wait_for("process_kprobe", pid)
        await client.close()
    finally:
        assert service.stop() == 0, service.log()


async def test_hit_waits_behind_its_held_exec(bus: Bus) -> None:
    """An exec held for its unknown parent holds the process's hits too: they leave
    after it, carrying its process, not a "miss"."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: OPENAT})
    orphan = exec_rec(pid, 1_000, "/bin/cat") | {"ppid": next(_pids)}  # a parent never seen
    await bus.raw("process_exec", orphan)
    await bus.raw("process_hook", hook_rec(pid, 2_000, hook_id, [3, "/etc/hostname", 0]))
    event = await bus.wait_for("process_kprobe", pid, within=5)  # after hold_seconds (1 s)
    kinds = [next(k for k in e if k.startswith("process_")) for e in bus.of(pid)]
    assert kinds == ["process_exec", "process_kprobe"]
    assert event["process_kprobe"]["process"]["exec_id"] == exec_id(NODE, 1_000, pid)
    assert event["process_kprobe"]["process"]["binary"] == "/bin/cat"


async def test_invalid_hook_record_leaves_its_batch_neighbours(bus: Bus) -> None:
    """One invalid record in a batch of 300 hook records (more than a validation chunk):
    the other 299 become events, in order, and exactly one invalid record is counted."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: OPENAT})
    await bus.raw("process_exec", exec_rec(pid, 1_000, "/bin/cat"))
    await bus.wait_for("process_exec", pid)
    await bus.counter("records", 0)  # a first heartbeat: the counts so far
    before = bus.status[-1].get("invalid_records", 0)
    records = [hook_rec(pid, 2_000 + i, hook_id, [-100, f"/f{i}", 0]) for i in range(300)]
    records[3]["action"] = 9  # no such action
    await bus.raw("process_hook", *records)
    await bus.counter("invalid_records", before + 1)
    deadline = time.monotonic() + 10
    kprobes: list[dict[str, Any]] = []
    while len(kprobes) < 299 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        kprobes = [e["process_kprobe"] for e in bus.of(pid) if "process_kprobe" in e]
    paths = [k["args"][1]["string_arg"] for k in kprobes]
    assert paths == [f"/f{i}" for i in range(300) if i != 3]
    await asyncio.sleep(0.3)  # a later heartbeat: still exactly one
    assert bus.status[-1]["invalid_records"] == before + 1


async def test_hook_batch_with_a_non_record_is_malformed_whole(bus: Bus) -> None:
    """A hook batch with an entry that is not a map is a malformed message, as any
    batch is: none of its records become events and none is counted invalid."""
    hook_id, pid = next(_hook_ids), next(_pids)
    await bus.registry({hook_id: OPENAT})
    await bus.counter("records", 0)  # a first heartbeat: the counts so far
    last = bus.status[-1]
    malformed, invalid = last.get("malformed_messages", 0), last.get("invalid_records", 0)
    batch = {"node": NODE, "type": "process_hook", "boot_ns": BOOT_NS,
             "records": [hook_rec(pid, 1_000, hook_id, [1, "/a", 0]), 5]}  # fmt: skip
    await bus.nc.publish(subjects.raw(NODE, "process_hook"), codec.pack(batch))
    await bus.counter("malformed_messages", malformed + 1)
    await asyncio.sleep(0.3)
    assert not bus.of(pid)
    assert bus.status[-1]["invalid_records"] == invalid
