"""What every sink is: a config model and a class that sends batches of
events and says, per event, what happened.

The exporter core owns everything around a sink — the durable JetStream
consumer, filters, masks, redaction, rate limits, retries with backoff,
dead-lettering, counters. A sink only formats and delivers, and classifies
failures:

- it returns normally: every event in the batch was delivered (acked);
- it raises ``TransientSinkError``: nothing (or not all) was delivered but a
  retry may work (the receiver is down, answered 503, timed out); the core
  retries the whole batch with backoff, so a sink must tolerate duplicates
  within a batch (at-least-once);
- it returns a ``BatchResult`` with ``rejected``: those events are invalid
  for this receiver (it answered 400 for them); the core dead-letters them
  and acks the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# An event as the sinks see it: the Tetragon protobuf-JSON object
# (schemas.events.GetEventsResponse.to_json_dict() shape), after the core's
# filters, field masks and redaction.
Event = Mapping[str, Any]


class EventBatch(list[Event]):
    """The events of one ``send`` as the core hands them over: a list that also
    says, per event, whether it is JSON-plain (``json_plain[i]``: only maps
    with string keys, arrays, strings, integers, booleans and nil, known from
    decoding it; see decoding.py), so a sink may encode it with msgspec's JSON
    encoder without checking. A plain list (as tests pass) means: not known."""

    __slots__ = ("json_plain",)

    def __init__(self, events: Sequence[Event], json_plain: Sequence[bool]) -> None:
        super().__init__(events)
        self.json_plain = list(json_plain)


def json_plain_flags(events: Sequence[Event]) -> Sequence[bool]:
    """Per event: known to be JSON-plain (see EventBatch)."""
    if isinstance(events, EventBatch):
        return events.json_plain
    return [False] * len(events)


class SinkConfig(BaseModel):
    """Base of every sink's options. ``type`` selects the sink."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


class TransientSinkError(Exception):
    """Delivery failed in a way a retry may fix."""

    def __init__(self, sink: str, reason: str) -> None:
        super().__init__(f"sink {sink!r}: {reason}")
        self.sink = sink
        self.reason = reason


@dataclass(frozen=True)
class Rejection:
    index: int  # position of the event in the batch
    reason: str  # what the receiver said


@dataclass
class BatchResult:
    rejected: list[Rejection] = field(default_factory=list)


class Sink(ABC):
    """One configured destination. ``name`` is the sink's name in the config."""

    config_type: ClassVar[type[SinkConfig]]
    # True: the core may hand over several fetched batches in one send() when
    # they are waiting anyway (more than batch_size events, at most
    # max_inflight), for a sink whose cost is per send rather than per event.
    coalesce: ClassVar[bool] = False

    def __init__(self, name: str, config: SinkConfig) -> None:
        self.name = name
        self.config = config

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Open connections, files. Raise TransientSinkError if the receiver is down."""

    @abstractmethod
    async def send(self, events: Sequence[Event]) -> BatchResult:
        """Deliver a batch (see the module docstring for the outcomes)."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Flush and release; bounded in time; idempotent."""
