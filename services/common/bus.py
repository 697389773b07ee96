"""NATS connection plumbing: connect with a bounded wait, drain with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from schemas import codec, subjects
from services.common.errors import (
    BusCredentialsError,
    BusLostError,
    BusRefusedError,
    BusUnavailableError,
    OcellusError,
)
from services.common.logging import get_logger
from services.common.settings import ServiceSettings

log = get_logger("ocellus.bus")
# Clients drain() is closing (their close is not a connection lost), and the
# reason each of connect_service's was refused for good, if it was.
_CLOSING: weakref.WeakSet[NATS] = weakref.WeakSet()
_LOST: weakref.WeakKeyDictionary[NATS, list[str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class NatsAuth:
    """Who connects and how the connection is protected (README "Security"):
    a user whose password is in a file, or a credentials file (JWT + nkey);
    TLS with a CA to trust and, for servers that verify clients, a client
    certificate. Files are read when connecting, so a rotated secret takes
    effect at the next start."""

    user: str | None = None
    password_file: Path | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def of(cls, settings: ServiceSettings) -> NatsAuth:
        return cls(
            user=settings.nats_user,
            password_file=settings.nats_password_file,
            creds=settings.nats_creds,
            tls_ca=settings.nats_tls_ca,
            tls_cert=settings.nats_tls_cert,
            tls_key=settings.nats_tls_key,
        )

    def options(self, url: str) -> dict[str, Any]:
        """nats.connect() keyword arguments; BusCredentialsError names a bad file."""
        options: dict[str, Any] = {}
        if self.user is not None and self.password_file is not None:
            password = _read_secret("password file", self.password_file)
            options.update(user=self.user, password=password)
        if self.creds is not None:
            _read_secret("credentials file", self.creds)  # nats-py reads it again itself
            options["user_credentials"] = str(self.creds)
        if self.tls_ca or self.tls_cert or "tls://" in url:
            options["tls"] = self._tls_context()
        return options

    def _tls_context(self) -> ssl.SSLContext:
        for what, path in (("TLS CA", self.tls_ca), ("TLS certificate", self.tls_cert),
                           ("TLS key", self.tls_key)):  # fmt: skip
            if path is not None and not path.is_file():
                raise BusCredentialsError(what, path, "no such file")
        try:
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
        except (OSError, ssl.SSLError) as e:
            raise BusCredentialsError("TLS CA", self.tls_ca, str(e)) from e
        if self.tls_cert is not None:
            try:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            except (OSError, ssl.SSLError) as e:
                raise BusCredentialsError("TLS certificate", self.tls_cert, str(e)) from e
        return context


def _read_secret(what: str, path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except FileNotFoundError as e:
        raise BusCredentialsError(what, path, "no such file") from e
    except OSError as e:
        raise BusCredentialsError(what, path, e.strerror or str(e)) from e
    if not secret:
        raise BusCredentialsError(what, path, "empty")
    return secret


def _refusal(error: BaseException) -> str | None:
    """Why NATS refused us for good (retrying cannot help), or None."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {error.verify_message}"
    text = str(error)
    if (
        isinstance(error, nats.errors.AuthorizationError)
        or "authorization violation" in text.lower()
    ):
        return "authorization violation (wrong user, password or credentials)"
    if "authentication expired" in text.lower() or "account authentication" in text.lower():
        return text
    return None


async def connect(
    url: str,
    *,
    name: str,
    timeout: float = 10.0,
    auth: NatsAuth | None = None,
    inbox_prefix: str | None = None,
    on_refused: Callable[[str], None] | None = None,
) -> NATS:
    """Connect, trying for up to ``timeout`` seconds; once connected, nats-py
    reconnects forever. Raises BusUnavailableError naming the URL, at once
    (BusRefusedError) when the server refuses the credentials or certificate,
    BusCredentialsError naming a missing credentials file. ``inbox_prefix``:
    where replies to this connection go (a service's own, see
    schemas.subjects.inbox). ``on_refused(why)``: called when a server refuses
    the connection once it had been made (a password changed, credentials
    revoked), where a caller stops rather than retry; without it, retries go
    on and the refusal is logged like any other error. It is also called when
    the server ends a live connection with an error (nats-py then closes the
    client for good, without retrying), unless ``drain`` closed it."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    options = (auth or NatsAuth()).options(url)
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    last_error: list[str] = ["no answer"]
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    client: list[NATS] = []
    # Each failed reconnect attempt (two a second) reports its error again:
    # during an outage each distinct one is logged once, the rest counted.
    outage: list[bool] = [False]
    outage_errors: dict[str, int] = {}

    async def on_error(e: Exception) -> None:
        reason = str(e) or type(e).__name__
        why = _refusal(e)
        if not client:
            last_error[0] = reason  # still connecting: reported once, on failure
            if why is not None and not refused.done():
                refused.set_result(why)
            return
        if why is not None and on_refused is not None:
            on_refused(why)
            return
        if not outage[0] or reason not in outage_errors:
            log.warning("NATS error", reason=reason)
        if outage[0]:
            outage_errors[reason] = outage_errors.get(reason, 0) + 1

    async def on_disconnected() -> None:
        if client and not (client[0].is_closed or client[0].is_draining):
            outage[0] = True
            log.warning("NATS disconnected; reconnecting", url=url)

    async def on_reconnected() -> None:
        log.info("NATS reconnected", errors_meanwhile=sum(outage_errors.values()))
        outage[0] = False
        outage_errors.clear()

    async def on_closed() -> None:
        if not client or client[0] in _CLOSING:
            return
        error = client[0].last_error
        why = (_refusal(error) or str(error)) if error else "closed without an error"
        if on_refused is not None:
            on_refused(why)
        else:
            log.error("NATS closed the connection for good", url=url, reason=why)

    started = time.monotonic()
    nc = NATS()
    # nats-py retries the first connection forever when reconnects are on,
    # so the overall wait is bounded here, and a refusal ends it at once.
    options.update(
        servers=servers,
        name=name,
        connect_timeout=min(2.0, max(timeout, 0.1)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        closed_cb=on_closed,
    )
    connecting: asyncio.Future[None] = asyncio.ensure_future(nc.connect(**options))
    waiting: set[asyncio.Future[Any]] = {connecting, refused}
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if connecting not in done:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
            with contextlib.suppress(Exception):
                await nc.close()
            if refused.done():
                raise BusRefusedError(url, time.monotonic() - started, refused.result())
            raise BusUnavailableError(url, time.monotonic() - started, last_error[0])
        connecting.result()
    except (OSError, nats.errors.Error) as e:
        why = _refusal(e)
        cause = why or str(e) or type(e).__name__
        error = BusRefusedError if why else BusUnavailableError
        raise error(url, time.monotonic() - started, cause) from e
    finally:
        if not refused.done():
            refused.cancel()
    client.append(nc)
    log.debug("NATS connected", url=url, name=name)
    return nc


async def connect_service(
    settings: ServiceSettings, service: str, stop: asyncio.Event | None = None
) -> NATS:
    """A service's connection, named after it and its node (as `nats server
    report connections` shows it), with its credentials and its own inboxes.
    With ``stop``: a connection the server refuses or ends for good (its
    credentials revoked) sets it, and ``raise_if_lost`` then says why, so the
    service exits 1 for its supervisor to restart rather than idle unconnected."""
    lost: list[str] = []

    def on_refused(why: str) -> None:
        if not lost:
            log.error("NATS refused the connection for good; stopping", reason=why)
            lost.append(why)
            if stop is not None:
                stop.set()

    nc = await connect(
        settings.nats_url,
        name=f"ocellus-{service}-{settings.node_name}",
        timeout=settings.nats_connect_timeout,
        auth=NatsAuth.of(settings),
        inbox_prefix=subjects.inbox(service),
        on_refused=on_refused if stop is not None else None,
    )
    _LOST[nc] = lost
    return nc


def raise_if_lost(nc: NATS) -> None:
    """BusLostError when the server refused ``nc`` for good (connect_service's ``stop``)."""
    lost = _LOST.get(nc)
    if lost:
        raise BusLostError(lost[0])


async def drain(nc: NATS, timeout: float) -> None:
    """Flush what was published and close; idempotent, bounded by ``timeout``."""
    if nc.is_closed:
        return
    _CLOSING.add(nc)  # closed by us: not a connection lost
    try:
        await asyncio.wait_for(nc.drain(), timeout)
    except (TimeoutError, OSError, nats.errors.Error) as e:
        log.warning("NATS drain did not finish; closing", reason=str(e) or type(e).__name__)
        if not nc.is_closed:
            try:
                await nc.close()
            except (OSError, nats.errors.Error) as close_error:
                log.warning("NATS close failed", reason=str(close_error))


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
