"""Helpers for the exporter core's tests: Tetragon events built with the
schema models, published into a real OCELLUS_EVENTS stream, the exporter
run in-process, and JSON-lines files read back (gzip included)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml
from nats.aio.client import Client as NATS

from schemas import codec, subjects
from schemas.events import GetEventsResponse, Pod, Process, ProcessExec, ProcessExit, exec_id
from services.enricher.service import ensure_stream
from services.enricher.settings import Settings as EnricherSettings
from services.exporter.service import run
from services.exporter.settings import Settings

NODE = "test.node"
T0 = 1_764_327_600_000_000_000


def make_event(
    i: int,
    *,
    kind: str = "process_exec",
    binary: str = "/bin/true",
    arguments: str | None = None,
    namespace: str | None = None,
    pod_name: str = "web-0",
    labels: dict[str, str] | None = None,
    parent_binary: str = "/bin/sh",
    parent_pid: int = 1,
    in_init_tree: bool | None = None,
) -> dict[str, Any]:
    """Event number ``i`` as the enricher publishes it (to_json_dict of the model)."""
    pod = (
        Pod(namespace=namespace, name=pod_name, pod_labels=labels or {})
        if namespace is not None
        else None
    )
    process = Process(
        exec_id=exec_id(NODE, T0 + i, 10_000 + i),
        pid=10_000 + i,
        uid=0,
        binary=binary,
        arguments=f"event-{i}" if arguments is None else arguments,
        start_time=T0 + i,
        pod=pod,
        in_init_tree=in_init_tree,
        parent_exec_id=exec_id(NODE, T0, parent_pid),
    )
    parent = Process(exec_id=exec_id(NODE, T0, parent_pid), pid=parent_pid, binary=parent_binary)
    if kind == "process_exec":
        resp = GetEventsResponse(
            process_exec=ProcessExec(process=process, parent=parent), node_name=NODE, time=T0 + i
        )
    else:
        resp = GetEventsResponse(
            process_exit=ProcessExit(process=process, parent=parent, time=T0 + i),
            node_name=NODE,
            time=T0 + i,
        )
    return resp.to_json_dict()


def marker_of(event: dict[str, Any]) -> str:
    kind = next(k for k in ("process_exec", "process_exit") if k in event)
    return str(event[kind]["process"]["arguments"])


async def create_stream(nc: NATS) -> None:
    await ensure_stream(nc.jetstream(), EnricherSettings(nats_url="nats://unused"))


async def publish(nc: NATS, events: list[dict[str, Any]]) -> None:
    """Into OCELLUS_EVENTS, waiting for every JetStream ack."""
    js = nc.jetstream(publish_async_max_pending=4096)
    for event in events:
        kind = next(k for k in ("process_exec", "process_exit") if k in event)
        await js.publish_async(subjects.events(NODE, kind), codec.pack(event))
    await asyncio.wait_for(js.publish_async_completed(), 30)


def write_config(path: Path, sinks: list[dict[str, Any]], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"sinks": sinks, **top}))
    return path


def settings_for(nats_url: str, config_file: Path, **overrides: Any) -> Settings:
    return Settings(
        nats_url=nats_url,
        node_name=NODE,
        config_file=config_file,
        status_interval=0.2,
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_exporter(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """The exporter service in this process; stopped (as by SIGTERM) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        if not task.cancelled():  # a test that cancels it awaits it itself
            await asyncio.wait_for(task, 30)


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def read_lines(directory: Path) -> list[dict[str, Any]]:
    """Every JSON line in the directory's files, current and rotated, gzip too
    (a file rotated away while this reads is skipped: call again to be sure)."""
    events = []
    for path in sorted(directory.iterdir()):
        try:
            if path.name.endswith(".gz"):
                text = gzip.decompress(path.read_bytes()).decode()
            elif path.suffix == ".json":
                text = path.read_text()
            else:
                continue
        except FileNotFoundError:
            continue
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        events.extend(json.loads(line) for line in complete.splitlines())
    return events


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


class StatusCollector:
    """Keeps the exporter's heartbeats."""

    def __init__(self) -> None:
        self.beats: list[dict[str, Any]] = []

    async def on_status(self, msg: Any) -> None:
        self.beats.append(codec.unpack(msg.data))

    def sink(self, name: str) -> dict[str, Any]:
        return self.beats[-1]["sinks"][name] if self.beats else {}

    @classmethod
    async def subscribe(cls, nc: NATS) -> StatusCollector:
        collector = cls()
        await nc.subscribe(subjects.status("exporter", NODE), cb=collector.on_status)
        await nc.flush()
        return collector
