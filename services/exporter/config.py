"""The exporter's YAML file: which sinks, and for each what to send and how.

Validated once at start; every error names the sink and the field path
("sink 'siem': options.port: ..."). Secrets (`Secret` fields in a sink's
options, secret.py) come from the environment or a file and never appear in
reprs, logs or error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas import subjects
from services.common.errors import OcellusError
from services.exporter.filters import ExportFilter
from services.exporter.masks import RedactRule, check_field_path
from services.exporter.sinks import sink_class
from services.exporter.sinks.base import SinkConfig

# A sink's name is a NATS subject token and part of a durable consumer name.
SINK_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class ExporterConfigError(OcellusError):
    """The exporter config file is missing, unreadable or invalid."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        super().__init__(f"exporter config {path}: " + "; ".join(problems))
        self.path = Path(path)
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Exponential backoff with full jitter between attempts of one batch."""

    initial_backoff: float = Field(0.5, gt=0, description="seconds before the first retry")
    max_backoff: float = Field(30.0, gt=0, description="ceiling of the backoff")
    max_attempts: int = Field(0, ge=0, description="attempts before giving up; 0: forever")

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must be at least initial_backoff")
        return self


class RateLimitSpec(_Strict):
    """A token bucket; what it drops is reported in a rate_limit_info event."""

    events_per_second: float = Field(gt=0)
    burst: int = Field(0, ge=0, description="bucket size; 0: one second's worth")
    report_interval: float = Field(
        60.0, gt=0, description="seconds between rate_limit_info events (Tetragon: a minute)"
    )


class SinkSpec(_Strict):
    """One entry of `sinks:` (options stay raw here; see ExporterConfig)."""

    name: str = Field(pattern=SINK_NAME_PATTERN)
    type: str
    options: dict[str, Any] = {}
    allow: list[ExportFilter] = []
    deny: list[ExportFilter] = []
    include_fields: list[str] = []
    exclude_fields: list[str] = []
    redact: list[RedactRule] = []
    rate_limit: RateLimitSpec | None = None
    batch_size: int = Field(256, ge=1, le=10_000)
    max_inflight: int = Field(1024, ge=1, le=1_000_000)
    ack_wait: float = Field(30.0, ge=1, description="seconds before JetStream redelivers")
    start_at: str = Field("all", pattern="^(all|new)$", description="where a new durable starts")
    retry: RetryPolicy = RetryPolicy()
    dead_letter: bool = True

    @field_validator("include_fields", "exclude_fields")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            check_field_path(path)
        return paths

    @model_validator(mode="after")
    def _inflight_holds_a_batch(self) -> SinkSpec:
        if self.max_inflight < self.batch_size:
            raise ValueError("max_inflight must be at least batch_size")
        return self

    @property
    def durable(self) -> str:
        return f"exporter_{self.name}"


class DeadLetterSpec(_Strict):
    stream: str | None = Field(
        "OCELLUS_DEADLETTER",
        description="JetStream stream that stores dead letters; null: core NATS only",
    )
    max_age: float = Field(7 * 24 * 3600.0, gt=0, description="seconds dead letters are kept")


class ConfiguredSink(BaseModel):
    """A validated sink entry and its validated options."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: SinkSpec
    options: SinkConfig


class ExporterConfig(_Strict):
    stream: str = subjects.EVENTS_STREAM
    dead_letter: DeadLetterSpec = DeadLetterSpec()
    sinks: list[ConfiguredSink]


def parse_config(doc: Any, *, source: Path | str = "<config>") -> ExporterConfig:
    """Validate a decoded YAML document; ExporterConfigError lists every problem."""
    if not isinstance(doc, Mapping):
        raise ExporterConfigError(source, ["expected a mapping at the top"])
    problems: list[str] = []
    unknown = sorted(set(doc) - {"stream", "dead_letter", "sinks"})
    if unknown:
        problems.append(f"unknown top-level keys: {', '.join(map(str, unknown))}")
    raw_sinks = doc.get("sinks")
    if not isinstance(raw_sinks, list) or not raw_sinks:
        problems.append("sinks: a non-empty list is required")
        raw_sinks = []
    sinks: list[ConfiguredSink] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_sinks):
        label = _sink_label(raw, index)
        configured = _parse_sink(raw, label, problems)
        if configured is None:
            continue
        if configured.spec.name in seen:
            problems.append(f"{label}: name: used by another sink")
        seen.add(configured.spec.name)
        sinks.append(configured)
    top: dict[str, Any] = {k: doc[k] for k in ("stream", "dead_letter") if k in doc}
    try:
        config = ExporterConfig.model_validate({**top, "sinks": sinks})
    except ValidationError as e:
        problems.extend(_messages(e))
    if problems:
        raise ExporterConfigError(source, problems)
    return config


def load_config(path: Path | str) -> ExporterConfig:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ExporterConfigError(path, [e.strerror or str(e)]) from e
    except yaml.YAMLError as e:
        raise ExporterConfigError(path, [f"not valid YAML: {e}"]) from e
    return parse_config(doc, source=path)


def _sink_label(raw: Any, index: int) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"sink {name!r}" if isinstance(name, str) and name else f"sinks[{index}]"


def _parse_sink(raw: Any, label: str, problems: list[str]) -> ConfiguredSink | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{label}: expected a mapping")
        return None
    try:
        spec = SinkSpec.model_validate(raw)
    except ValidationError as e:
        problems.extend(f"{label}: {m}" for m in _messages(e))
        return None
    try:
        cls = sink_class(spec.type)
    except KeyError as e:
        problems.append(f"{label}: type: {e.args[0]}")
        return None
    except ImportError as e:
        problems.append(f"{label}: type: sink {spec.type!r} cannot be loaded: {e}")
        return None
    try:
        options = cls.config_type.model_validate({**spec.options, "type": spec.type})
    except ValidationError as e:
        problems.extend(f"{label}: {m}" for m in _messages(e, prefix="options"))
        return None
    return ConfiguredSink(spec=spec, options=options)


def _messages(error: ValidationError, prefix: str = "") -> list[str]:
    # Only the location and the message: pydantic's own text would repeat the
    # input, which may be a secret.
    out = []
    for item in error.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in ((prefix,) if prefix else ()) + tuple(item["loc"]))
        out.append(f"{loc}: {item['msg']}" if loc else item["msg"])
    return out
