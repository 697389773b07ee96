"""Start/stop plumbing shared by the services."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from services.common.errors import OcellusError
from services.common.logging import configure_logging, get_logger
from services.common.settings import ConfigFileError, ServiceSettings


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


def service_main(
    name: str,
    settings_factory: Callable[[], ServiceSettings],
    run: Callable[..., Coroutine[Any, Any, None]],
    **run_options: Any,
) -> int:
    """The body of every service's ``__main__``: settings (exit 2 when invalid),
    logging, run until stopped (exit 0), or an OcellusError logged (exit 1)."""
    try:
        settings = settings_factory()
    except (ValidationError, ConfigFileError) as e:
        print(f"{name}: invalid settings:\n{e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(run(settings, **run_options))
    except OcellusError as e:
        get_logger(f"ocellus.{name}").error(f"{name} cannot run", reason=str(e))
        return 1
    return 0
