"""A batch of fetched messages on its way to a sink, and the keep-alive that
stops JetStream from redelivering batches that take long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.msg import Msg

from services.exporter.shape import Event


@dataclass(eq=False)
class Batch:
    """Messages fetched together, and what became of them so far."""

    events: list[Event] = field(default_factory=list)  # to send, shaped
    origins: list[Msg | None] = field(default_factory=list)  # per event; None: made here
    json_plain: list[bool] = field(default_factory=list)  # per event (decoding.py)
    malformed: list[tuple[Msg, str]] = field(default_factory=list)
    fetched_at: float = field(default_factory=time.monotonic)

    @classmethod
    def merge(cls, parts: list[Batch]) -> Batch:
        """One batch of several, in their order (the first itself when alone)."""
        if len(parts) == 1:
            return parts[0]
        whole = cls(fetched_at=min(p.fetched_at for p in parts))
        for part in parts:
            whole.events += part.events
            whole.origins += part.origins
            whole.json_plain += part.json_plain
            whole.malformed += part.malformed
        return whole

    def messages(self) -> list[Msg]:
        """The messages this batch still owes an ack."""
        pending = [m for m in self.origins if m is not None]
        return pending + [m for m, _ in self.malformed]

    def __bool__(self) -> bool:
        return bool(self.events or self.malformed)


class KeepAlive:
    """Tells JetStream that messages held longer than a third of `ack_wait`
    (queued behind a slow sink, waiting out a backoff, or delivered and not
    yet taken while the queue is full) are still being worked on, so it does
    not redeliver them meanwhile."""

    def __init__(self, ack_wait: float, undelivered: Callable[[], list[Msg]]) -> None:
        self.interval = ack_wait / 3
        self.batches: set[Batch] = set()
        self._undelivered = undelivered

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            held = list(self._undelivered())
            for batch in list(self.batches):
                if now - batch.fetched_at >= self.interval:
                    held.extend(batch.messages())
            try:
                for msg in held:
                    if not msg._ackd:  # nats.py has no public "acked" flag
                        await msg.in_progress()
            except nats.errors.Error:
                pass  # disconnected: the server will redeliver them, no loss
