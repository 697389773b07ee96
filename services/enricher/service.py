"""The enricher's lifecycle: seed from /proc, consume raw records as a queue
group, publish Tetragon-shaped events into the JetStream stream.

Shutdown mirrors start-up: stop the subscription, emit what is held, wait
for outstanding acks, drain NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from schemas import codec, subjects
from schemas.events import EVENT_KINDS
from services.common import bus, heartbeats
from services.common.containers import ContainerResolver
from services.common.hostfs import boot_time_ns, cgroup2_root
from services.common.lifecycle import RateLimitedLog, stop_on_signals
from services.common.logging import get_logger
from services.common.metrics import start_telemetry
from services.enricher import procfs
from services.enricher.cache import ProcessCache
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
        num_replicas=settings.stream_replicas,  # R3 on a 3-server cluster (README "NATS cluster")
    )
    try:
        await js.stream_info(subjects.EVENTS_STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


ACK_TIMEOUT = 5.0  # seconds before an unacknowledged event is sent again


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no JetStream ack within {ACK_TIMEOUT}s"))


class EventPublisher:
    """JetStream publishes with bounded async acks: never one ack at a time.

    An event JetStream did not store (its stream leader moved or was lost: a
    NATS server died) is sent again, with backoff, until it is stored: nothing
    is lost in a failover, but an event whose ack alone was lost is stored
    twice, and a retried event lands after later ones (README "NATS
    cluster"). At most ``retry_max`` events wait for a retry; beyond that
    they are dropped and counted (``events_failed``)."""

    def __init__(self, js: JetStreamContext, node: str, retry_max: int = 16384) -> None:
        self._js = js
        self._subjects = {t: subjects.events(node, t) for t in EVENT_KINDS}
        self._retry_max = retry_max
        self._retrying: set[asyncio.Task[None]] = set()
        self._warn = RateLimitedLog(5.0)
        self.published = 0
        self.published_by_kind: Counter[str] = Counter()
        self.acked = 0
        self.failed = 0
        self.retried = 0

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        await self._send(self._subjects[kind], codec.pack(event), 0)
        self.published += 1
        self.published_by_kind[kind] += 1

    async def _send(self, subject: str, payload: bytes, attempt: int) -> None:
        future = await self._js.publish_async(subject, payload)
        future.add_done_callback(lambda f: self._on_ack(f, subject, payload, attempt))
        # nats-py never times an async ack out: one sent to a server that died
        # before answering would wait forever (and hold a max_inflight slot).
        asyncio.get_running_loop().call_later(ACK_TIMEOUT, _expire, future)

    def _on_ack(self, future: asyncio.Future[Any], subject: str, payload: bytes, n: int) -> None:
        if not future.cancelled() and future.exception() is None:
            self.acked += 1
            return
        reason = "cancelled" if future.cancelled() else str(future.exception())
        if future.cancelled() or len(self._retrying) >= self._retry_max:
            self.failed += 1
            log.error("event not stored by JetStream", reason=reason, retrying=len(self._retrying))
            return
        self.retried += 1
        if self._warn.ready():
            log.warning("events not stored by JetStream; retrying", reason=reason,
                        retried=self.retried)  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._retry(subject, payload, n + 1))
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    async def _retry(self, subject: str, payload: bytes, attempt: int) -> None:
        await asyncio.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
        try:
            await self._send(subject, payload, attempt)
        except (nats.errors.Error, OSError) as e:  # closed or draining: shutting down
            self.failed += 1
            log.error("event not stored by JetStream", reason=str(e) or type(e).__name__)

    async def wait_acks(self, timeout: float) -> None:
        """Until every event is stored (retries included), at most ``timeout``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    await self._js.publish_async_completed()
                    if not self._retrying:
                        break
                    await asyncio.gather(*self._retrying, return_exceptions=True)
        for task in list(self._retrying):
            task.cancel()
            self.failed += 1


# Every hook event allocates a dozen containers, and a raw batch's thousands of records
# live until its last one is out: at the default 700 allocations a young collection runs
# every ~150 events and promotes whole batches, which full collections over the process
# cache then walk (~1.5 µs of a 10-15 µs event, benchmarks/enricher_hooks). The cache's
# entries refer only to their parents (no cycles to wait for); 10,000 keeps collection
# under 0.3 µs per event.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


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
    deadline = 0.0  # of the shutdown, once it starts
    if nc is None:
        nc = await bus.connect_service(settings, "enricher", stop)
    resolver = ContainerResolver(
        cgroup_root=settings.cgroup_root,
        docker_socket=settings.docker_socket,
        ttl=settings.container_ttl,
        deleted_grace=settings.container_grace,
    )
    telemetry = await start_telemetry(settings, "enricher", nc)
    try:
        js = nc.jetstream(publish_async_max_pending=settings.max_inflight)
        await ensure_stream(js, settings)
        await resolver.start()
        events = EventPublisher(js, settings.node_name, retry_max=4 * settings.max_inflight)
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
        telemetry.status(lambda: _status(settings, pipeline, events, started))
        telemetry.ready()  # subscribed
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
        # One deadline for the whole shutdown: delivered records, outstanding
        # acks and the NATS drain share drain_timeout (each on its own could
        # add up past the stop timeout `ocellus up` gives a service).
        deadline = time.monotonic() + settings.drain_timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.drain(), _left(deadline))  # what was delivered
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pipeline.expire_held(everything=True)
        await events.wait_acks(_left(deadline))
        await _publish_status(nc, settings, pipeline, events, started)
        log.info("enricher stopped", **_counters(pipeline, events))
    finally:
        await telemetry.stop()
        await resolver.close()
        if own_nc:
            await bus.drain(nc, _left(deadline) if deadline else settings.drain_timeout)
        # Last, so a lost connection is what the exit says, whatever failed after it
        # (a closed client's unsubscribe raises) or returned early.
        bus.raise_if_lost(nc)


def _left(deadline: float, floor: float = 0.2) -> float:
    """Seconds until ``deadline``, never less than ``floor`` (a last short try)."""
    return max(floor, deadline - time.monotonic())


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
        **{f"events_published_{k}": v for k, v in events.published_by_kind.items()},
        "events_acked": events.acked,
        "events_failed": events.failed,
        "events_retried": events.retried,
    }


def _status(
    settings: Settings, pipeline: Pipeline, events: EventPublisher, started: float
) -> dict[str, Any]:
    """The heartbeat body (also what /metrics reads)."""
    return heartbeats.heartbeat(
        "enricher", settings.node_name, started, counters=_counters(pipeline, events)
    )


async def _publish_status(
    nc: NATS, settings: Settings, pipeline: Pipeline, events: EventPublisher, started: float
) -> None:
    await heartbeats.publish(nc, _status(settings, pipeline, events, started))


async def _report(
    nc: NATS, settings: Settings, pipeline: Pipeline, events: EventPublisher, started: float
) -> None:
    while True:  # the first heartbeat, at once, also says "ready"
        await _publish_status(nc, settings, pipeline, events, started)
        await asyncio.sleep(settings.status_interval)
