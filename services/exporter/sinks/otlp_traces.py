"""OTLP traces: process trees as traces, so a lineage opens in Jaeger or Tempo.

One span per process, from its start (``process.start_time``, else the exec event's time)
to its exit; its parent is the parent process's span; one trace per container, or per root
process on the host (``otlp_ids.trace_key``). Ids derive from exec ids, so a child
exported in another batch, or by another exporter process, still names its parent's span.
A process whose parent lies in another trace (a container's first process, started by a
shim on the host) is a root span of its own trace with a link to the parent's span.

A span is exported when its process exits. Until then it is held open, at most
``max_open_spans`` of them: past that the oldest is exported marked
``ocellus.span.incomplete`` (counted in ``counters["spans_evicted"]``), and ``close``
exports whatever is still open, marked the same way; such a span ends at the latest event
time seen. The exit event alone carries enough to rebuild a span, so a span held open
when the exporter dies is not lost, only the policy hits (span events) it had gathered.
Policy events (``process_kprobe``, ``process_tracepoint``) become span events.

Each batch is applied to the open spans as a unit: if its export fails, every change it
made is undone before ``TransientSinkError`` reaches the core, so the retried batch
finds the state it found the first time.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from pydantic import Field

from services.common.logging import get_logger
from services.exporter.sinks import otlp_ids as ids
from services.exporter.sinks import otlp_mapping as mapping
from services.exporter.sinks import otlp_transport as transport
from services.exporter.sinks.base import (
    BatchResult,
    Event,
    Rejection,
    Sink,
    TransientSinkError,
)

log = get_logger(__name__)

_RECENTLY_ENDED = 16_384  # exec ids whose span was exported: late or repeated events skip
_MAX_SPAN_EVENTS = 128  # per span, as the SDK's default limit; the rest are counted


class OtlpTracesConfig(transport.OtlpSinkConfig):
    """``type: otlp_traces``."""

    type: Literal["otlp_traces"] = "otlp_traces"
    max_open_spans: int = Field(100_000, ge=1, description="spans of running processes held")


@dataclass
class _OpenSpan:
    name: str
    context: SpanContext
    parent: SpanContext | None
    links: list[Link]
    start_ns: int
    resource: Resource
    attributes: mapping.Attributes
    events: list[SpanEvent] = field(default_factory=list)
    dropped_events: int = 0


@dataclass
class _Batch:
    """What applying one batch produced: spans to export, and how to take it back."""

    finished: list[ReadableSpan] = field(default_factory=list)
    undo: list[Callable[[], object]] = field(default_factory=list)  # run in reverse on failure


class OtlpTracesSink(Sink):
    config_type = OtlpTracesConfig
    config: OtlpTracesConfig

    def __init__(self, name: str, config: OtlpTracesConfig) -> None:
        super().__init__(name, config)
        self.counters: Counter[str] = Counter()
        self._resources = mapping.ResourceCache(config.service_name, config.resource_attributes)
        self._scope = InstrumentationScope(mapping.INSTRUMENTATION_SCOPE)
        self._open: OrderedDict[str, _OpenSpan] = OrderedDict()  # exec id -> span, oldest first
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._latest_ns = 0  # latest event time seen: where a span cut short ends
        self._lock = asyncio.Lock()  # one batch at a time: batches share the open spans
        self._exporter: Any = None

    async def start(self) -> None:
        if self._exporter is None:
            self._exporter = transport.build_exporter(self.config, "traces")

    async def send(self, events: Sequence[Event]) -> BatchResult:
        if self._exporter is None:
            await self.start()
        async with self._lock:
            batch, result = _Batch(), BatchResult()
            for index, event in enumerate(events):
                try:
                    self._apply(event, batch)
                except (AttributeError, TypeError, ValueError) as e:  # not the Tetragon shape
                    result.rejected.append(Rejection(index, f"malformed event: {e!r}"))
            try:
                await transport.export(self.name, self._exporter, batch.finished)
            except TransientSinkError:
                for undo in reversed(batch.undo):
                    undo()
                raise
        self.counters["spans_exported"] += len(batch.finished)
        return result

    async def close(self) -> None:
        async with self._lock:
            if self._open and self._exporter is not None:
                spans = [
                    self._finish(s, self._latest_ns, incomplete=True) for s in self._open.values()
                ]
                try:
                    await transport.export(self.name, self._exporter, spans)
                    self.counters["spans_incomplete_at_close"] += len(spans)
                except TransientSinkError as e:
                    self.counters["spans_lost_at_close"] += len(spans)
                    log.warning(
                        "open spans not exported at close",
                        sink=self.name,
                        spans=len(spans),
                        reason=e.reason,
                    )
            self._open.clear()
            exporter, self._exporter = self._exporter, None
        await transport.shutdown(exporter)

    # -- applying one event to the open spans -----------------------------------------

    def _apply(self, event: Mapping[str, Any], batch: _Batch) -> None:
        kind = mapping.event_kind(event) or ""
        body: Mapping[str, Any] = event.get(kind) or {}
        exec_id = (body.get("process") or {}).get("exec_id")
        if not exec_id:
            self.counters["events_without_exec_id"] += 1
            return
        self._latest_ns = max(self._latest_ns, mapping.timestamp_ns(event.get("time")) or 0)
        if kind == "process_exec":
            self._open_span(exec_id, event, body, batch)
        elif kind == "process_exit":
            self._end_span(exec_id, event, body, batch)
        elif kind in mapping.POLICY_KINDS:
            self._add_span_event(exec_id, kind, event, body, batch)
        else:
            self.counters["events_ignored"] += 1

    def _open_span(
        self, exec_id: str, event: Mapping[str, Any], body: Mapping[str, Any], batch: _Batch
    ) -> _OpenSpan | None:
        if (span := self._open.get(exec_id)) is not None:
            return span  # delivered again (at-least-once)
        if exec_id in self._ended:
            self.counters["events_after_exit"] += 1
            return None
        span = self._open[exec_id] = self._new_span(exec_id, event, body)
        batch.undo.append(lambda: self._open.pop(exec_id, None))
        if len(self._open) > self.config.max_open_spans:
            self._evict_oldest(batch)
        return span

    def _evict_oldest(self, batch: _Batch) -> None:
        evicted_id, evicted = self._open.popitem(last=False)
        batch.finished.append(self._finish(evicted, self._latest_ns, incomplete=True))
        self.counters["spans_evicted"] += 1

        def undo() -> None:
            self._open[evicted_id] = evicted
            self._open.move_to_end(evicted_id, last=False)
            self.counters["spans_evicted"] -= 1

        batch.undo.append(undo)

    def _end_span(
        self, exec_id: str, event: Mapping[str, Any], body: Mapping[str, Any], batch: _Batch
    ) -> None:
        if exec_id in self._ended:
            self.counters["events_after_exit"] += 1
            return
        held = self._open.pop(exec_id, None)
        if held is not None:
            batch.undo.append(lambda: self._open.__setitem__(exec_id, held))
        # An exec not seen here (before our start, or evicted): the exit says enough.
        span = held or self._new_span(exec_id, event, body)
        end_ns = mapping.timestamp_ns(body.get("time")) or mapping.timestamp_ns(event.get("time"))
        batch.finished.append(self._finish(span, end_ns or self._latest_ns, exit_body=body))
        self._ended[exec_id] = None
        if len(self._ended) > _RECENTLY_ENDED:
            self._ended.popitem(last=False)
        batch.undo.append(lambda: self._ended.pop(exec_id, None))

    def _add_span_event(
        self,
        exec_id: str,
        kind: str,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        batch: _Batch,
    ) -> None:
        # A policy hit before (or without) its exec opens the process's span itself.
        span = self._open_span(exec_id, event, body, batch)
        if span is None:
            return
        if len(span.events) >= _MAX_SPAN_EVENTS:
            span.dropped_events += 1
            self.counters["span_events_dropped"] += 1
            batch.undo.append(lambda: self._undrop(span))
            return
        attributes = mapping.policy_attributes(kind, body)
        if args := body.get("args"):
            attributes["ocellus.hook.args"] = json.dumps(args, separators=(",", ":"))
        timestamp = mapping.timestamp_ns(event.get("time")) or self._latest_ns
        span.events.append(SpanEvent(kind, attributes, timestamp))
        batch.undo.append(span.events.pop)

    def _undrop(self, span: _OpenSpan) -> None:
        span.dropped_events -= 1
        self.counters["span_events_dropped"] -= 1

    # -- spans ------------------------------------------------------------------------

    def _new_span(
        self, exec_id: str, event: Mapping[str, Any], body: Mapping[str, Any]
    ) -> _OpenSpan:
        chain = ids.lineage(body)
        process = chain[0]
        trace = ids.trace_id(ids.trace_key(chain))
        parent, links = ids.parent_and_links(chain, trace)
        start_ns = mapping.timestamp_ns(process.get("start_time")) or mapping.timestamp_ns(
            event.get("time")
        )
        binary = str(process.get("binary") or "")
        return _OpenSpan(
            name=binary.rsplit("/", 1)[-1] or f"pid {process.get('pid', '?')}",
            context=SpanContext(
                trace, ids.span_id(exec_id), is_remote=False, trace_flags=ids.SAMPLED
            ),
            parent=parent,
            links=links,
            start_ns=start_ns or self._latest_ns,
            resource=self._resources.for_event(event),
            attributes=mapping.process_attributes(process, body.get("parent")),
        )

    def _finish(
        self,
        span: _OpenSpan,
        end_ns: int,
        *,
        exit_body: Mapping[str, Any] | None = None,
        incomplete: bool = False,
    ) -> ReadableSpan:
        attributes = dict(span.attributes)
        status = Status(StatusCode.UNSET)
        if exit_body is not None:
            attributes.update(mapping.exit_attributes(exit_body))
            if signal := exit_body.get("signal"):
                status = Status(StatusCode.ERROR, f"killed by {signal}")
        if incomplete:
            attributes["ocellus.span.incomplete"] = True
        if span.dropped_events:
            attributes["ocellus.span.dropped_events"] = span.dropped_events
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=attributes,
            events=tuple(span.events),
            links=span.links,
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=span.start_ns,
            end_time=max(end_ns, span.start_ns),
            instrumentation_scope=self._scope,
        )
