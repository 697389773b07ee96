"""NATS connection plumbing: connect with a bounded wait, drain with a timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from schemas import codec
from services.common.errors import BusUnavailableError, OcellusError
from services.common.logging import get_logger
from services.common.settings import ServiceSettings

log = get_logger("ocellus.bus")


async def connect(url: str, *, name: str, timeout: float = 10.0) -> NATS:
    """Connect, trying for up to ``timeout`` seconds; once connected, nats-py
    reconnects forever. Raises BusUnavailableError naming the URL."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    last_error: list[str] = ["no answer"]
    client: list[NATS] = []

    async def on_error(e: Exception) -> None:
        reason = str(e) or type(e).__name__
        if not client:
            last_error[0] = reason  # still connecting: reported once, on failure
            return
        log.warning("NATS error", reason=reason)

    async def on_disconnected() -> None:
        if client and not (client[0].is_closed or client[0].is_draining):
            log.warning("NATS disconnected; reconnecting", url=url)

    started = time.monotonic()
    try:
        # nats-py retries the first connection forever when reconnects are on,
        # so the overall wait is bounded here.
        nc = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name=name,
                connect_timeout=min(2.0, max(timeout, 0.1)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=_on_reconnected,
            ),
            timeout,
        )
    except (OSError, TimeoutError, nats.errors.Error) as e:
        cause = last_error[0] if isinstance(e, TimeoutError) else (str(e) or type(e).__name__)
        raise BusUnavailableError(url, time.monotonic() - started, cause) from e
    client.append(nc)
    return nc


async def connect_service(settings: ServiceSettings, service: str) -> NATS:
    """A service's connection, named after it and its node (as `nats server
    report connections` shows it)."""
    return await connect(
        settings.nats_url,
        name=f"ocellus-{service}-{settings.node_name}",
        timeout=settings.nats_connect_timeout,
    )


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


async def _on_reconnected() -> None:
    log.info("NATS reconnected")


async def key_value(nc: NATS, bucket: str, *, history: int = 1) -> KeyValue:
    """The KV bucket, created when missing (by whichever service gets there first)."""
    js = nc.jetstream()
    for _ in range(3):
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            pass
        try:
            return await js.create_key_value(KeyValueConfig(bucket=bucket, history=history))
        except nats.js.errors.BadRequestError:
            continue  # created meanwhile by another service: open it
    raise OcellusError(f"cannot open or create the NATS KV bucket {bucket!r}")


async def request(nc: NATS, subject: str, body: dict[str, Any], timeout: float) -> Any:
    """A control request; None when nobody answers (no responders or timeout)."""
    try:
        msg = await nc.request(subject, codec.pack(body), timeout=timeout)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return None
    return codec.unpack(msg.data)
