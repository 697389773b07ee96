"""What happens to one message on its way to a sink: decode, check the shape,
filter, rate-limit, redact, mask. Plain dicts, no pydantic: this is the hot
path."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from services.exporter.config import SinkSpec
from services.exporter.decoding import decode_event
from services.exporter.filters import FilterSet
from services.exporter.masks import FieldMask, Redactor
from services.exporter.ratelimit import RateLimiter, rate_limit_info_event
from services.exporter.shape import Event


class Verdict(enum.Enum):
    SEND = "send"
    FILTERED = "filtered"
    RATE_LIMITED = "rate_limited"


class EventPipeline:
    def __init__(
        self,
        spec: SinkSpec,
        node_name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._filters = FilterSet(spec.allow, spec.deny)
        self._redactor = Redactor(spec.redact)
        self._mask = FieldMask(spec.include_fields, spec.exclude_fields)
        self._node_name = node_name
        self.rate_limiter = (
            RateLimiter(
                spec.rate_limit.events_per_second,
                spec.rate_limit.burst,
                spec.rate_limit.report_interval,
                clock,
            )
            if spec.rate_limit
            else None
        )

    @staticmethod
    def decode(data: bytes) -> tuple[Event, bool]:
        """The event in a message, and whether it is JSON-plain (decoding.py);
        MalformedEventError (a ValueError) if it is none."""
        return decode_event(data)

    def process(self, event: Event) -> Verdict:
        """Decide, and shape the event in place when it is to be sent."""
        if not self._filters.admits(event):
            return Verdict.FILTERED
        if self.rate_limiter is not None and not self.rate_limiter.admit():
            return Verdict.RATE_LIMITED
        if self._redactor.active:
            self._redactor.apply(event)
        if self._mask.active:
            self._mask.apply(event)
        return Verdict.SEND

    def rate_limit_report(self) -> Event | None:
        """A rate_limit_info event when a report interval with drops is over."""
        if self.rate_limiter is None:
            return None
        dropped = self.rate_limiter.due_report()
        if not dropped:
            return None
        return rate_limit_info_event(dropped, self._node_name, time.time_ns())
