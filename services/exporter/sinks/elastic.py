"""Elasticsearch / OpenSearch sink: ECS documents through the ``_bulk`` API.

``start()`` installs an index template (``PUT _index_template/<template_name>``)
whose mappings are exactly the ECS fields the sink emits
(``formats.ecs.ecs_mappings``). Documents go to a daily index
``<index>-YYYY.MM.DD`` (the event's UTC date) or, with ``index_mode:
data_stream``, to the data stream ``<index>`` (the template then declares it).

Every document is sent as ``{"create": {"_index": ..., "_id": <event id>}}``
where the id is a hash of the event's node, kind, time, exec_id, pid and policy
(``formats.facts.event_uid``): a batch the core retries after a partial failure
creates only what is missing, and the copies that made it the first time come
back 409 (version conflict), which counts as delivered. Retries are idempotent.

Per-item outcomes: 2xx and 409 delivered; 429 and 5xx transient (the whole batch
raises ``TransientSinkError``; its delivered items will answer 409 next time);
any other 4xx (a mapping conflict, a missing ``@timestamp``...) is returned as
``rejected`` with Elasticsearch's error type and reason. A failure of the whole
request (connection, timeout, 429, 5xx, and also 401/403 and other 4xx, which
are logged as errors since they need an operator) raises ``TransientSinkError``:
the events wait in the durable consumer until the cluster takes them.

Credentials: basic auth (``username`` and ``password``) or an API key
(``api_key``), both ``Secret``s (``{env: NAME}`` or ``{file: PATH}``, see
secret.py): read when the config is validated, never logged or shown in the
config's repr.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from pydantic import Field, model_validator

from services.common.logging import get_logger
from services.exporter.formats import ecs_mappings, to_ecs
from services.exporter.formats.facts import product_version
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


class ElasticsearchConfig(SinkConfig):
    type: Literal["elasticsearch"] = "elasticsearch"
    url: str = Field(pattern=r"^https?://")  # e.g. https://es.example:9200
    index: str = Field("ocellus", pattern=r"^[a-z0-9][a-z0-9._-]*$")
    index_mode: Literal["daily", "data_stream"] = "daily"
    template_name: str = "ocellus"
    template_priority: int = 200  # above the built-in logs-*-* template (100)
    username: str | None = None
    password: Secret | None = None
    api_key: Secret | None = None  # the base64 "id:key" form Elasticsearch issues
    tls_ca_file: ReadableFile | None = None
    tls_verify: bool = True
    timeout: float = Field(30.0, gt=0)  # per request, seconds

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        replaced = {
            f"{key}_{how}": key for key in ("password", "api_key") for how in ("env", "file")
        }
        return refuse_replaced_keys(data, replaced)

    @model_validator(mode="after")
    def _one_credential(self) -> ElasticsearchConfig:
        if self.api_key is not None and (self.password is not None or self.username):
            raise ValueError("set either api_key or username and password")
        if (self.password is None) != (self.username is None):
            raise ValueError("basic auth needs both username and password")
        return self

    @property
    def auth_headers(self) -> dict[str, str]:
        if self.api_key is not None:
            return {"Authorization": f"ApiKey {self.api_key.get_secret_value()}"}
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password.get_secret_value()}"
            return {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}
        return {}


def index_template(config: ElasticsearchConfig) -> dict[str, Any]:
    """The composable index template body for ``PUT _index_template/<name>``."""
    data_stream = config.index_mode == "data_stream"
    template: dict[str, Any] = {
        "index_patterns": [config.index] if data_stream else [f"{config.index}-*"],
        "priority": config.template_priority,
        "template": {"mappings": ecs_mappings()},
        "_meta": {"managed_by": "ocellus", "version": product_version()},
    }
    if data_stream:
        template["data_stream"] = {}
    return template


def target_index(config: ElasticsearchConfig, document: Mapping[str, Any]) -> str:
    if config.index_mode == "data_stream":
        return config.index
    # protojson times are UTC "YYYY-MM-DDT...Z"; an event without one goes to today.
    stamp = str(document.get("@timestamp", ""))[:10] or datetime.now(UTC).strftime("%Y-%m-%d")
    return f"{config.index}-{stamp.replace('-', '.')}"


class ElasticsearchSink(Sink):
    config_type = ElasticsearchConfig
    config: ElasticsearchConfig

    def __init__(self, name: str, config: ElasticsearchConfig) -> None:
        super().__init__(name, config)
        self._base = config.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        path = f"/_index_template/{self.config.template_name}"
        status, reply = await self._request("PUT", path, json.dumps(index_template(self.config)))
        if status != 200:
            self._log_operator_error(status, reply, "index template not installed")
            raise TransientSinkError(self.name, f"PUT {path}: {status} {_error_text(reply)}")

    async def send(self, events: Sequence[Event]) -> BatchResult:
        result = BatchResult()
        lines: list[str] = []
        positions: list[int] = []  # bulk item -> index in the batch
        for index, event in enumerate(events):
            try:
                document = to_ecs(event)
            except ValueError as e:
                result.rejected.append(Rejection(index, f"cannot map to ECS: {e}"))
                continue
            action = {"_index": target_index(self.config, document), "_id": document["event"]["id"]}
            lines += [json.dumps({"create": action}), json.dumps(document, ensure_ascii=False)]
            positions.append(index)
        if not positions:
            return result
        # _bulk requires the body to end with a newline.
        status, reply = await self._request("POST", "/_bulk", "\n".join(lines) + "\n")
        if status != 200:
            self._log_operator_error(status, reply, "bulk request refused")
            raise TransientSinkError(self.name, f"_bulk: {status} {_error_text(reply)}")
        result.rejected += self._item_outcomes(reply, positions)
        return result

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _item_outcomes(self, reply: Mapping[str, Any], positions: list[int]) -> list[Rejection]:
        items = reply.get("items")
        if not isinstance(items, list) or len(items) != len(positions):
            raise TransientSinkError(self.name, "_bulk: reply does not match the request")
        rejected, transient = [], []
        for position, item in zip(positions, items, strict=True):
            outcome = next(iter(item.values())) if isinstance(item, dict) and item else {}
            status = outcome.get("status", 0)
            if 200 <= status < 300 or status == 409:  # 409: created by an earlier try
                continue
            reason = f"{status} {_error_text(outcome)}"
            if status == 429 or status >= 500 or status == 0:
                transient.append(reason)
            else:
                rejected.append(Rejection(position, reason))
        if transient:
            raise TransientSinkError(
                self.name, f"_bulk: {len(transient)} of {len(items)} items: {transient[0]}"
            )
        return rejected

    async def _request(self, method: str, path: str, body: str) -> tuple[int, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.config.auth_headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(
                    ssl=client_tls_context(self.config.tls_ca_file, self.config.tls_verify)
                ),
            )
        content_type = "application/x-ndjson" if path == "/_bulk" else "application/json"
        try:
            async with self._session.request(
                method,
                self._base + path,
                data=body.encode(),
                headers={"Content-Type": content_type},
            ) as response:
                text, status = await response.text(), response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientSinkError(self.name, f"{method} {path}: {e!r}") from e
        try:
            reply = json.loads(text)
        except ValueError:
            reply = {"error": text[:200]}
        return status, reply if isinstance(reply, dict) else {}

    def _log_operator_error(self, status: int, reply: Mapping[str, Any], what: str) -> None:
        # 429 and 5xx pass on their own; other answers need someone to act.
        if status != 429 and status < 500:
            log.error(what, sink=self.name, status=status, error=_error_text(reply))


def _error_text(reply: Mapping[str, Any]) -> str:
    """``type: reason`` from an Elasticsearch error body or bulk item."""
    error = reply.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {error.get('reason', '')}"
    return str(error or "")
