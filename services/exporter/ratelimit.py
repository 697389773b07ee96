"""A sink's rate limit: a token bucket, and Tetragon's `rate_limit_info`
event saying how many events it dropped — the limit is never silent.

The info event is Tetragon's ``RateLimitInfo`` export line,
``{"rate_limit_info": {"number_of_dropped_process_events": N}, "node_name":
..., "time": ...}``; Tetragon writes it with Go's encoding/json, so N is a
JSON number. It lives here, not in schemas/events.py, because only the
exporter makes it. One goes out per `report_interval` in which something
was dropped, with the count for that interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Timestamp


class RateLimitInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    number_of_dropped_process_events: int = Field(ge=0)


class RateLimitInfoEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    rate_limit_info: RateLimitInfo
    node_name: str = Field(min_length=1)
    time: Timestamp

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def rate_limit_info_event(dropped: int, node_name: str, time_ns: int) -> dict[str, Any]:
    return RateLimitInfoEvent(
        rate_limit_info=RateLimitInfo(number_of_dropped_process_events=dropped),
        node_name=node_name,
        time=time_ns,
    ).to_json_dict()


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RateLimiter:
    """Admits events at the configured rate and counts the rest, per report
    interval; ``due_report()`` hands back the count once its interval is over."""

    def __init__(
        self,
        events_per_second: float,
        burst: int,
        report_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bucket = TokenBucket(events_per_second, burst or max(1.0, events_per_second), clock)
        self._clock = clock
        self._interval = report_interval
        self._window_start = clock()
        self._dropped_in_window = 0
        self.dropped = 0  # since start

    def admit(self) -> bool:
        if self._bucket.take():
            return True
        if self._dropped_in_window == 0:
            self._window_start = self._clock()  # the window opens with its first drop
        self._dropped_in_window += 1
        self.dropped += 1
        return False

    def due_report(self) -> int:
        """The number dropped in a window that is now over (then 0 until the next)."""
        if not self._dropped_in_window or self._clock() - self._window_start < self._interval:
            return 0
        dropped, self._dropped_in_window = self._dropped_in_window, 0
        return dropped
