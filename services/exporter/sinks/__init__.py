"""Sink types by their `type:` name in the exporter config, imported when
configured (so that a sink's libraries load only where it is used)."""

from __future__ import annotations

import importlib

from services.exporter.sinks.base import Sink

SINK_TYPES: dict[str, str] = {
    "json_file": "services.exporter.sinks.jsonfile:JsonFileSink",
    "otlp_logs": "services.exporter.sinks.otlp:OtlpLogsSink",
    "otlp_traces": "services.exporter.sinks.otlp:OtlpTracesSink",
    "syslog": "services.exporter.sinks.syslog:SyslogSink",
    "splunk_hec": "services.exporter.sinks.hec:SplunkHecSink",
    "elasticsearch": "services.exporter.sinks.elastic:ElasticsearchSink",
}


def sink_class(type_name: str) -> type[Sink]:
    """The Sink class for a `type:`; KeyError names the known types."""
    try:
        module_name, class_name = SINK_TYPES[type_name].split(":")
    except KeyError:
        known = ", ".join(sorted(SINK_TYPES))
        raise KeyError(f"unknown sink type {type_name!r} (known: {known})") from None
    cls: type[Sink] = getattr(importlib.import_module(module_name), class_name)
    return cls
