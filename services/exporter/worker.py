"""One sink's worker: fetch → decode, filter, rate-limit, shape → send with
retries → ack, with every outcome counted.

Two tasks per sink: the fetcher prepares batches into a small bounded queue
while the sender delivers the previous one, so decoding overlaps the sink's
I/O. For a sink that pays per send (`Sink.coalesce`: json_file's fdatasync),
the sender takes the batches that queued up meanwhile in one send. A batch
is acked only after the sink took it (or its events were dead-lettered);
filtered and rate-limited messages are acked at once.

Retries: a `TransientSinkError` (or any exception from a sink: a bug must
not stop the exporter) is retried with exponential backoff and full jitter,
forever unless `retry.max_attempts` is set; the messages stay in flight
(kept alive with in-progress acks), so nothing is redelivered behind the
sink's back. After the last attempt the batch is dead-lettered (or dropped,
counted, if `dead_letter` is off). On shutdown a failing sink is not waited
for: its unacked messages are nak'ed and come back on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common.lifecycle import RateLimitedLog
from services.common.logging import get_logger
from services.exporter.batch import Batch, KeepAlive
from services.exporter.config import ConfiguredSink
from services.exporter.consumer import Puller, StreamMissingError, ensure_consumer
from services.exporter.counters import SinkCounters
from services.exporter.deadletter import DeadLetterError, DeadLetters
from services.exporter.pipeline import EventPipeline, Verdict
from services.exporter.retry import backoff_delay, sleep_unless
from services.exporter.shape import MalformedEventError
from services.exporter.sinks import sink_class
from services.exporter.sinks.base import BatchResult, EventBatch, Sink, TransientSinkError

log = get_logger("ocellus.exporter")


@dataclass(frozen=True)
class GaveUp:
    reason: str


class SinkWorker:
    def __init__(
        self,
        configured: ConfiguredSink,
        nc: NATS,
        dead_letters: DeadLetters,
        *,
        stream: str,
        node_name: str,
    ) -> None:
        self.spec = configured.spec
        self.sink: Sink = sink_class(self.spec.type)(self.spec.name, configured.options)
        self.pipeline = EventPipeline(self.spec, node_name)
        self.counters = SinkCounters()
        self.state = "starting"
        self._nc = nc
        self._js = nc.jetstream()
        self._stream = stream
        self._dead_letters = dead_letters
        self._stop = asyncio.Event()
        self._puller: Puller | None = None
        self._keep_alive = KeepAlive(
            self.spec.ack_wait, lambda: self._puller.buffered() if self._puller else []
        )
        depth = max(1, self.spec.max_inflight // self.spec.batch_size - 1)
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=depth)
        self._abandoned = False
        self._warn = RateLimitedLog(5.0)  # retries, start-up: one line per 5 s
        self._errors = RateLimitedLog(5.0)  # per-event trouble: one line per 5 s

    def stop(self) -> None:
        """Stop fetching; what was fetched is delivered unless the sink is failing."""
        self._stop.set()

    def snapshot(self) -> dict[str, int | str]:
        return {"state": self.state, **asdict(self.counters)}

    async def refresh_lag(self) -> None:
        if self._puller is None:
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            self.counters.lag, self.counters.ack_pending = await self._puller.lag()

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            if not await self._start_sink() or not await self._bind():
                return
            self.state = "running"
            log.info("sink running", sink=self.spec.name, type=self.spec.type)
            name = self.spec.name
            fetch = asyncio.create_task(self._fetch_loop(), name=f"fetch-{name}")
            send = asyncio.create_task(self._send_loop(), name=f"send-{name}")
            tasks = [fetch, send, asyncio.create_task(self._keep_alive.run(), name=f"ka-{name}")]
            # Normally the fetcher stops, then the sender empties the queue; a
            # failure in either ends the worker with that failure.
            await asyncio.wait({fetch, send}, return_when=asyncio.FIRST_EXCEPTION)
            for task in (fetch, send):
                if task.done():
                    task.result()
        finally:
            self._stop.set()  # when cancelled: the loops end even if a cancel is lost
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.state = "stopped"
            await self._close()

    async def _start_sink(self) -> bool:
        attempt = 0
        while not self._stop.is_set():
            try:
                await self.sink.start()
                return True
            except TransientSinkError as e:
                attempt += 1
                self.state = "retrying"
                if self._warn.ready():
                    log.warning("sink cannot start; retrying", sink=self.spec.name, reason=e.reason)
            if await sleep_unless(self._stop, backoff_delay(attempt, self.spec.retry)):
                break
        return False

    async def _bind(self) -> bool:
        while not self._stop.is_set():
            try:
                await ensure_consumer(self._js, self._stream, self.spec)
                self._puller = Puller(self._nc, self._js, self._stream, self.spec)
                await self._puller.start()
                return True
            except (StreamMissingError, nats.errors.Error) as e:
                self.state = "waiting_for_stream"
                if self._warn.ready():
                    log.warning("cannot consume yet; retrying", sink=self.spec.name, reason=str(e))
            if await sleep_unless(self._stop, 1.0):
                break
        return False

    async def _close(self) -> None:
        if self._puller is not None:
            await self._puller.close()
        try:
            await self.sink.close()
        except Exception as e:  # a sink's close must not stop the others'
            log.error("sink close failed", sink=self.spec.name, reason=repr(e))

    async def _fetch_loop(self) -> None:
        assert self._puller is not None
        try:
            while not self._stop.is_set():
                batch = await self._prepare(await self._puller.fetch())
                if batch:
                    self._keep_alive.batches.add(batch)
                    await self._queue.put(batch)
        except BaseException:
            # Cancelled or failed: the sender may be gone too, so never wait on it.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            raise
        await self._queue.put(None)  # stopped: the sender delivers what is queued, then ends

    async def _prepare(self, msgs: Sequence[Msg]) -> Batch:
        batch = Batch()
        counters = self.counters
        counters.received += len(msgs)
        for msg in msgs:
            try:
                event, json_plain = self.pipeline.decode(msg.data)
            except MalformedEventError as e:
                counters.malformed += 1
                batch.malformed.append((msg, f"malformed: {e}"))
                continue
            verdict = self.pipeline.process(event)
            if verdict is Verdict.SEND:  # shaping keeps an event JSON-plain
                batch.events.append(event)
                batch.origins.append(msg)
                batch.json_plain.append(json_plain)
                continue
            if verdict is Verdict.FILTERED:
                counters.filtered += 1
            else:
                counters.rate_limited += 1
            await self._ack(msg)
        report = self.pipeline.rate_limit_report()
        if report is not None:
            batch.events.append(report)
            batch.origins.append(None)
            batch.json_plain.append(False)  # made here; not worth proving plain
        return batch

    async def _send_loop(self) -> None:
        ended = False
        while not ended and (batch := await self._queue.get()) is not None:
            parts = [batch]
            if self.sink.coalesce:
                ended = self._take_queued(parts)
            try:
                whole = Batch.merge(parts)
                if self._abandoned:
                    await self._nak(whole.messages())
                else:
                    await self._deliver(whole)
            finally:
                for part in parts:
                    self._keep_alive.batches.discard(part)

    def _take_queued(self, parts: list[Batch]) -> bool:
        """Add the batches already waiting to ``parts`` (a sink whose every send
        costs the same, an fsync, then pays it once for all); True when the
        fetcher's end mark was among them."""
        while not self._queue.empty():
            batch = self._queue.get_nowait()
            if batch is None:
                return True
            parts.append(batch)
        return False

    async def _deliver(self, batch: Batch) -> None:
        for msg, reason in batch.malformed:
            await self._dead_letter(msg, reason)
        if not batch.events:
            return
        outcome = await self._send(EventBatch(batch.events, batch.json_plain))
        if outcome is None:  # stopping while the sink fails
            self._abandoned = True
            await self._nak(batch.messages())
            return
        if isinstance(outcome, GaveUp):
            for origin in batch.origins:
                await self._dead_letter(origin, outcome.reason)
            return
        rejected = {r.index: r.reason for r in outcome.rejected}
        self.counters.rejected += len(rejected)
        for index, origin in enumerate(batch.origins):
            if index in rejected:
                await self._dead_letter(origin, f"rejected: {rejected[index]}")
            elif origin is None:
                self.counters.rate_limit_reports += 1
            else:
                self.counters.sent += 1
                await self._ack(origin)

    async def _send(self, events: EventBatch) -> BatchResult | GaveUp | None:
        retry = self.spec.retry
        attempt = 0
        while True:
            try:
                result = await self.sink.send(events)
                self.state = "running"
                return result
            except TransientSinkError as e:
                reason = e.reason
            except Exception as e:  # a sink bug: log it and retry rather than die
                reason = f"unexpected {type(e).__name__}: {e}"
                if self._errors.ready():
                    log.exception("sink raised", sink=self.spec.name)
            attempt += 1
            if retry.max_attempts and attempt >= retry.max_attempts:
                log.error("giving up on a batch", sink=self.spec.name, events=len(events))
                return GaveUp(f"gave up after {attempt} attempts: {reason}")
            self.state = "retrying"
            delay = backoff_delay(attempt, retry)
            if self._warn.ready():
                log.warning(
                    "sink failed; retrying",
                    sink=self.spec.name,
                    reason=reason,
                    attempt=attempt,
                    backoff=round(delay, 3),
                )
            if self._stop.is_set() or await sleep_unless(self._stop, delay):
                return None
            self.counters.retried += len(events)

    async def _dead_letter(self, msg: Msg | None, reason: str) -> None:
        if msg is None:  # a rate_limit_info: its drops stay counted in rate_limited
            log.warning("rate_limit_info not delivered", sink=self.spec.name, reason=reason)
            return
        if not self.spec.dead_letter:
            self.counters.dropped += 1
            if self._errors.ready():
                log.warning(
                    "dropping events (dead_letter: false)", sink=self.spec.name, reason=reason
                )
            await self._ack(msg)
            return
        try:
            await self._dead_letters.publish(self.spec.name, reason, msg)
        except DeadLetterError as e:
            # Unacked, it comes back after ack_wait: the dead letter is retried then.
            if self._errors.ready():
                log.error("dead letter not stored", sink=self.spec.name, reason=str(e))
            return
        self.counters.dead_lettered += 1
        await self._ack(msg)

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except nats.errors.Error as e:
            # The message comes back after ack_wait: a duplicate, never a loss.
            if self._warn.ready():
                log.warning("ack failed", sink=self.spec.name, reason=str(e))

    async def _nak(self, msgs: list[Msg]) -> None:
        # Best effort: without the nak the message still comes back after ack_wait.
        for msg in msgs:
            if not msg._ackd:  # nats.py has no public "acked" flag
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak()
