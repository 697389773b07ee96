"""Small aiohttp servers implementing the documented Splunk HEC and
Elasticsearch ``_bulk`` APIs, as pytest fixtures on a free loopback port.

They check what the real services check (the auth header, the body framing:
HEC's concatenated JSON objects, ``_bulk``'s NDJSON action/document pairs ending
in a newline), answer with the documented response shapes, keep what they
accepted for assertions, and fail on demand: busy (503) for the first N
requests, 400 for events holding a marker, per-item errors in ``_bulk``.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

# Test credentials for the local receivers, nothing real.
HEC_TOKEN = "00000000-1111-2222-3333-444444444444"  # noqa: S105
ES_USER, ES_PASSWORD = "ocellus", "s3cret=pass"
BAD_MARKER = "REJECT-ME"  # an event whose JSON holds this is refused as invalid
THROTTLE_MARKER = "THROTTLE-ME"  # _bulk: such a document gets a 429 item, once


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


@dataclass
class HecReceiver:
    """Splunk HEC's /services/collector/event (docs: "Format events for HTTP
    Event Collector", "Troubleshoot HTTP Event Collector" status codes)."""

    token: str = HEC_TOKEN
    busy_requests: int = 0  # answer 503 "Server is busy" to this many requests first
    indexes: frozenset[str] = frozenset({"main", "security"})  # the token's allowed indexes
    url: str = ""
    requests: int = 0
    batches: list[list[dict[str, Any]]] = field(default_factory=list)  # accepted requests
    auth_headers: list[str] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [obj for batch in self.batches for obj in batch]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        header = request.headers.get("Authorization", "")
        self.auth_headers.append(header)
        if not header:
            return _json(401, {"text": "Token is required", "code": 2})
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token:
            return _json(401, {"text": "Invalid authorization", "code": 3})
        if token != self.token:
            return _json(403, {"text": "Invalid token", "code": 4})
        if self.busy_requests > 0:
            self.busy_requests -= 1
            return _json(503, {"text": "Server is busy", "code": 9})
        body = await request.text()
        if not body.strip():
            return _json(400, {"text": "No data", "code": 5})
        objects: list[dict[str, Any]] = []
        decoder, pos = json.JSONDecoder(), 0
        while True:  # concatenated JSON objects, whitespace allowed between
            while pos < len(body) and body[pos].isspace():
                pos += 1
            if pos == len(body):
                break
            number = len(objects)
            try:
                obj, pos = decoder.raw_decode(body, pos)
            except ValueError:
                return _invalid(6, "Invalid data format", number)
            if not isinstance(obj, dict) or "event" not in obj:
                return _invalid(12, "Event field is required", number)
            if obj["event"] in ("", None, {}):
                return _invalid(13, "Event field cannot be blank", number)
            if obj.get("index", "main") not in self.indexes:
                return _invalid(7, "Incorrect index", number)
            if BAD_MARKER in json.dumps(obj):
                return _invalid(6, "Invalid data format", number)
            objects.append(obj)
        self.batches.append(objects)
        return _json(200, {"text": "Success", "code": 0})


def _invalid(code: int, text: str, number: int) -> web.Response:
    return _json(400, {"text": text, "code": code, "invalid-event-number": number})


@dataclass
class BulkReceiver:
    """Elasticsearch's ``PUT _index_template/<name>`` and ``POST _bulk``
    (docs: "Bulk API", "Create or update index template API")."""

    authorization: str = "Basic " + base64.b64encode(f"{ES_USER}:{ES_PASSWORD}".encode()).decode()
    unavailable_requests: int = 0  # answer 503 to this many _bulk requests first
    url: str = ""
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    indices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # name -> id -> doc
    bulk_requests: int = 0
    throttled: set[str] = field(default_factory=set)  # ids already answered 429 once

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [doc for index in self.indices.values() for doc in index.values()]

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == self.authorization:
            return None
        reason = "missing authentication credentials for REST request [/_bulk]"
        error = {"type": "security_exception", "reason": reason}
        return _json(401, {"error": {"root_cause": [error], **error}, "status": 401})

    async def put_template(self, request: web.Request) -> web.Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        body = await request.json()
        if not isinstance(body.get("index_patterns"), list) or "template" not in body:
            error = {"type": "x_content_parse_exception", "reason": "[index_patterns] missing"}
            return _json(400, {"error": error, "status": 400})
        self.templates[request.match_info["name"]] = body
        return _json(200, {"acknowledged": True})

    async def bulk(self, request: web.Request) -> web.Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        self.bulk_requests += 1
        if self.unavailable_requests > 0:
            self.unavailable_requests -= 1
            error = {
                "type": "unavailable_shards_exception",
                "reason": "primary shard is not active",
            }
            return _json(503, {"error": error, "status": 503})
        if not request.content_type.startswith("application/x-ndjson"):
            error = {"type": "illegal_argument_exception", "reason": "bad Content-Type"}
            return _json(406, {"error": error, "status": 406})
        body = await request.text()
        if not body.endswith("\n"):
            reason = "The bulk request must be terminated by a newline [\\n]"
            return _json(400, {"error": {"type": "illegal_argument_exception", "reason": reason}})
        lines = body[:-1].split("\n")
        if len(lines) % 2:
            reason = "Malformed action/metadata line, expected a document line"
            return _json(400, {"error": {"type": "illegal_argument_exception", "reason": reason}})
        items = [
            self._apply(json.loads(lines[i]), json.loads(lines[i + 1]))
            for i in range(0, len(lines), 2)
        ]
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return _json(200, {"took": 1, "errors": errors, "items": items})

    def _apply(self, action: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
        (op, meta), = action.items()  # fmt: skip
        index, doc_id = meta["_index"], meta["_id"]
        head = {"_index": index, "_id": doc_id}

        def error(status: int, kind: str, reason: str) -> dict[str, Any]:
            return {op: {**head, "status": status, "error": {"type": kind, "reason": reason}}}

        if op != "create":
            return error(400, "illegal_argument_exception", f"only create is served, got {op}")
        if THROTTLE_MARKER in json.dumps(document) and doc_id not in self.throttled:
            self.throttled.add(doc_id)
            return error(429, "es_rejected_execution_exception", "rejected execution: queue full")
        if BAD_MARKER in json.dumps(document):
            return error(400, "document_parsing_exception", "[1:2] failed to parse field")
        if "@timestamp" not in document and self._is_data_stream(index):
            return error(400, "illegal_argument_exception", "data stream timestamp missing")
        docs = self.indices.setdefault(index, {})
        if doc_id in docs:
            reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
            return error(409, "version_conflict_engine_exception", reason)
        docs[doc_id] = document
        return {op: {**head, "_version": 1, "result": "created", "status": 201}}

    def _is_data_stream(self, index: str) -> bool:
        return any(
            "data_stream" in t and index in t["index_patterns"] for t in self.templates.values()
        )


async def _serve(app: web.Application) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def hec_receiver() -> AsyncIterator[HecReceiver]:
    """A Splunk HEC endpoint on a free loopback port."""
    receiver = HecReceiver()
    app = web.Application()
    app.router.add_post("/services/collector/event", receiver.handle)
    app.router.add_post("/services/collector", receiver.handle)
    async for url in _serve(app):
        receiver.url = url
        yield receiver


@pytest.fixture
async def bulk_receiver() -> AsyncIterator[BulkReceiver]:
    """An Elasticsearch _bulk + _index_template endpoint on a free loopback port."""
    receiver = BulkReceiver()
    app = web.Application()
    app.router.add_put("/_index_template/{name}", receiver.put_template)
    app.router.add_post("/_bulk", receiver.bulk)
    async for url in _serve(app):
        receiver.url = url
        yield receiver
