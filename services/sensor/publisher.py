"""Bounded hand-off from the ring-buffer reader to NATS.

The reader delivers batches of raw bytes; they wait in a bounded queue
(drops past ``queue_max`` are counted, never silent) until the publishing
task decodes them and publishes one msgpack message per event type and
chunk to ``ocellus.raw.<node>.<type>``: a slow NATS never stalls draining.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client as NATS

from schemas import codec, subjects
from services.common.hostfs import boot_time_ns
from services.common.logging import get_logger
from services.sensor.records import ArgLimits, RecordError, decode

if TYPE_CHECKING:
    from services.sensor.watchdog import Watchdog

log = get_logger("ocellus.sensor.publisher")

# Causal order within a batch: a container's cgroup exists before its
# processes run in it, and is removed after they are gone; a process's hook
# events come after its exec and before its exit.
PUBLISH_ORDER = (
    subjects.CGROUP_MKDIR,
    subjects.PROCESS_CLONE,
    subjects.PROCESS_EXEC,
    subjects.PROCESS_HOOK,
    subjects.PROCESS_EXIT,
    subjects.CGROUP_RMDIR,
)


class RawPublisher:
    def __init__(
        self, nc: NATS, node: str, *, queue_max: int, max_bytes: int, limits: ArgLimits
    ) -> None:
        self._limits = limits
        self._nc = nc
        self._node = node
        self._queue: deque[list[bytes]] = deque()
        self._queued = 0
        self._queue_max = queue_max
        self._max_bytes = max_bytes
        self._wake = asyncio.Event()
        self._subjects = {t: subjects.raw(node, t) for t in PUBLISH_ORDER}
        self.counters: Counter[str] = Counter()
        self.watchdog: Watchdog | None = None  # takes out the sensor's own canary records

    def deliver(self, batch: list[bytes]) -> None:
        """A drained batch joins the queue, or is dropped (counted) if it is full."""
        self.counters["received"] += len(batch)
        if self._queued + len(batch) > self._queue_max:
            self.counters["queue_dropped"] += len(batch)
            return
        self._queue.append(batch)
        self._queued += len(batch)
        self._wake.set()

    @property
    def queued(self) -> int:
        return self._queued

    async def run(self) -> None:
        """Publish until cancelled; `flush_pending` publishes what is left."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush_pending()

    async def flush_pending(self) -> None:
        while self._queue:
            batch = self._queue.popleft()
            self._queued -= len(batch)
            await self._publish(batch)
            # nc.publish rarely yields: without this, a backlog is published
            # in one go while nothing drains the ring, which then overflows
            # (kernel_ringbuf_full) with the queue all but empty. Yielding
            # lets the reader move the ring into the queue between batches.
            await asyncio.sleep(0)

    async def _publish(self, batch: list[bytes]) -> None:
        # Types go out in causal order (PUBLISH_ORDER): NATS keeps a
        # connection's order, so a consumer sees a process's exec before its
        # exit even though they travel on different subjects.
        by_type: dict[str, list[tuple[int, dict[str, Any]]]] = {t: [] for t in PUBLISH_ORDER}
        # The watchdog's canary, if one is out: its records are ours, not events.
        # One int compare per record on this path, not a call.
        canary = self.watchdog.canary if self.watchdog is not None else None
        canary_pid = canary.pid if canary is not None else -1
        for data in batch:
            try:
                event_type, record = decode(data, self._limits)
            except RecordError as e:
                self.counters["decode_errors"] += 1
                log.error("undecodable ring-buffer record", reason=str(e))
                continue
            if record["pid"] == canary_pid and self.watchdog.take_canary(  # type: ignore[union-attr]
                event_type, record
            ):
                continue
            by_type[event_type].append((len(data), record))
        boot_ns = boot_time_ns()
        for event_type, sized in by_type.items():
            chunk: list[dict[str, Any]] = []
            size = 0
            for record_size, record in sized:
                chunk.append(record)
                size += record_size
                if size >= self._max_bytes:
                    await self._send(event_type, chunk, boot_ns)
                    chunk, size = [], 0
            if chunk:
                await self._send(event_type, chunk, boot_ns)

    async def _send(self, event_type: str, records: list[dict[str, Any]], boot_ns: int) -> None:
        payload = codec.pack(
            {"node": self._node, "type": event_type, "boot_ns": boot_ns, "records": records}
        )
        await self._nc.publish(self._subjects[event_type], payload)
        self.counters["published"] += len(records)
        self.counters["messages"] += 1
        self.counters[f"published_{event_type}"] += len(records)
