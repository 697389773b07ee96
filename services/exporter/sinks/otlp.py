"""OpenTelemetry sinks: ``otlp_logs`` (one log record per event) and ``otlp_traces``
(process trees as traces), over OTLP gRPC or HTTP/protobuf with the OpenTelemetry SDK's
exporters. The sink type table names this module; the sinks live in their own."""

from __future__ import annotations

from services.exporter.sinks.otlp_logs import OtlpLogsConfig, OtlpLogsSink
from services.exporter.sinks.otlp_traces import OtlpTracesConfig, OtlpTracesSink
from services.exporter.sinks.otlp_transport import OtlpSinkConfig

__all__ = [
    "OtlpLogsConfig",
    "OtlpLogsSink",
    "OtlpSinkConfig",
    "OtlpTracesConfig",
    "OtlpTracesSink",
]
