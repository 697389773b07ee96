"""The exporter YAML: every error names the sink and the field path; secrets
come from env or files and are never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import subjects
from services.exporter.config import (
    ExporterConfigError,
    Secret,
    load_config,
    parse_config,
)
from services.exporter.sinks import SINK_TYPES
from services.exporter.sinks.base import SinkConfig
from services.exporter.sinks.jsonfile import JsonFileConfig

REPO = Path(__file__).resolve().parents[2]


class TokenConfig(SinkConfig):
    """Options of a sink that needs a secret (as the HEC or OTLP sinks do)."""

    endpoint: str
    token: Secret


def sink(**fields: Any) -> dict[str, Any]:
    return {"name": "local", "type": "json_file", "options": {"path": "/tmp/e.json"}, **fields}


def test_example_config_is_valid() -> None:
    """deploy/exporter.yaml, the documented example, loads."""
    config = load_config(REPO / "deploy" / "exporter.yaml")
    [local] = config.sinks
    assert local.spec.durable == "exporter_local"
    assert isinstance(local.options, JsonFileConfig) and local.options.mode == 0o600
    assert config.stream == subjects.EVENTS_STREAM


def test_defaults_are_the_documented_ones() -> None:
    """Without optional keys: OCELLUS_EVENTS, dead-letter stream, retry forever."""
    config = parse_config({"sinks": [sink()]})
    spec = config.sinks[0].spec
    assert config.stream == "OCELLUS_EVENTS"
    assert config.dead_letter.stream == "OCELLUS_DEADLETTER"
    assert (spec.batch_size, spec.max_inflight, spec.ack_wait) == (256, 1024, 30.0)
    assert (spec.retry.max_attempts, spec.dead_letter, spec.start_at) == (0, True, "all")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param({}, "sinks: a non-empty list is required", id="no-sinks"),
        pytest.param([1], "expected a mapping at the top", id="not-a-mapping"),
        pytest.param({"sinks": [sink()], "sink": 1}, "unknown top-level keys: sink", id="typo"),
        pytest.param(
            {"sinks": [sink(type="kafka")]},
            "sink 'local': type: unknown sink type 'kafka' (known: ",
            id="unknown-type",
        ),
        pytest.param(
            {"sinks": [sink(options={"path": "/x", "max_backups": "many"})]},
            "sink 'local': options.max_backups: Input should be a valid integer",
            id="option-type",
        ),
        pytest.param(
            {"sinks": [sink(options={})]},
            "sink 'local': options.path: Field required",
            id="option-missing",
        ),
        pytest.param(
            {"sinks": [sink(options={"path": "/x", "colour": "red"})]},
            "sink 'local': options.colour: Extra inputs are not permitted",
            id="option-unknown",
        ),
        pytest.param(
            {"sinks": [sink(options={"path": "/x", "mode": "rw-r--r--"})]},
            "sink 'local': options.mode: Value error, 'rw-r--r--' is not an octal file mode",
            id="option-mode",
        ),
        pytest.param(
            {"sinks": [sink(allow=[{"binary_regex": ["(unclosed"]}])]},
            "sink 'local': allow.0.binary_regex.0: ",
            id="filter-regex",
        ),
        pytest.param(
            {"sinks": [sink(redact=[{"regex": "--password=\\S+"}])]},
            "sink 'local': redact.0: Value error, regex has no capture group",
            id="redact-without-group",
        ),
        pytest.param(
            {"sinks": [sink(include_fields=["process..pid"])]},
            "sink 'local': include_fields: Value error, 'process..pid' is not a dot path",
            id="mask-path",
        ),
        pytest.param(
            {"sinks": [sink(rate_limit={"burst": 5})]},
            "sink 'local': rate_limit.events_per_second: Field required",
            id="rate-limit",
        ),
        pytest.param(
            {"sinks": [sink(batch_size=500, max_inflight=100)]},
            "sink 'local': Value error, max_inflight must be at least batch_size",
            id="inflight-below-batch",
        ),
        pytest.param(
            {"sinks": [sink(retry={"initial_backoff": 5, "max_backoff": 1})]},
            "sink 'local': retry: Value error, max_backoff must be at least initial_backoff",
            id="retry-order",
        ),
        pytest.param(
            {"sinks": [sink(name="bad.name")]},
            "sink 'bad.name': name: String should match pattern",
            id="name-not-a-token",
        ),
        pytest.param(
            {"sinks": [{"type": "json_file", "options": {"path": "/x"}}]},
            "sinks[0]: name: Field required",
            id="name-missing",
        ),
        pytest.param({"sinks": [sink(), sink()]}, "sink 'local': name: used by another", id="dup"),
    ],
)
def test_config_errors_name_the_sink_and_the_field(doc: Any, message: str) -> None:
    """Validation errors say which sink and which field, and what is wrong."""
    with pytest.raises(ExporterConfigError) as caught:
        parse_config(doc, source="x.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("exporter config x.yaml: ")


def test_every_problem_is_reported_at_once() -> None:
    """Two bad sinks: both problems in one error."""
    doc = {"sinks": [sink(name="a", type="nope"), sink(name="b", batch_size=0)]}
    with pytest.raises(ExporterConfigError) as caught:
        parse_config(doc)
    assert len(caught.value.problems) == 2


def test_unreadable_and_invalid_yaml_files_are_errors(tmp_path: Path) -> None:
    """A missing file or broken YAML names the file."""
    with pytest.raises(ExporterConfigError, match=r"missing\.yaml: No such file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("sinks: [\n")
    with pytest.raises(ExporterConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(tmp_path / "broken.yaml")


@pytest.fixture
def token_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SINK_TYPES, "test_token", f"{__name__}:TokenSink")


class TokenSink:
    config_type = TokenConfig


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        pytest.param("s3cr3t-literal", "s3cr3t-literal", id="literal"),
        pytest.param({"env": "OCELLUS_TEST_TOKEN"}, "s3cr3t-from-env", id="env"),
        pytest.param({"file": "TOKEN_FILE"}, "s3cr3t-from-file", id="file"),
    ],
)
def test_secret_from_literal_env_or_file_never_shown(
    token: Any,
    expected: str,
    token_sink: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Secret option resolves from env or a file, and its repr hides the value."""
    monkeypatch.setenv("OCELLUS_TEST_TOKEN", "s3cr3t-from-env")
    (tmp_path / "token").write_text("s3cr3t-from-file\n")
    if isinstance(token, dict) and "file" in token:
        token = {"file": str(tmp_path / "token")}
    options = {"endpoint": "x", "token": token}
    doc = {"sinks": [{"name": "hec", "type": "test_token", "options": options}]}
    parsed = parse_config(doc).sinks[0].options
    assert isinstance(parsed, TokenConfig)
    assert parsed.token.get_secret_value() == expected
    assert "s3cr3t" not in repr(parsed) and "s3cr3t" not in str(parsed)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param({"env": "OCELLUS_TEST_UNSET"}, "variable OCELLUS_TEST_UNSET is not", id="env"),
        pytest.param({"file": "/nonexistent/t"}, "cannot read secret file", id="file"),
        pytest.param({"vault": "x"}, "a secret is a string, {env: NAME}", id="other"),
    ],
)
def test_secret_errors_are_clear_and_leak_nothing(
    token: Any, message: str, token_sink: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret that cannot be resolved names the variable or file, not a value."""
    monkeypatch.delenv("OCELLUS_TEST_UNSET", raising=False)
    doc = {"sinks": [{"name": "hec", "type": "test_token", "options": {"token": token}}]}
    with pytest.raises(ExporterConfigError) as caught:
        parse_config(doc)
    assert "sink 'hec': options.token: Value error, " in str(caught.value)
    assert message in str(caught.value)
    assert "sink 'hec': options.endpoint: Field required" in str(caught.value)


def test_a_rejected_secret_value_is_not_echoed(token_sink: None) -> None:
    """Errors never repeat input values (which may be secrets)."""
    doc = {"sinks": [{"name": "hec", "type": "test_token", "options": {"token": ["s3cr3t"]}}]}
    with pytest.raises(ExporterConfigError) as caught:
        parse_config(doc)
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(ValidationError):
        TokenConfig.model_validate({"type": "t", "endpoint": "x", "token": 5})
