"""Reaching an OTLP receiver: the options both OTLP sinks share, the OpenTelemetry SDK's
exporter built from them (gRPC or HTTP/protobuf), and one export call mapped onto the sink
outcomes.

The SDK exporters are blocking and retry retryable statuses themselves (UNAVAILABLE, 429,
503, ... honouring the receiver's RetryInfo / Retry-After) for as long as ``timeout``
allows; a batch still undelivered then is a ``TransientSinkError`` and the exporter core's
backoff takes over. The SDK reports only success or failure (it logs the status code), so
a receiver that rejects a request as invalid is retried like an outage: nothing is lost,
and the core's retry counters show it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from services.exporter.secret import Secret, refuse_replaced_keys
from services.exporter.sinks.base import SinkConfig, TransientSinkError

# Items per export request: keeps a request far below gRPC's default 4 MiB message limit
# at receivers (a log record carries the whole event as JSON, ~1-3 KiB).
EXPORT_CHUNK = 512
_DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http": "http://localhost:4318"}
_HTTP_PATHS = {"logs": "/v1/logs", "traces": "/v1/traces"}

Signal = Literal["logs", "traces"]


class OtlpSinkConfig(SinkConfig):
    """Options of both OTLP sinks: where the receiver is and how to reach it."""

    protocol: Literal["grpc", "http"] = "grpc"
    # gRPC: "http://host:4317" (plaintext), "https://host:4317" or "host:4317" (TLS).
    # HTTP: a base URL ("http://host:4318", the signal path /v1/logs or /v1/traces is
    # appended) or the full URL of the signal endpoint.
    endpoint: str | None = None
    # Values are secrets (never logged): {"authorization": {"env": "OTLP_AUTH"}},
    # {"x-tenant": {"file": PATH}} or a literal.
    headers: dict[str, Secret] = Field(default_factory=dict)
    insecure: bool | None = None  # gRPC: plaintext; None: decided by the endpoint's scheme
    ca_file: Path | None = None  # PEM CA bundle to verify the receiver
    client_cert_file: Path | None = None  # mutual TLS
    client_key_file: Path | None = None
    compression: Literal["none", "gzip"] = "none"
    timeout: float = Field(10.0, gt=0, description="seconds per send, SDK retries included")
    service_name: str = "ocellus"
    # Added to every node's resource, e.g. {"deployment.environment.name": "prod"}.
    resource_attributes: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together (mutual TLS)")
        if len({h.lower() for h in self.headers}) != len(self.headers):
            raise ValueError("headers: a header is given twice (names are case-insensitive)")
        if self.protocol == "http" and self.insecure is not None:
            raise ValueError("insecure applies to protocol grpc; for http the URL scheme decides")
        if self.insecure and (self.ca_file or self.client_cert_file):
            raise ValueError("insecure: true contradicts ca_file / client_cert_file (TLS)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        return refuse_replaced_keys(data, {"headers_env": "headers.<name>"})


def resolve_headers(config: OtlpSinkConfig) -> dict[str, str]:
    """Header values, secrets included; names lower-cased (gRPC metadata requires it)."""
    return {name.lower(): value.get_secret_value() for name, value in config.headers.items()}


class _Exporter(Protocol):
    def export(self, batch: Sequence[Any], /) -> Any: ...

    def shutdown(self) -> None: ...


def build_exporter(config: OtlpSinkConfig, signal: Signal) -> Any:
    """The SDK's OTLPLogExporter or OTLPSpanExporter for the protocol; imported here so
    that gRPC loads only where it is used."""
    headers = resolve_headers(config)
    endpoint = config.endpoint or _DEFAULT_ENDPOINTS[config.protocol]
    if config.protocol == "http":
        return _http_exporter(config, signal, headers, endpoint)
    return _grpc_exporter(config, signal, headers, endpoint)


def _http_exporter(
    config: OtlpSinkConfig, signal: Signal, headers: dict[str, str], endpoint: str
) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression

    if urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + _HTTP_PATHS[signal]
    kwargs: dict[str, Any] = {
        "endpoint": endpoint,
        "headers": headers,
        "timeout": config.timeout,
        "compression": Compression.Gzip
        if config.compression == "gzip"
        else Compression.NoCompression,
        "certificate_file": str(config.ca_file) if config.ca_file else None,
        "client_certificate_file": str(config.client_cert_file)
        if config.client_cert_file
        else None,
        "client_key_file": str(config.client_key_file) if config.client_key_file else None,
    }
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(**kwargs)


def _grpc_exporter(
    config: OtlpSinkConfig, signal: Signal, headers: dict[str, str], endpoint: str
) -> Any:
    import grpc

    credentials = None
    if config.ca_file or config.client_cert_file:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=config.ca_file.read_bytes() if config.ca_file else None,
            private_key=config.client_key_file.read_bytes() if config.client_key_file else None,
            certificate_chain=config.client_cert_file.read_bytes()
            if config.client_cert_file
            else None,
        )
    kwargs: dict[str, Any] = {
        "endpoint": endpoint,
        "insecure": False if credentials else config.insecure,  # TLS files mean TLS
        "credentials": credentials,
        "headers": headers,
        "timeout": config.timeout,
        "compression": grpc.Compression.Gzip
        if config.compression == "gzip"
        else grpc.Compression.NoCompression,
    }
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(**kwargs)


async def export(sink: str, exporter: _Exporter, items: Sequence[Any]) -> None:
    """Deliver ``items`` in chunks, each in a worker thread (the SDK blocks); raise
    TransientSinkError at the first chunk not delivered."""
    for start in range(0, len(items), EXPORT_CHUNK):
        chunk = items[start : start + EXPORT_CHUNK]
        try:
            result = await asyncio.to_thread(exporter.export, chunk)
        except Exception as e:  # the SDK means not to raise; if it does, retry, never lose
            raise TransientSinkError(sink, f"OTLP export raised {type(e).__name__}: {e}") from e
        # LogRecordExportResult and SpanExportResult are distinct enums with the same names.
        if getattr(result, "name", None) != "SUCCESS":
            raise TransientSinkError(
                sink,
                f"OTLP receiver did not accept {len(chunk)} items "
                f"({start} of this batch were delivered; the SDK logged the status)",
            )


async def shutdown(exporter: _Exporter | None) -> None:
    """Close the exporter's channel or session, off the event loop."""
    if exporter is not None:
        await asyncio.to_thread(exporter.shutdown)
