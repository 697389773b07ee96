"""The sensor's lifecycle: mount, probe, load, seed, drain, publish, report.

Shutdown mirrors start-up: detach the programs (intake stops), drain the
ring, publish what is queued, drain NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import time
from typing import Any

from nats.aio.client import Client as NATS

from schemas import codec, subjects
from services.common import bus
from services.common.lifecycle import RateLimitedLog, stop_on_signals
from services.common.logging import get_logger
from services.sensor import capabilities
from services.sensor.attachments import HookAttachments
from services.sensor.hook_records import policy_pin_dir
from services.sensor.mounts import ensure_sensor_mounts
from services.sensor.probes import ProcessProbes, detach_all
from services.sensor.publisher import RawPublisher
from services.sensor.reader import RingBufferReader
from services.sensor.records import ArgLimits
from services.sensor.settings import Settings

log = get_logger("ocellus.sensor")


async def run(
    settings: Settings, *, nc: NATS | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``); ``nc`` is injectable for tests."""
    stop = stop or stop_on_signals()
    started = time.monotonic()
    mounted = ensure_sensor_mounts()
    caps = capabilities.probe()
    log.info("kernel capabilities", mounted=mounted, **caps)

    own_nc = nc is None
    if nc is None:
        nc = await bus.connect_service(settings, "sensor")

    probes = ProcessProbes(
        ringbuf_pages=settings.ringbuf_pages,
        args_max=settings.args_max,
        procs_max=settings.procs_max,
        wakeup_bytes=settings.wakeup_bytes,
        pin_dir=policy_pin_dir(settings.bpf_pin_dir, settings.node_name),
    )
    attachments: HookAttachments | None = None
    try:
        await asyncio.to_thread(probes.load)  # clang takes a second or two
        seeded = probes.seed_parents()
        # Policies written before a restart enforce again from here on.
        attachments = HookAttachments(probes)
        hooks = attachments.sync()
        control = await nc.subscribe(
            subjects.control("sensor", settings.node_name, "sync_hooks"),
            cb=_sync_handler(nc, attachments),
        )
        publisher = RawPublisher(
            nc,
            settings.node_name,
            limits=ArgLimits(settings.arg_max, settings.argc_max),
            queue_max=settings.queue_max,
            max_bytes=settings.publish_max_bytes,
        )
        reader = RingBufferReader(
            probes.ringbuf_fd,
            settings.ringbuf_pages * mmap.PAGESIZE,
            publisher.deliver,
            interval_ms=settings.drain_interval_ms,
            batch_max=settings.batch_max,
        )
        reader.start()
        publishing = asyncio.create_task(publisher.run(), name="publish")
        reporting = asyncio.create_task(
            _report(nc, settings, probes, publisher, caps, started, attachments), name="status"
        )
        log.info(
            "sensor running",
            node=settings.node_name,
            seeded_processes=seeded,
            hooked_tracepoints=len(hooks["attached"]),
            start_seconds=round(time.monotonic() - started, 3),
        )
        await stop.wait()

        log.info("sensor stopping")
        await control.unsubscribe()
        detach_all(probes)
        attachments.close()
        await reader.stop()
        publishing.cancel()
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
        await publisher.flush_pending()
        await _publish_status(nc, settings, probes, publisher, caps, started, attachments)
        log.info("sensor stopped", **_counters(probes, publisher))
    finally:
        if attachments is not None:
            attachments.close()
        probes.close()
        if own_nc:
            await bus.drain(nc, settings.drain_timeout)


def _sync_handler(nc: NATS, attachments: HookAttachments) -> Any:
    """ocellus.ctl.sensor.<node>.sync_hooks: attach to what the policy maps
    name now; the reply says what is attached and what failed."""

    async def handle(msg: Any) -> None:
        state = attachments.sync()
        if msg.reply:
            await nc.publish(msg.reply, codec.pack(state))

    return handle


def _counters(probes: ProcessProbes, publisher: RawPublisher) -> dict[str, int]:
    kernel = probes.kernel_counters() if probes.bpf is not None else {}
    return {
        **{f"kernel_{k}": v for k, v in kernel.items()},
        **publisher.counters,
        "queued": publisher.queued,
    }


async def _publish_status(
    nc: NATS,
    settings: Settings,
    probes: ProcessProbes,
    publisher: RawPublisher,
    caps: dict[str, str],
    started: float,
    attachments: HookAttachments,
) -> dict[str, Any]:
    counters = _counters(probes, publisher)
    await nc.publish(
        subjects.status("sensor", settings.node_name),
        codec.pack(
            {
                "service": "sensor",
                "node": settings.node_name,
                "time": time.time_ns(),
                "uptime": round(time.monotonic() - started, 3),
                "counters": counters,
                "capabilities": caps,
                "hooks": attachments.state(),
            }
        ),
    )
    return counters


async def _report(
    nc: NATS,
    settings: Settings,
    probes: ProcessProbes,
    publisher: RawPublisher,
    caps: dict[str, str],
    started: float,
    attachments: HookAttachments,
) -> None:
    """Heartbeat on ocellus.status.sensor.<node>, and a rate-limited log of losses;
    each beat also re-syncs the hook attachments with the policy maps."""
    warn = RateLimitedLog(10.0)
    last_lost = 0
    while True:  # the first heartbeat, at once, also says "ready"
        attachments.sync()
        counters = await _publish_status(
            nc, settings, probes, publisher, caps, started, attachments
        )
        lost = counters.get("kernel_ringbuf_full", 0) + counters.get("queue_dropped", 0)
        if lost > last_lost and warn.ready():
            log.warning(
                "events lost",
                since_last=lost - last_lost,
                ringbuf_full=counters.get("kernel_ringbuf_full", 0),
                queue_dropped=counters.get("queue_dropped", 0),
            )
            last_lost = lost
        await asyncio.sleep(settings.status_interval)
