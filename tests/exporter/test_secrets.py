"""Secrets, one way for every sink (services/exporter/secret.py): the HEC token,
the Elasticsearch password and API key and OTLP header values come from a
literal, {env: NAME} or {file: PATH}; a missing or bad one is a config error
that names the sink, the field and where it looked, and never the secret."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.exporter.config import ExporterConfigError, parse_config
from services.exporter.sinks.base import SinkConfig
from services.exporter.sinks.otlp_transport import resolve_headers
from tests.conftest import REPO
from tests.exporter.exporter_helpers import write_config

SECRET = "s3cr3t-Value-42"  # noqa: S105 (a test value, looked for in every error)
VARIABLE = "OCELLUS_TEST_SECRET"
UNSET = "OCELLUS_TEST_SECRET_UNSET"


def hec(secret: Any) -> dict[str, Any]:
    return {"type": "splunk_hec", "options": {"url": "http://127.0.0.1:1", "token": secret}}


def es_password(secret: Any) -> dict[str, Any]:
    options = {"url": "http://127.0.0.1:1", "username": "ocellus", "password": secret}
    return {"type": "elasticsearch", "options": options}


def es_api_key(secret: Any) -> dict[str, Any]:
    return {"type": "elasticsearch", "options": {"url": "http://127.0.0.1:1", "api_key": secret}}


def otlp_header(secret: Any) -> dict[str, Any]:
    return {"type": "otlp_logs", "options": {"headers": {"authorization": secret}}}


def basic(value: str) -> str:
    return "Basic " + base64.b64encode(f"ocellus:{value}".encode()).decode()


# (sink entry for a secret, the field's path in errors, what the sink sends for a value)
SINKS = [
    pytest.param(hec, "token", lambda c: c.authorization, lambda v: f"Splunk {v}", id="hec"),
    pytest.param(
        es_password,
        "password",
        lambda c: c.auth_headers["Authorization"],
        basic,
        id="es-password",
    ),
    pytest.param(
        es_api_key,
        "api_key",
        lambda c: c.auth_headers["Authorization"],
        lambda v: f"ApiKey {v}",
        id="es-api-key",
    ),
    pytest.param(
        otlp_header,
        "headers.authorization",
        lambda c: resolve_headers(c)["authorization"],
        lambda v: v,
        id="otlp-header",
    ),
]


def parse(entry: dict[str, Any]) -> SinkConfig:
    return parse_config({"sinks": [{"name": "siem", **entry}]}).sinks[0].options


@pytest.fixture
def secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The same secret as a literal, in a variable, and in a file (with its newline)."""
    monkeypatch.setenv(VARIABLE, SECRET)
    (tmp_path / "secret").write_text(SECRET + "\n")
    return {
        "literal": SECRET,
        "env": {"env": VARIABLE},
        "file": {"file": str(tmp_path / "secret")},
    }


@pytest.mark.parametrize("source", ["literal", "env", "file"])
@pytest.mark.parametrize(("entry", "field", "sent", "expected"), SINKS)
def test_secret_resolves_and_is_never_shown(
    entry: Callable[[Any], dict[str, Any]],
    field: str,
    sent: Callable[[Any], str],
    expected: Callable[[str], str],
    source: str,
    secret_sources: dict[str, Any],
) -> None:
    """Every sink's secret comes from a literal, env or a file; reprs hide it."""
    config = parse(entry(secret_sources[source]))
    assert sent(config) == expected(SECRET)
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in str(config.model_dump())


BAD = [
    pytest.param({"env": UNSET}, f"environment variable {UNSET} is not set", id="env-unset"),
    pytest.param({"env": "OCELLUS_TEST_SECRET_EMPTY"}, "is empty", id="env-empty"),
    pytest.param({"file": "/nonexistent/secret"}, "cannot read secret file", id="file-missing"),
    pytest.param({"file": "EMPTY_FILE"}, "is empty", id="file-empty"),
    pytest.param({"file": "A_DIRECTORY"}, "Is a directory", id="file-is-a-directory"),
    pytest.param({"vault": "x"}, "a secret is a string, {env: NAME} or {file: PATH}", id="form"),
    pytest.param([SECRET], "a secret is a string, {env: NAME}", id="a-list"),
]


@pytest.mark.parametrize(("secret", "message"), BAD)
@pytest.mark.parametrize(("entry", "field", "sent", "expected"), SINKS)
def test_bad_secret_is_a_clear_config_error_without_the_secret(
    entry: Callable[[Any], dict[str, Any]],
    field: str,
    sent: Any,
    expected: Any,
    secret: Any,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset, empty, unreadable or malformed: the error names sink, field and source."""
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.setenv("OCELLUS_TEST_SECRET_EMPTY", "  \n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "dir").mkdir()
    if isinstance(secret, dict) and "file" in secret:
        names = {"EMPTY_FILE": tmp_path / "empty", "A_DIRECTORY": tmp_path / "dir"}
        secret = {"file": str(names.get(secret["file"], secret["file"]))}
    with pytest.raises(ExporterConfigError) as caught:
        parse(entry(secret))
    text = str(caught.value)
    assert f"sink 'siem': options.{field}" in text
    assert message in text
    assert SECRET not in text


@pytest.mark.parametrize(
    ("entry", "key", "hint"),
    [
        pytest.param(hec(SECRET), "token_env", "write token: {env: NAME}", id="hec-token-env"),
        pytest.param(hec(SECRET), "token_file", "write token: {env: NAME}", id="hec-token-file"),
        pytest.param(es_api_key(None), "api_key_env", "write api_key:", id="es-api-key-env"),
        pytest.param(es_password(None), "password_file", "write password:", id="es-password"),
        pytest.param(otlp_header({}), "headers_env", "write headers.<name>:", id="otlp-headers"),
    ],
)
def test_replaced_secret_keys_say_what_to_write(entry: dict[str, Any], key: str, hint: str) -> None:
    """The older *_env / *_file options are refused with the Secret form to use instead."""
    entry["options"][key] = VARIABLE
    with pytest.raises(ExporterConfigError) as caught:
        parse(entry)
    assert f"{key} is no longer read: {hint}" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_exporter_process_refuses_a_missing_secret_without_printing_others(
    tmp_path: Path,
) -> None:
    """The service exits 1 naming the sink and variable; a secret it did read is not shown."""
    read = hec({"env": VARIABLE})
    read["options"]["timeout"] = 0  # the token is read, another option is wrong
    sinks = [{"name": "hec", **read}, {"name": "es", **es_password({"env": UNSET})}]
    config = write_config(tmp_path / "exporter.yaml", sinks)
    env = {**os.environ, "OCELLUS_EXPORTER_CONFIG_FILE": str(config), VARIABLE: SECRET}
    env.pop(UNSET, None)
    done = subprocess.run(
        [sys.executable, "-m", "services.exporter"],
        env={**env, "OCELLUS_LOG_FORMAT": "json"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    assert f"sink 'es': options.password: Value error, environment variable {UNSET}" in done.stderr
    assert "sink 'hec': options.timeout" in done.stderr
    assert SECRET not in done.stdout + done.stderr
