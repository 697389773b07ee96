"""The durable JetStream pull consumer behind each sink.

One durable consumer per sink (`exporter_<sink>`, explicit acks,
`max_ack_pending` = the sink's `max_inflight`), so a restart or an outage of
the sink resumes where the sink's acks stopped, and several exporters
sharing a config share the work. The server never hands one sink more than
`max_inflight` unacked messages: that bounds the memory a slow or dead sink
can cost.

Pulling is done here rather than with nats.py's ``fetch()``, which spends a
task and a timeout on every message (~39 µs a message with its ack,
measured; ~13 µs this way): the `Puller` keeps about two batches requested
from the server, so the next batch is on its way while one is processed,
and the messages land in a buffer through one subscription callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas import subjects
from services.common.errors import OcellusError
from services.common.lifecycle import RateLimitedLog
from services.common.logging import get_logger
from services.exporter.config import SinkSpec

log = get_logger("ocellus.exporter")

FETCH_TIMEOUT = 1.0  # seconds a fetch waits for messages; also the stop latency
REQUEST_EXPIRES = 2.0  # seconds a pull request waits on the server
# 409s that only end a request (the consumer is at max_ack_pending, a leader moved).
_ROUTINE_CONFLICTS = ("Exceeded MaxAckPending", "Leadership Change", "Message Size Exceeds")


class StreamMissingError(OcellusError):
    """The stream does not exist (yet): the enricher creates it."""


async def ensure_consumer(js: JetStreamContext, stream: str, spec: SinkSpec) -> None:
    """Create the sink's durable consumer, or update what may be updated."""
    config = ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait,
        max_ack_pending=spec.max_inflight,
        max_deliver=-1,  # never give up on a message: the exporter decides
        deliver_policy=DeliverPolicy.NEW if spec.start_at == "new" else DeliverPolicy.ALL,
        filter_subject=subjects.events_all(),
    )
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError as e:
        raise StreamMissingError(f"stream {stream} not found") from e
    try:
        await js.consumer_info(stream, spec.durable)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(stream, config)
        return
    try:  # same name: the server updates what may be updated
        await js.add_consumer(stream, config)
    except nats.js.errors.BadRequestError as e:
        log.warning(
            "kept the existing consumer's settings",
            sink=spec.name,
            consumer=spec.durable,
            reason=e.description,
        )


class Puller:
    """Batches from a durable pull consumer. Failures (NATS reconnecting, the
    consumer being recreated) are logged and outlived, never fatal."""

    def __init__(self, nc: NATS, js: JetStreamContext, stream: str, spec: SinkSpec) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._spec = spec
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{spec.durable}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._outstanding = 0  # messages requested and not yet delivered
        self._requested_at = 0.0
        self._warn = RateLimitedLog(10.0)

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def fetch(self) -> list[Msg]:
        """Up to batch_size messages; [] when none came within FETCH_TIMEOUT."""
        await self._request_more()
        if not self._buffer:
            self._arrived.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
            # cancellation that races with the wait ending.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FETCH_TIMEOUT):
                    await self._arrived.wait()
        count = min(len(self._buffer), self._spec.batch_size)
        batch = [self._buffer.popleft() for _ in range(count)]
        await self._request_more()
        return batch

    def buffered(self) -> list[Msg]:
        """Delivered to this exporter, not yet taken by fetch()."""
        return list(self._buffer)

    async def lag(self) -> tuple[int, int]:
        """(messages not yet delivered, delivered but unacked)."""
        info = await self._js.consumer_info(self._stream, self._spec.durable)
        return info.num_pending or 0, info.num_ack_pending or 0

    async def close(self) -> None:
        """Hand back what was delivered but not taken, then stop listening."""
        with contextlib.suppress(nats.errors.Error, ValueError):
            while self._buffer:
                await self._buffer.popleft().nak()
            if self._sub is not None:
                await self._sub.unsubscribe()

    async def _request_more(self) -> None:
        now = time.monotonic()
        if self._outstanding and now - self._requested_at > REQUEST_EXPIRES + FETCH_TIMEOUT:
            self._outstanding = 0  # its end never came (lost in a reconnect): ask anew
        want = min(2 * self._spec.batch_size, self._spec.max_inflight)
        missing = want - self._outstanding - len(self._buffer)
        if missing < self._spec.batch_size and self._outstanding:
            return  # enough on its way; ask in batch-sized chunks, not message by message
        if missing <= 0:
            return
        request = {"batch": missing, "expires": int(REQUEST_EXPIRES * 1e9)}
        try:
            await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        except nats.errors.Error as e:
            if self._warn.ready():
                log.warning("pull request failed", sink=self._spec.name, reason=str(e))
            return
        self._outstanding += missing
        self._requested_at = now

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if not status:
            self._buffer.append(msg)
            self._outstanding = max(0, self._outstanding - 1)
            self._arrived.set()
            return
        if status == "100":
            return  # an idle heartbeat
        # 404 (nothing now), 408 (expired), 409 (conflict) end a request; the
        # server says how many of its messages it did not deliver.
        headers = msg.headers or {}
        unfilled = headers.get("Nats-Pending-Messages", "")
        if unfilled.isdigit():
            self._outstanding = max(0, self._outstanding - int(unfilled))
        else:
            self._outstanding = 0
        description = headers.get("Description", "")
        routine = status != "409" or description.startswith(_ROUTINE_CONFLICTS)
        if not routine and self._warn.ready():
            log.warning("pull request ended", sink=self._spec.name, reason=description)
        self._arrived.set()
