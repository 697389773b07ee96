"""Dead letters: messages a sink cannot take (malformed, rejected by the
receiver, or given up on after `retry.max_attempts`), published with the
reason to ``ocellus.deadletter.<sink>`` before the original is acked.

With a dead-letter stream (the default, OCELLUS_DEADLETTER) each dead letter
is stored by JetStream and acknowledged before the original message is, so
none is lost; without one they go out on core NATS to whoever listens.
Payload (msgpack, like every Ocellus message): ``sink``, ``reason``,
``subject`` and ``stream_sequence`` of the original, ``time`` (ns), and
``data``: the original message as stored in the stream (msgpack of the
event before filters, masks and redaction; or whatever did not decode).
"""

from __future__ import annotations

import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from schemas import codec, subjects
from services.common.errors import OcellusError
from services.exporter.config import DeadLetterSpec


class DeadLetterError(OcellusError):
    """A dead letter could not be stored; the original stays unacked."""


class DeadLetters:
    def __init__(self, nc: NATS, js: JetStreamContext, spec: DeadLetterSpec) -> None:
        self._nc = nc
        self._js = js
        self._spec = spec

    async def ensure_stream(self) -> None:
        if self._spec.stream is None:
            return
        config = StreamConfig(
            name=self._spec.stream,
            subjects=[subjects.deadletter_all()],
            storage=StorageType.FILE,
            max_age=self._spec.max_age,
        )
        try:
            try:
                await self._js.stream_info(self._spec.stream)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(config)
            else:
                await self._js.update_stream(config)
        except (nats.errors.Error, TimeoutError) as e:
            raise DeadLetterError(
                f"cannot create or update the dead-letter stream {self._spec.stream}: {e}"
            ) from e

    async def publish(self, sink: str, reason: str, msg: Msg) -> None:
        body: dict[str, Any] = {
            "sink": sink,
            "reason": reason,
            "time": time.time_ns(),
            "subject": msg.subject,
            "stream_sequence": _stream_sequence(msg),
            "data": msg.data,
        }
        payload = codec.pack(body)
        try:
            if self._spec.stream is None:
                await self._nc.publish(subjects.deadletter(sink), payload)
            else:
                await self._js.publish(subjects.deadletter(sink), payload, stream=self._spec.stream)
        except (nats.errors.Error, OSError, TimeoutError) as e:
            raise DeadLetterError(
                f"dead letter for sink {sink!r} not stored: {e or type(e).__name__}"
            ) from e


def _stream_sequence(msg: Msg) -> int | None:
    try:
        return msg.metadata.sequence.stream
    except (AttributeError, ValueError, IndexError, nats.errors.Error):
        return None  # not a JetStream message (tests, synthetic events)
