"""The exporter YAML: every error names the sink and the field path (secrets:
test_secrets.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import subjects
from services.exporter.config import ExporterConfigError, load_config, parse_config
from services.exporter.sinks.jsonfile import JsonFileConfig

REPO = Path(__file__).resolve().parents[2]


def sink(**fields: Any) -> dict[str, Any]:
    return {"name": "local", "type": "json_file", "options": {"path": "/tmp/e.json"}, **fields}


def test_example_config_is_valid() -> None:
    """deploy/exporter.yaml, the documented example, loads."""
    config = load_config(REPO / "deploy" / "exporter.yaml")
    [local] = config.sinks
    assert local.spec.durable == "exporter_local"
    assert isinstance(local.options, JsonFileConfig) and local.options.mode == 0o600
    assert config.stream == subjects.EVENTS_STREAM


def test_example_receiver_sinks_in_comments_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commented-out receiver sinks of deploy/exporter.yaml load once uncommented."""
    text = (REPO / "deploy" / "exporter.yaml").read_text()
    commented = text.split("For example:\n", 1)[1].splitlines()
    block = "\n".join(line.removeprefix("  # ") for line in commented if line.startswith("  # "))
    (tmp_path / "api-key").write_text("aWQ6a2V5\n")
    block = block.replace("/run/secrets/es-api-key", str(tmp_path / "api-key"))
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", "t")
    monkeypatch.setenv("OTLP_AUTHORIZATION", "Bearer t")
    config = parse_config({"sinks": yaml.safe_load(block)})
    assert [s.spec.type for s in config.sinks] == [
        "splunk_hec",
        "elasticsearch",
        "otlp_logs",
        "syslog",
    ]


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
