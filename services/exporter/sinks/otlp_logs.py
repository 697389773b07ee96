"""OTLP logs: one log record per event, the event's JSON as the body.

The record's timestamp is the event's ``time``; severity INFO, WARN for a policy hit whose
action enforced (Sigkill, Signal, Override); attributes per the semantic conventions
(``otlp_mapping``); the resource is the node (``host.name``, ``service.name``). With
``link_traces`` the record carries the trace and span ids the ``otlp_traces`` sink gives
the event's process, so a backend can jump from a log line to its process tree.

The SDK's OTLPLogExporter is called directly, not through a LoggerProvider and batch
processor: the sink must know whether a batch was delivered before the core acks it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, set_span_in_context

from services.exporter.sinks import otlp_ids as ids
from services.exporter.sinks import otlp_mapping as mapping
from services.exporter.sinks import otlp_transport as transport
from services.exporter.sinks.base import BatchResult, Event, Rejection, Sink


class OtlpLogsConfig(transport.OtlpSinkConfig):
    """``type: otlp_logs``."""

    type: Literal["otlp_logs"] = "otlp_logs"
    link_traces: bool = True  # set trace_id/span_id to the process's span (otlp_traces ids)


class OtlpLogsSink(Sink):
    config_type = OtlpLogsConfig
    config: OtlpLogsConfig

    def __init__(self, name: str, config: OtlpLogsConfig) -> None:
        super().__init__(name, config)
        self._resources = mapping.ResourceCache(config.service_name, config.resource_attributes)
        self._scope = InstrumentationScope(mapping.INSTRUMENTATION_SCOPE)
        self._exporter: Any = None

    async def start(self) -> None:
        if self._exporter is None:
            self._exporter = transport.build_exporter(self.config, "logs")

    async def send(self, events: Sequence[Event]) -> BatchResult:
        if self._exporter is None:
            await self.start()
        observed = time.time_ns()
        records, result = [], BatchResult()
        for index, event in enumerate(events):
            try:
                records.append(self._record(event, observed))
            except (AttributeError, TypeError, ValueError) as e:  # not the Tetragon shape
                result.rejected.append(Rejection(index, f"malformed event: {e!r}"))
        await transport.export(self.name, self._exporter, records)
        return result

    async def close(self) -> None:
        exporter, self._exporter = self._exporter, None
        await transport.shutdown(exporter)

    def _record(self, event: Mapping[str, Any], observed_ns: int) -> ReadableLogRecord:
        kind = mapping.event_kind(event) or "unknown"
        body: Mapping[str, Any] = event.get(kind) or {}
        warn = mapping.is_enforcement(kind, body)
        context = None
        exec_id = (body.get("process") or {}).get("exec_id")
        if self.config.link_traces and exec_id:
            span = SpanContext(
                trace_id=ids.trace_id(ids.trace_key(ids.lineage(body))),
                span_id=ids.span_id(exec_id),
                is_remote=False,
                trace_flags=ids.SAMPLED,
            )
            context = set_span_in_context(NonRecordingSpan(span), Context())
        record = LogRecord(
            timestamp=mapping.timestamp_ns(event.get("time")) or observed_ns,
            observed_timestamp=observed_ns,
            context=context,
            severity_text="WARN" if warn else "INFO",
            severity_number=SeverityNumber.WARN if warn else SeverityNumber.INFO,
            body=json.dumps(event, separators=(",", ":"), ensure_ascii=False),
            attributes=mapping.event_attributes(kind, body),
        )
        return ReadableLogRecord(
            log_record=record,
            resource=self._resources.for_event(event),
            instrumentation_scope=self._scope,
        )
