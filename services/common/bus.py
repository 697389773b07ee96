"""NATS connection plumbing: connect with a bounded wait, drain with a timeout."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.aio.client import Client as NATS

from services.common.errors import BusUnavailableError
from services.common.logging import get_logger

log = get_logger("ocellus.bus")


async def connect(url: str, *, name: str, timeout: float = 10.0) -> NATS:
    """Connect, retrying until ``timeout``; afterwards nats-py reconnects forever."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    started = time.monotonic()
    delay = 0.1
    client: list[NATS] = []

    async def on_disconnected() -> None:
        if client and not (client[0].is_closed or client[0].is_draining):
            log.warning("NATS disconnected; reconnecting", url=url)

    while True:
        try:
            nc = await nats.connect(
                servers=servers,
                name=name,
                connect_timeout=min(2.0, max(timeout, 0.1)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=_on_reconnected,
            )
            client.append(nc)
            return nc
        except (OSError, TimeoutError, nats.errors.Error) as e:
            waited = time.monotonic() - started
            if waited + delay > timeout:
                raise BusUnavailableError(url, waited, str(e) or type(e).__name__) from e
            log.info("waiting for NATS", url=url, reason=str(e) or type(e).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def drain(nc: NATS, timeout: float) -> None:
    """Flush what was published and close; idempotent, bounded by ``timeout``."""
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), timeout)
    except (TimeoutError, OSError, nats.errors.Error) as e:
        log.warning("NATS drain did not finish; closing", reason=str(e) or type(e).__name__)
        if not nc.is_closed:
            try:
                await nc.close()
            except (OSError, nats.errors.Error) as close_error:
                log.warning("NATS close failed", reason=str(close_error))


async def _on_error(e: Exception) -> None:
    log.warning("NATS error", reason=str(e) or type(e).__name__)


async def _on_reconnected() -> None:
    log.info("NATS reconnected")
