"""The exporter's lifecycle: load the YAML, start one worker per sink (each
with its durable JetStream consumer), report per-sink counters, and on
SIGTERM stop fetching, deliver and ack what is in flight, close the sinks
and drain NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from nats.aio.client import Client as NATS

from services.common import bus, heartbeats
from services.common.errors import OcellusError
from services.common.lifecycle import stop_on_signals
from services.common.logging import get_logger
from services.common.metrics import start_telemetry
from services.exporter.config import ExporterConfig, load_config
from services.exporter.deadletter import DeadLetters
from services.exporter.settings import Settings
from services.exporter.worker import SinkWorker

log = get_logger("ocellus.exporter")


def tune_gc() -> None:
    """For the exporter's own process. Every event is a tree of ~100 dicts,
    lists and strings that lives for one batch: with the default thresholds
    they survive young collections, get promoted, and drag in full collections
    over every object the process holds. Freezing what start-up made and
    collecting less often cut ~20 % of CPU per event (measured, benchmarks/
    exporter_json.py); events hold no cycles, so memory does not grow."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class SinkWorkerError(OcellusError):
    """A sink's worker stopped on an unexpected error (a bug in the exporter)."""


async def run(
    settings: Settings,
    *,
    nc: NATS | None = None,
    stop: asyncio.Event | None = None,
    config: ExporterConfig | None = None,
    own_process: bool = False,
) -> None:
    """``config`` (tests) stands in for the file named by the settings;
    ``own_process``: the process is the exporter's alone (tune its GC)."""
    config = config or load_config(settings.config_file)  # fail before connecting
    if own_process:
        tune_gc()
    stop = stop or stop_on_signals()
    started = time.monotonic()
    own_nc = nc is None
    if nc is None:
        nc = await bus.connect_service(settings, "exporter", stop)
    workers: list[SinkWorker] = []
    tasks: dict[asyncio.Task[None], SinkWorker] = {}
    status: asyncio.Task[None] | None = None
    telemetry = await start_telemetry(settings, "exporter", nc)
    telemetry.check("sinks running", lambda: all(w.state == "running" for w in workers))
    telemetry.status(lambda: _status(settings, workers, started))
    try:
        js = nc.jetstream()
        dead_letters = DeadLetters(nc, js, config.dead_letter)
        await dead_letters.ensure_stream()
        workers = [
            SinkWorker(s, nc, dead_letters, stream=config.stream, node_name=settings.node_name)
            for s in config.sinks
        ]
        tasks = {asyncio.create_task(w.run(), name=f"sink-{w.spec.name}"): w for w in workers}
        status = asyncio.create_task(_report(nc, settings, workers, started), name="status")
        telemetry.ready()  # consumers bind as the sinks start: see the check above
        log.info(
            "exporter running",
            node=settings.node_name,
            stream=config.stream,
            sinks={w.spec.name: w.spec.type for w in workers},
        )
        crashed = await _until_stop_or_crash(stop, tasks)
        log.info("exporter stopping")
        await _stop_workers(tasks, settings.stop_timeout)
        await _publish_status(nc, settings, workers, started)
        log.info("exporter stopped", sinks={w.spec.name: w.snapshot() for w in workers})
        if crashed is not None:
            raise SinkWorkerError(f"a sink worker failed: {crashed!r}") from crashed
    finally:
        await telemetry.stop()
        if status is not None:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status
        for task in tasks:  # only still running when run() itself is cancelled
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if own_nc:
            await bus.drain(nc, settings.drain_timeout)
        # Last, so a lost connection is what the exit says, whatever failed after it
        # (a closed client's unsubscribe raises) or returned early.
        bus.raise_if_lost(nc)


async def _until_stop_or_crash(
    stop: asyncio.Event, tasks: dict[asyncio.Task[None], SinkWorker]
) -> BaseException | None:
    """Wait for the stop signal; a worker that ends first is a bug in the core,
    reported, and the exporter stops loudly."""
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    for task in tasks:
        if task in done and task.exception() is not None:
            error = task.exception()
            log.error("sink worker failed", sink=tasks[task].spec.name, exc_info=error)
            return error
    return None


async def _stop_workers(tasks: dict[asyncio.Task[None], SinkWorker], timeout: float) -> None:
    for worker in tasks.values():
        worker.stop()
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    _, late = await asyncio.wait(pending, timeout=timeout)
    for task in late:
        # Its unacked messages come back after ack_wait: late, not lost.
        log.error("sink did not stop in time; cancelling", sink=tasks[task].spec.name)
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*late, return_exceptions=True)


def _status(settings: Settings, workers: list[SinkWorker], started: float) -> dict[str, Any]:
    sinks = {w.spec.name: w.snapshot() for w in workers}
    totals: dict[str, int] = {}
    for counters in sinks.values():
        for key, value in counters.items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    return heartbeats.heartbeat(
        "exporter", settings.node_name, started, counters=totals, sinks=sinks
    )


async def _publish_status(
    nc: NATS, settings: Settings, workers: list[SinkWorker], started: float
) -> None:
    await heartbeats.publish(nc, _status(settings, workers, started))


async def _report(nc: NATS, settings: Settings, workers: list[SinkWorker], started: float) -> None:
    while True:  # the first heartbeat, at once, also says "ready"
        await _publish_status(nc, settings, workers, started)
        await asyncio.sleep(settings.status_interval)
        await asyncio.gather(*(w.refresh_lag() for w in workers))
