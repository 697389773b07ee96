"""The enricher's lifecycle: seed from /proc, consume raw records as a queue
group, publish Tetragon-shaped events into the JetStream stream.

Shutdown mirrors start-up: stop the subscription, emit what is held, wait
for outstanding acks, drain NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from schemas import codec, subjects
from schemas.events import EVENT_KINDS
from services.common import bus
from services.common.hostfs import boot_time_ns, cgroup2_root
from services.common.lifecycle import stop_on_signals
from services.common.logging import get_logger
from services.enricher import procfs
from services.enricher.cache import ProcessCache
from services.enricher.containers import ContainerResolver
from services.enricher.holding import Holding
from services.enricher.hooks import HookRegistryView
from services.enricher.pipeline import Pipeline, run_expiry
from services.enricher.settings import Settings

log = get_logger("ocellus.enricher")


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """OCELLUS_EVENTS exists with the configured limits (created or updated)."""
    config = StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=[subjects.events_all()],
        storage=StorageType.FILE,
        max_age=settings.stream_max_age,
        max_bytes=settings.stream_max_bytes,
    )
    try:
        await js.stream_info(subjects.EVENTS_STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


class EventPublisher:
    """JetStream publishes with bounded async acks: never one ack at a time."""

    def __init__(self, js: JetStreamContext, node: str) -> None:
        self._js = js
        self._subjects = {t: subjects.events(node, t) for t in EVENT_KINDS}
        self.published = 0
        self.acked = 0
        self.failed = 0

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        future = await self._js.publish_async(self._subjects[kind], codec.pack(event))
        self.published += 1
        future.add_done_callback(self._on_ack)

    def _on_ack(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
            log.error("event not stored by JetStream", reason=str(future.exception()))
        else:
            self.acked += 1

    async def wait_acks(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._js.publish_async_completed(), timeout)


async def _seed(cache: ProcessCache, pipeline: Pipeline, settings: Settings) -> int:
    snaps = await asyncio.to_thread(procfs.all_processes, settings.proc_root)
    root = settings.cgroup_root or cgroup2_root()
    containers = {}
    for snap in snaps:
        cgroup_id = procfs.cgroup_id(snap.pid, root, settings.proc_root) if root else None
        if cgroup_id is not None:
            ctx = await pipeline.container(cgroup_id)
            if ctx is not None:
                containers[snap.pid] = ctx
    return cache.seed(snaps, boot_time_ns(), containers)


async def run(
    settings: Settings, *, nc: NATS | None = None, stop: asyncio.Event | None = None
) -> None:
    stop = stop or stop_on_signals()
    started = time.monotonic()
    own_nc = nc is None
    if nc is None:
        nc = await bus.connect_service(settings, "enricher")
    resolver = ContainerResolver(
        cgroup_root=settings.cgroup_root,
        docker_socket=settings.docker_socket,
        ttl=settings.container_ttl,
        deleted_grace=settings.container_grace,
    )
    try:
        js = nc.jetstream(publish_async_max_pending=settings.max_inflight)
        await ensure_stream(js, settings)
        await resolver.start()
        events = EventPublisher(js, settings.node_name)
        cache = ProcessCache(
            settings.node_name,
            max_entries=settings.cache_max,
            ancestors_depth=settings.ancestors_depth,
        )
        hooks = HookRegistryView(
            js,
            get_timeout=settings.hook_get_timeout,
            retry_after=settings.hook_retry_after,
            grace=settings.hook_grace,
        )
        pipeline = Pipeline(cache, resolver, Holding(settings.hold_seconds), events.publish, hooks)
        seeded = await _seed(cache, pipeline, settings)

        async def on_raw(msg: Msg) -> None:
            await pipeline.handle(msg.subject, msg.data)

        sub = await nc.subscribe(
            subjects.raw_all(), queue=settings.queue_group, cb=on_raw, pending_msgs_limit=65536
        )
        tasks = [
            asyncio.create_task(hooks.run(), name="hook-registry"),
            asyncio.create_task(run_expiry(pipeline), name="expiry"),
            asyncio.create_task(_report(nc, settings, pipeline, events, started), name="status"),
        ]
        log.info(
            "enricher running",
            node=settings.node_name,
            seeded_processes=seeded,
            start_seconds=round(time.monotonic() - started, 3),
        )
        await stop.wait()

        log.info("enricher stopping")
        await sub.drain()  # handles what was already delivered
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pipeline.expire_held(everything=True)
        await events.wait_acks(settings.drain_timeout)
        await _publish_status(nc, settings, pipeline, events, started)
        log.info("enricher stopped", **_counters(pipeline, events))
    finally:
        await resolver.close()
        if own_nc:
            await bus.drain(nc, settings.drain_timeout)


def _counters(pipeline: Pipeline, events: EventPublisher) -> dict[str, int]:
    return {
        **pipeline.counters,
        **pipeline.cache.counters,
        **{f"containers_{k}": v for k, v in pipeline.resolver.counters.items()},
        **(pipeline.hooks.counters if pipeline.hooks is not None else {}),
        "hooks_known": len(pipeline.hooks) if pipeline.hooks is not None else 0,
        "cache_size": len(pipeline.cache),
        "held": len(pipeline.holding),
        "events_published": events.published,
        "events_acked": events.acked,
        "events_failed": events.failed,
    }


async def _publish_status(
    nc: NATS, settings: Settings, pipeline: Pipeline, events: EventPublisher, started: float
) -> None:
    await nc.publish(
        subjects.status("enricher", settings.node_name),
        codec.pack(
            {
                "service": "enricher",
                "node": settings.node_name,
                "time": time.time_ns(),
                "uptime": round(time.monotonic() - started, 3),
                "counters": _counters(pipeline, events),
            }
        ),
    )


async def _report(
    nc: NATS, settings: Settings, pipeline: Pipeline, events: EventPublisher, started: float
) -> None:
    while True:  # the first heartbeat, at once, also says "ready"
        await _publish_status(nc, settings, pipeline, events, started)
        await asyncio.sleep(settings.status_interval)
