"""Scale-out on NATS: a 3-server JetStream cluster on loopback carries the
pipeline; OCELLUS_EVENTS is R3 (created by the real enricher); the stream
leader is SIGKILLed mid-stream under a sustained load of raw exec/exit
batches, and every event still reaches the real exporter's JSON file.

Delivery is at-least-once end to end: the exporter may write an event twice
(a redelivery after its consumer's leader moved), so the file is checked by
(kind, arguments) — one exec and one exit per process sent — and the
duplicates are counted and bounded."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.aio.client import Client as NATS
from nats.js.api import StreamInfo

from schemas import codec, subjects
from tests.conftest import ServiceProcess
from tests.nats_servers import ConfiguredNats, free_port

pytestmark = [pytest.mark.slow]

NODE = "cluster.node"
RATE = 400  # processes a second, each an exec and an exit record
SECONDS = 15
BATCH = 20  # records per raw message (the sensor batches by drain)
MAX_INFLIGHT = 200  # the exporter's unacked events at most: bounds duplicates


def cluster_config(directory: Path, index: int, routes: list[int]) -> str:
    return f"""
server_name: n{index}
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
jetstream {{ store_dir: "{directory / f"n{index}-js"}" }}
cluster {{
  name: ocellus
  listen: 127.0.0.1:{routes[index]}
  routes: [{", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)}]
}}
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ConfiguredNats]]:
    """Three routed nats-servers with JetStream, each with its own store."""
    routes = [free_port() for _ in range(3)]
    servers = [
        ConfiguredNats(tmp_path, cluster_config(tmp_path, i, routes), name=f"n{i}")
        for i in range(3)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


async def wait_for_jetstream(url: str, timeout: float = 30.0) -> None:
    """Until the cluster has a JetStream meta leader (account info answers)."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await nc.jetstream(timeout=1).account_info()
                return
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await nc.close()


async def stream_info(js: Any) -> StreamInfo:
    return await js.stream_info(subjects.EVENTS_STREAM)  # type: ignore[no-any-return]


async def make_leader(nc: NATS, name: str, timeout: float = 30.0) -> None:
    """Step the stream leader down until ``name`` leads (the new leader is one
    of the other replicas, chosen by the cluster)."""
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + timeout
    stepdown = subjects.js_api("STREAM", "LEADER", "STEPDOWN", subjects.EVENTS_STREAM)
    while True:
        info = await stream_info(js)
        leader = info.cluster.leader if info.cluster else None
        replicas_current = info.cluster and all(r.current for r in info.cluster.replicas or [])
        if leader == name and replicas_current:
            return
        assert time.monotonic() < deadline, f"{name} never became the stream leader"
        if leader != name and replicas_current:
            await nc.request(stepdown, b"", timeout=5)
        await asyncio.sleep(0.5)


def raw_batch(kind: str, records: list[dict[str, Any]], boot_ns: int) -> bytes:
    return codec.pack({"node": NODE, "type": kind, "boot_ns": boot_ns, "records": records})


def header(i: int, ktime: int, tag: str) -> dict[str, Any]:
    pid = 3_000_000 + i  # no real process: the enricher's /proc reads miss, flagged
    return {
        "ktime": ktime, "pid": pid, "tid": pid, "ppid": 1, "uid": 0, "gid": 0,
        "cgroup_id": 1, "comm": "true", "flags": 0,
    }  # fmt: skip


async def send_load(nc: NATS, tag: str, kill: asyncio.Event, killed: asyncio.Event) -> int:
    """RATE processes a second for SECONDS seconds, as exec then exit batches
    (the sensor's order); sets ``kill`` a third of the way in. Returns how
    many processes were sent."""
    boot_ns = time.time_ns() - time.monotonic_ns()
    total = RATE * SECONDS
    per_tick = BATCH
    started = time.monotonic()
    sent = 0
    while sent < total:
        execs, exits = [], []
        for i in range(sent, min(sent + per_tick, total)):
            ktime = time.monotonic_ns()
            h = header(i, ktime, tag)
            execs.append({**h, "binary": "/bin/true", "argv": ["/bin/true", f"{tag}-{i}"]})
            exits.append({**h, "ktime": ktime + 1000, "exit_code": 0, "signal": 0})
        await nc.publish(
            subjects.raw(NODE, subjects.PROCESS_EXEC), raw_batch("process_exec", execs, boot_ns)
        )
        await nc.publish(
            subjects.raw(NODE, subjects.PROCESS_EXIT), raw_batch("process_exit", exits, boot_ns)
        )
        sent += len(execs)
        if sent >= total // 3 and not kill.is_set():
            kill.set()
            await killed.wait()
        await asyncio.sleep(max(0.0, started + sent / RATE - time.monotonic()))
    await nc.flush()
    return sent


def exported(out: Path, tag: str) -> Counter[tuple[str, str]]:
    seen: Counter[tuple[str, str]] = Counter()
    for path in out.glob("*.json"):
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():
            event = json.loads(line)
            for kind in ("process_exec", "process_exit"):
                args = event.get(kind, {}).get("process", {}).get("arguments", "")
                if args.startswith(f"{tag}-"):
                    seen[(kind, args)] += 1
    return seen


async def test_stream_leader_killed_mid_stream_loses_nothing(
    cluster: list[ConfiguredNats], tmp_path: Path
) -> None:
    """R3 stream, leader SIGKILLed under load: every exec and exit sent is in
    the exporter's file (at least once; duplicates bounded by max_inflight)."""
    a, b, c = cluster
    urls = ",".join(s.url for s in cluster)
    await wait_for_jetstream(a.url)
    tag = f"clu-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    config = tmp_path / "exporter.yaml"
    sink = {
        "name": "local",
        "type": "json_file",
        "options": {"path": str(out / "events.json"), "max_size_mb": 0},
        "max_inflight": MAX_INFLIGHT,
        "batch_size": 100,
        "ack_wait": 5,
    }
    config.write_text(yaml.safe_dump({"sinks": [sink]}))
    common = {"OCELLUS_NODE_NAME": NODE, "OCELLUS_STATUS_INTERVAL": "1"}
    # The enricher reaches the stream through a and b: raw records are core
    # NATS (at most once), so the server it reads them from stays up; the
    # JetStream path it publishes into is what loses its leader.
    enricher = ServiceProcess(
        "enricher",
        {**common, "OCELLUS_NATS_URL": f"{a.url},{b.url}", "OCELLUS_ENRICHER_STREAM_REPLICAS": "3"},
        tmp_path / "enricher.log",
    )
    exporter: ServiceProcess | None = None
    nc = await nats.connect(a.url)
    try:
        enricher.wait_for_log('"enricher running"', timeout=60)
        js = nc.jetstream(timeout=5)
        info = await stream_info(js)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        # The exporter may be connected anywhere, the killed server included.
        exporter = ServiceProcess(
            "exporter",
            {**common, "OCELLUS_NATS_URL": urls, "OCELLUS_EXPORTER_CONFIG_FILE": str(config)},
            tmp_path / "exporter.log",
        )
        exporter.wait_for_log('"exporter running"', timeout=60)
        await make_leader(nc, c.name)

        kill, killed = asyncio.Event(), asyncio.Event()

        async def killer() -> float:
            await kill.wait()
            t = time.monotonic()
            c.kill()
            killed.set()
            return t

        started = time.monotonic()
        kill_task = asyncio.create_task(killer())
        sent = await send_load(nc, tag, kill, killed)
        killed_at = await kill_task
        load_seconds = time.monotonic() - started

        info = await stream_info(js)
        assert info.cluster is not None and info.cluster.leader in (a.name, b.name)

        expected = {
            (k, f"{tag}-{i}") for i in range(sent) for k in ("process_exec", "process_exit")
        }
        deadline = time.monotonic() + 90
        while set(exported(out, tag)) != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        seen = exported(out, tag)
        missing = expected - set(seen)
        duplicates = sum(n - 1 for n in seen.values())
        print(
            f"sent {2 * sent} events in {load_seconds:.1f}s, leader {c.name} killed "
            f"{killed_at - started:.1f}s in; exported {len(seen)} distinct, {duplicates} duplicates"
        )
        assert not missing, (
            f"{len(missing)} of {len(expected)} events lost, e.g. {sorted(missing)[:5]}"
        )
        assert set(seen) == expected
        assert duplicates <= 2 * MAX_INFLIGHT, f"{duplicates} duplicates"
    finally:
        await nc.close()
        if exporter is not None:
            assert exporter.stop() == 0, exporter.log()[-3000:]
        assert enricher.stop() == 0, enricher.log()[-3000:]
    # The kill hit the enricher's publishing: JetStream refused events, which
    # were sent again (and none given up).
    [stopped] = [json.loads(x) for x in enricher.log().splitlines() if '"enricher stopped"' in x]
    assert stopped["events_retried"] > 0 and stopped["events_failed"] == 0, stopped
