"""Start/stop plumbing shared by the services."""

from __future__ import annotations

import asyncio
import signal


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, through the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class RateLimitedLog:
    """Lets one log line through per ``interval`` seconds, e.g. for drops."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = float("-inf")

    def ready(self) -> bool:
        now = asyncio.get_running_loop().time()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True
