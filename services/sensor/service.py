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
from services.common import bus, heartbeats
from services.common.lifecycle import RateLimitedLog, stop_on_signals
from services.common.logging import get_logger
from services.common.metrics import start_telemetry
from services.sensor import capabilities
from services.sensor.attachments import HookAttachments
from services.sensor.connect_guard import ConnectGuard
from services.sensor.hook_records import policy_pin_dir
from services.sensor.mounts import ensure_sensor_mounts
from services.sensor.probes import ProcessProbes, detach_all
from services.sensor.publisher import RawPublisher
from services.sensor.reader import RingBufferReader
from services.sensor.records import ArgLimits
from services.sensor.settings import Settings
from services.sensor.watchdog import Watchdog, run_watchdog

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
        nc = await bus.connect_service(settings, "sensor", stop)

    probes = ProcessProbes(
        ringbuf_pages=settings.ringbuf_pages,
        args_max=settings.args_max,
        procs_max=settings.procs_max,
        wakeup_bytes=settings.wakeup_bytes,
        pin_dir=policy_pin_dir(settings.bpf_pin_dir, settings.node_name),
    )
    attachments: HookAttachments | None = None
    guard: ConnectGuard | None = None
    telemetry = await start_telemetry(settings, "sensor", nc)
    telemetry.check("programs attached", lambda: probes.bpf is not None)
    try:
        await asyncio.to_thread(probes.load)  # clang takes a second or two
        seeded = probes.seed_parents()
        probes.seed_selectors()  # matchBinaries / matchPIDs for processes older than us
        # Policies written before a restart enforce again from here on.
        guard = ConnectGuard(probes)
        guard.attach()  # network deny: Override on connect (its state: in sync replies)
        attachments = HookAttachments(probes)
        hooks = attachments.sync()
        control = await nc.subscribe(
            subjects.control("sensor", settings.node_name, "sync_hooks"),
            cb=_sync_handler(nc, attachments, guard),
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
        hooked = attachments
        telemetry.status(lambda: _status(settings, probes, publisher, caps, started, hooked))
        telemetry.bpf_program_names(lambda: _program_names(probes))
        publishing = asyncio.create_task(publisher.run(), name="publish")
        reporting = asyncio.create_task(
            _report(nc, settings, probes, publisher, caps, started, attachments), name="status"
        )
        watching = None
        if settings.watchdog_interval > 0:
            watchdog = publisher.watchdog = Watchdog(
                probes.bpf, probes.pin_dir, canary_timeout=settings.canary_timeout
            )
            watching = asyncio.create_task(
                run_watchdog(
                    watchdog, settings.watchdog_interval, _alerter(nc, settings, publisher)
                ),
                name="watchdog",
            )
        telemetry.ready()
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
        guard.close()
        attachments.close()
        await reader.stop()
        publishing.cancel()
        reporting.cancel()
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
        await publisher.flush_pending()
        await _publish_status(nc, settings, probes, publisher, caps, started, attachments)
        log.info("sensor stopped", **_counters(probes, publisher))
    finally:
        await telemetry.stop()
        if attachments is not None:
            attachments.close()
        if guard is not None:
            guard.close()
        probes.close()
        if own_nc:
            await bus.drain(nc, settings.drain_timeout)
        # Last, so a lost connection is what the exit says, whatever failed after it
        # (a closed client's unsubscribe raises) or returned early.
        bus.raise_if_lost(nc)


def _alerter(nc: NATS, settings: Settings, publisher: RawPublisher) -> Any:
    """Report a watchdog finding: logged, counted, on ocellus.alerts.<node>."""

    async def alert(kind: str, message: str) -> None:
        publisher.counters[f"alerts_{kind}"] += 1
        log.error("sensor alert", kind=kind, message=message)
        body = {
            "node": settings.node_name,
            "kind": kind,
            "message": message,
            "time": time.time_ns(),
        }
        await nc.publish(subjects.alerts(settings.node_name), codec.pack(body))

    return alert


def _sync_handler(nc: NATS, attachments: HookAttachments, guard: ConnectGuard) -> Any:
    """ocellus.ctl.sensor.<node>.sync_hooks: attach to what the policy maps
    name now; the reply says what is attached and what failed, and the state of the
    connect programs (network deny)."""

    async def handle(msg: Any) -> None:
        state = {**attachments.sync(), "connect_guard": guard.state,
                 "connect_guard_serves": guard.serves()}  # fmt: skip
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


def _program_names(probes: ProcessProbes) -> dict[int, str]:
    """fd -> full name of the sensor's BPF programs (for metrics)."""
    funcs = probes.bpf.funcs if probes.bpf is not None else {}
    return {int(f.fd): name.decode() for name, f in funcs.items()}


def _status(
    settings: Settings,
    probes: ProcessProbes,
    publisher: RawPublisher,
    caps: dict[str, str],
    started: float,
    attachments: HookAttachments,
) -> dict[str, Any]:
    """The heartbeat body (also what /metrics reads)."""
    return heartbeats.heartbeat(
        "sensor",
        settings.node_name,
        started,
        counters=_counters(probes, publisher),
        capabilities=caps,
        hooks=attachments.state(),
    )


async def _publish_status(
    nc: NATS,
    settings: Settings,
    probes: ProcessProbes,
    publisher: RawPublisher,
    caps: dict[str, str],
    started: float,
    attachments: HookAttachments,
) -> dict[str, Any]:
    body = _status(settings, probes, publisher, caps, started, attachments)
    await heartbeats.publish(nc, body)
    counters: dict[str, Any] = body["counters"]
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
