"""A real OTLP endpoint for tests: the gRPC LogsService, TraceService and MetricsService
(grpcio and the opentelemetry-proto stubs), and OTLP/HTTP protobuf for logs and traces
(a small aiohttp server), both on
127.0.0.1 port 0. They decode and keep every request, and can be told to fail the next
N calls (gRPC UNAVAILABLE, HTTP 503) to test retries.

Load with ``pytest_plugins = ["tests.otlp_receiver"]`` in tests/conftest.py, or import the
fixtures into a test module.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which) if which else None


def attributes(pairs: Any) -> dict[str, Any]:
    """Repeated KeyValue as a dict."""
    return {kv.key: any_value(kv.value) for kv in pairs}


@dataclass(frozen=True)
class ReceivedLog:
    resource: dict[str, Any]
    scope: str
    record: LogRecord
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedMetric:
    resource: dict[str, Any]
    scope: str
    name: str
    kind: str  # "sum" or "gauge" (what the data points came in)
    monotonic: bool
    points: list[tuple[dict[str, Any], float]]  # (attributes, value)


@dataclass(frozen=True)
class ReceivedSpan:
    resource: dict[str, Any]
    scope: str
    span: Span
    attributes: dict[str, Any]


class OtlpReceiver:
    """What an OTLP endpoint received; shared by the gRPC and HTTP servers."""

    def __init__(self, *, keep: bool = True) -> None:
        self.endpoint = ""  # "http://127.0.0.1:<port>", set once the server listens
        self.keep = keep  # False: count records only (benchmarks)
        self.records = 0  # log records plus spans received
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []  # request metadata / headers, per call
        self.calls = 0
        self.failed_calls = 0
        self._failures_left = 0
        self._lock = threading.Lock()  # gRPC handlers run in a thread pool

    def fail_next(self, calls: int) -> None:
        """Answer the next ``calls`` calls UNAVAILABLE (gRPC) or 503 (HTTP)."""
        with self._lock:
            self._failures_left = calls

    def _admit(self, headers: dict[str, str]) -> bool:
        with self._lock:
            self.calls += 1
            self.headers.append(headers)
            if self._failures_left > 0:
                self._failures_left -= 1
                self.failed_calls += 1
                return False
            return True

    def _keep(self, request: Any) -> None:
        if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
            with self._lock:
                if self.keep:
                    self.metric_requests.append(request)
            return
        is_logs = isinstance(request, logs_service_pb2.ExportLogsServiceRequest)
        groups = request.resource_logs if is_logs else request.resource_spans
        count = sum(
            len(scoped.log_records if is_logs else scoped.spans)
            for group in groups
            for scoped in (group.scope_logs if is_logs else group.scope_spans)
        )
        with self._lock:
            self.records += count
            if not self.keep:
                return
            if is_logs:
                self.log_requests.append(request)
            else:
                self.trace_requests.append(request)

    def logs(self) -> list[ReceivedLog]:
        """Every log record received, with its resource's and its own attributes."""
        with self._lock:
            requests = list(self.log_requests)
        return [
            ReceivedLog(
                attributes(rl.resource.attributes), sl.scope.name, rec, attributes(rec.attributes)
            )
            for req in requests
            for rl in req.resource_logs
            for sl in rl.scope_logs
            for rec in sl.log_records
        ]

    def metrics(self) -> list[ReceivedMetric]:
        """Every metric received (sums and gauges), oldest first."""
        with self._lock:
            requests = list(self.metric_requests)
        out = []
        for req in requests:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind not in ("sum", "gauge"):
                            continue
                        data = getattr(m, kind)
                        points = [
                            (attributes(p.attributes), getattr(p, p.WhichOneof("value")))
                            for p in data.data_points
                        ]
                        monotonic = kind == "sum" and data.is_monotonic
                        out.append(
                            ReceivedMetric(
                                attributes(rm.resource.attributes),
                                sm.scope.name,
                                m.name,
                                kind,
                                monotonic,
                                points,
                            )
                        )
        return out

    def spans(self) -> list[ReceivedSpan]:
        """Every span received, with its resource's and its own attributes."""
        with self._lock:
            requests = list(self.trace_requests)
        return [
            ReceivedSpan(
                attributes(rs.resource.attributes), ss.scope.name, span, attributes(span.attributes)
            )
            for req in requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not self.receiver._admit(dict(context.invocation_metadata())):
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
        self.receiver._keep(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not self.receiver._admit(dict(context.invocation_metadata())):
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
        self.receiver._keep(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not self.receiver._admit(dict(context.invocation_metadata())):
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
        self.receiver._keep(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def start_grpc_receiver(
    receiver: OtlpReceiver, tls: tuple[bytes, bytes] | None = None
) -> grpc.Server:
    """Serve ``receiver`` over gRPC on 127.0.0.1, port 0, in plaintext or with ``tls``
    (PEM key, PEM certificate); sets ``receiver.endpoint``."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(receiver), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(receiver), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(receiver), server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
        receiver.endpoint = f"http://127.0.0.1:{port}"
    else:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
        receiver.endpoint = f"https://127.0.0.1:{port}"
    server.start()
    return server


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(key, certificate) for 127.0.0.1, made with Debian's openssl; the certificate is
    its own CA."""
    key, cert = directory / "receiver.key", directory / "receiver.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    command += " -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )
    return key, cert


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP gRPC endpoint (logs and traces) on 127.0.0.1, port 0."""
    receiver = OtlpReceiver()
    server = start_grpc_receiver(receiver)
    yield receiver
    server.stop(grace=None)


@pytest.fixture
def otlp_tls_receiver(tmp_path: Path) -> Iterator[tuple[OtlpReceiver, Path]]:
    """The OTLP gRPC endpoint over TLS, and the CA file that verifies it."""
    key, cert = self_signed_certificate(tmp_path)
    receiver = OtlpReceiver()
    server = start_grpc_receiver(receiver, tls=(key.read_bytes(), cert.read_bytes()))
    yield receiver, cert
    server.stop(grace=None)


_RECEIVER = web.AppKey("receiver", OtlpReceiver)
_HTTP_REQUESTS: dict[str, Any] = {
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
}


async def _http_export(request: web.Request) -> web.Response:
    receiver = request.app[_RECEIVER]
    request_type, response_type = _HTTP_REQUESTS[request.path]
    if request.content_type != "application/x-protobuf":
        return web.Response(status=415, text="OTLP/HTTP protobuf only")
    if not receiver._admit({k.lower(): v for k, v in request.headers.items()}):
        return web.Response(status=503, text="injected failure")
    data = await request.read()
    if request.headers.get("Content-Encoding") == "gzip":
        data = gzip.decompress(data)
    receiver._keep(request_type.FromString(data))
    body = response_type().SerializeToString()
    return web.Response(body=body, content_type="application/x-protobuf")


async def start_http_receiver(receiver: OtlpReceiver) -> web.AppRunner:
    """Serve ``receiver`` over OTLP/HTTP on 127.0.0.1, port 0; sets ``receiver.endpoint``."""
    app = web.Application()
    app[_RECEIVER] = receiver
    app.router.add_post("/v1/logs", _http_export)
    app.router.add_post("/v1/traces", _http_export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.endpoint = f"http://{host}:{port}"
    return runner


@pytest.fixture
async def otlp_http_receiver() -> AsyncIterator[OtlpReceiver]:
    """A real OTLP/HTTP protobuf endpoint (/v1/logs, /v1/traces) on 127.0.0.1, port 0."""
    receiver = OtlpReceiver()
    runner = await start_http_receiver(receiver)
    yield receiver
    await runner.cleanup()


async def _serve_counting(protocol: str) -> None:
    receiver = OtlpReceiver(keep=False)
    if protocol == "http":
        runner = await start_http_receiver(receiver)
    else:
        server = start_grpc_receiver(receiver)
    print(json.dumps({"endpoint": receiver.endpoint}), flush=True)
    while await asyncio.to_thread(sys.stdin.readline):
        print(json.dumps({"records": receiver.records}), flush=True)
    if protocol == "http":
        await runner.cleanup()
    else:
        server.stop(grace=None)


def main() -> None:
    """A counting receiver in a process of its own (for benchmarks):
    `python -m tests.otlp_receiver [grpc|http]` prints {"endpoint": ...}, then
    {"records": N} for every line read on stdin, until EOF."""
    asyncio.run(_serve_counting(sys.argv[1] if len(sys.argv) > 1 else "grpc"))


if __name__ == "__main__":
    main()
