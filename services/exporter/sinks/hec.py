"""Splunk HTTP Event Collector sink.

A batch is one ``POST <url>/services/collector/event`` with
``Authorization: Splunk <token>`` and a body of concatenated JSON objects, one
per event: ``{"time": <epoch seconds>, "host": <node>, "source": ...,
"sourcetype": ..., ["index": ...,] "event": <the Tetragon event>}``.

What HEC's answers mean here:

- 200: delivered. (Without indexer acknowledgement, which this sink does not
  use, 200 means HEC accepted the data, not that it is searchable yet.)
- 503 (server busy, queues full), other 5xx, 429, a timeout or a connection
  error: ``TransientSinkError``; the core retries the batch.
- 400 for one event (``code`` 6 invalid data format, 12/13 event field missing
  or blank, 15 indexed fields): HEC refuses the whole request, so the sink
  bisects: halves HEC accepts are delivered, refused halves are split until
  single events remain, and those are returned as ``rejected`` (dead-lettered by
  the core). HEC may index the events before the bad one in a refused request,
  so bisection can deliver some events twice (the at-least-once window).
- 400 for the request as a whole (no data, incorrect index, channel missing...):
  every event would fail alike, so the batch is rejected without retry.
- 401/403 (token missing, invalid or disabled): the issue asks for no retry on
  403, so the batch is rejected (dead-lettered, where nothing is lost: it can be
  replayed once the token is fixed), and the sink logs an error every time.
- any other status (404 for a wrong URL, ...): a configuration problem that
  events cannot be blamed for: ``TransientSinkError``, the events wait.

The token is a ``Secret`` (``token: {env: NAME}`` or ``{file: PATH}``, see
secret.py): read when the config is validated (a missing one is a config
error), never logged or shown in the config's repr.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import aiohttp
from pydantic import Field, model_validator

from schemas.events import parse_timestamp
from services.common.logging import get_logger
from services.exporter.secret import Secret, refuse_replaced_keys
from services.exporter.sinks.base import (
    BatchResult,
    Event,
    Rejection,
    Sink,
    SinkConfig,
    TransientSinkError,
)
from services.exporter.sinks.siem_options import ReadableFile, client_tls_context

log = get_logger(__name__)

# HEC status codes that blame one event of the request (docs: "Troubleshoot HTTP
# Event Collector"); other 400 codes blame the request or the token's settings.
EVENT_ERROR_CODES = frozenset({6, 12, 13, 15})


class SplunkHecConfig(SinkConfig):
    type: Literal["splunk_hec"] = "splunk_hec"
    url: str = Field(pattern=r"^https?://")  # e.g. https://splunk.example:8088
    token: Secret
    source: str = "ocellus"
    sourcetype: str = "ocellus:tetragon"
    index: str | None = None  # default: the token's default index
    host: str | None = None  # HEC's host field; default: the event's node_name
    tls_ca_file: ReadableFile | None = None
    tls_verify: bool = True
    timeout: float = Field(10.0, gt=0)  # per request, seconds

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        return refuse_replaced_keys(data, {"token_env": "token", "token_file": "token"})

    @property
    def authorization(self) -> str:
        return f"Splunk {self.token.get_secret_value()}"


def hec_envelope(config: SplunkHecConfig, event: Mapping[str, Any]) -> bytes:
    """One HEC event object for a Tetragon event."""
    envelope: dict[str, Any] = {}
    time = event.get("time")
    if isinstance(time, str):
        with contextlib.suppress(ValueError):  # unparseable: HEC stamps the receipt time
            envelope["time"] = round(parse_timestamp(time) / 1e9, 6)
    host = config.host or event.get("node_name")
    if host:
        envelope["host"] = host
    envelope |= {"source": config.source, "sourcetype": config.sourcetype}
    if config.index:
        envelope["index"] = config.index
    envelope["event"] = event
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


class SplunkHecSink(Sink):
    config_type = SplunkHecConfig
    config: SplunkHecConfig

    def __init__(self, name: str, config: SplunkHecConfig) -> None:
        super().__init__(name, config)
        self._endpoint = config.url.rstrip("/") + "/services/collector/event"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._open_session()

    async def send(self, events: Sequence[Event]) -> BatchResult:
        batch = [(index, hec_envelope(self.config, event)) for index, event in enumerate(events)]
        return BatchResult(rejected=await self._deliver(batch) if batch else [])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": self.config.authorization},
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(
                    ssl=client_tls_context(self.config.tls_ca_file, self.config.tls_verify)
                ),
            )
        return self._session

    async def _deliver(self, batch: list[tuple[int, bytes]]) -> list[Rejection]:
        """Post ``batch``; on a 400 that blames an event, bisect (module docstring)."""
        status, reply = await self._post(b"\n".join(body for _, body in batch))
        if status == 200:
            return []
        reason = f"HEC {status}: {reply.get('text', '')} (code {reply.get('code')})"
        if status in (401, 403):
            log.error(
                "HEC refused the token; rejecting the batch",
                sink=self.name,
                status=status,
                text=reply.get("text"),
                events=len(batch),
            )
            return [Rejection(index, reason) for index, _ in batch]
        if status == 400:
            if reply.get("code") in EVENT_ERROR_CODES and len(batch) > 1:
                middle = len(batch) // 2
                return await self._deliver(batch[:middle]) + await self._deliver(batch[middle:])
            return [Rejection(index, reason) for index, _ in batch]
        if status != 429 and status < 500:
            log.error(
                "HEC answered unexpectedly; will retry",
                sink=self.name,
                status=status,
                url=self._endpoint,
            )
        raise TransientSinkError(self.name, reason)

    async def _post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        session = self._open_session()
        try:
            async with session.post(self._endpoint, data=body) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientSinkError(self.name, f"POST {self._endpoint}: {e!r}") from e
        try:
            reply = json.loads(text)
        except ValueError:
            reply = {"text": text[:200]}
        return status, reply if isinstance(reply, dict) else {"text": str(reply)[:200]}
