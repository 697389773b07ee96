"""Backoff between attempts: exponential, with full jitter (a uniformly random
delay up to the exponential ceiling), so that exporters retrying against
the same receiver do not come back in lockstep."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from services.exporter.config import RetryPolicy


def backoff_delay(
    attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** min(attempt - 1, 62))
    return rand() * ceiling


async def sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``event`` is set; True if it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):  # not wait_for: see consumer.Puller.fetch
            await event.wait()
    return event.is_set()
