"""Settings shared by every service, in the precedence of DESIGN §2:
command-line flags (passed as keyword arguments), then ``OCELLUS_*``
environment variables, then a YAML config file (``OCELLUS_CONFIG``),
whose top-level keys apply to all services and whose section named after a
service applies to that service only."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import AliasChoices, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "OCELLUS_CONFIG"


class ConfigFileError(ValueError):
    """The config file is missing or not a YAML mapping."""


class _YamlSection(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: str | None, section: str) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        if not path:
            return
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigFileError(f"config file {path}: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigFileError(f"config file {path}: expected a mapping at the top")
        scoped = doc.get(section) or {}
        if not isinstance(scoped, dict):
            raise ConfigFileError(f"config file {path}: section {section!r} must be a mapping")
        fields = settings_cls.model_fields
        self._values = {k: v for k, v in doc.items() if k in fields and not isinstance(v, dict)}
        self._values.update(scoped)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def _common(env: str, default: Any, description: str) -> Any:
    # Shared variables keep their OCELLUS_<NAME> spelling whatever the
    # service's prefix is.
    return Field(
        default,
        validation_alias=AliasChoices(env.removeprefix("OCELLUS_").lower(), env),
        description=description,
    )


class ServiceSettings(BaseSettings):
    """Base of every service's Settings."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    section: ClassVar[str] = "common"

    nats_url: str = _common(
        "OCELLUS_NATS_URL", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated"
    )
    node_name: str = _common(
        "OCELLUS_NODE_NAME", socket.gethostname(), "this node's name in subjects and events"
    )
    log_level: Literal["debug", "info", "warning", "error"] = _common(
        "OCELLUS_LOG_LEVEL", "info", "log level"
    )
    log_format: Literal["auto", "json", "console"] = _common(
        "OCELLUS_LOG_FORMAT", "auto", "log format (auto: console on a TTY, JSON otherwise)"
    )
    nats_connect_timeout: float = _common(
        "OCELLUS_NATS_CONNECT_TIMEOUT", 10.0, "seconds to keep trying to reach NATS at start"
    )
    status_interval: float = _common(
        "OCELLUS_STATUS_INTERVAL", 5.0, "seconds between status heartbeats"
    )
    drain_timeout: float = _common(
        "OCELLUS_DRAIN_TIMEOUT", 3.0, "seconds to drain NATS at shutdown"
    )
    # Telemetry (services/common/metrics.py, README "Metrics and health").
    metrics_port: int | None = _common(
        "OCELLUS_METRICS_PORT", None, "port of /metrics, /healthz, /readyz (unset: off; 0: any)"
    )
    metrics_address: str = _common(
        "OCELLUS_METRICS_ADDRESS",
        "0.0.0.0",  # noqa: S104 (probes and scrapers reach it from outside the host)
        "address the metrics endpoint listens on",
    )
    metrics_bpf_stats: bool = _common(
        "OCELLUS_METRICS_BPF_STATS", False, "turn kernel.bpf_stats_enabled on, report BPF run time"
    )
    metrics_otlp_endpoint: str | None = _common(
        "OCELLUS_METRICS_OTLP_ENDPOINT", None, "OTLP/gRPC endpoint for metrics (unset: off)"
    )
    metrics_otlp_interval: float = _common(
        "OCELLUS_METRICS_OTLP_INTERVAL", 15.0, "seconds between OTLP metric exports"
    )
    metrics_otlp_ca_file: Path | None = _common(
        "OCELLUS_METRICS_OTLP_CA_FILE", None, "CA certificate(s) verifying the OTLP endpoint"
    )
    # Credentials and TLS for NATS (README "Security"): secrets are read from
    # files when connecting, never given as values.
    nats_user: str | None = _common(
        "OCELLUS_NATS_USER", None, "NATS user name (its password in OCELLUS_NATS_PASSWORD_FILE)"
    )
    nats_password_file: Path | None = _common(
        "OCELLUS_NATS_PASSWORD_FILE", None, "file holding the NATS user's password"
    )
    nats_creds: Path | None = _common(
        "OCELLUS_NATS_CREDS", None, "NATS credentials file (user JWT + nkey seed, from nsc)"
    )
    nats_tls_ca: Path | None = _common(
        "OCELLUS_NATS_TLS_CA", None, "CA certificate(s) that sign the NATS servers' certificates"
    )
    nats_tls_cert: Path | None = _common(
        "OCELLUS_NATS_TLS_CERT", None, "client certificate for NATS (servers that verify clients)"
    )
    nats_tls_key: Path | None = _common(
        "OCELLUS_NATS_TLS_KEY", None, "private key of OCELLUS_NATS_TLS_CERT"
    )

    @model_validator(mode="after")
    def _nats_auth_is_whole(self) -> ServiceSettings:
        if (self.nats_user is None) != (self.nats_password_file is None):
            raise ValueError("OCELLUS_NATS_USER and OCELLUS_NATS_PASSWORD_FILE go together")
        if self.nats_creds is not None and self.nats_user is not None:
            raise ValueError("give OCELLUS_NATS_CREDS or OCELLUS_NATS_USER, not both")
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("OCELLUS_NATS_TLS_CERT and OCELLUS_NATS_TLS_KEY go together")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_path = os.environ.get(CONFIG_ENV)
        return (init_settings, env_settings, _YamlSection(settings_cls, config_path, cls.section))


class PolicyMapsSettings(ServiceSettings):
    """Where the sensor pins its policy maps and the enforcer finds them."""

    bpf_pin_dir: Path = _common(
        "OCELLUS_BPF_PIN_DIR",
        Path("/sys/fs/bpf/ocellus"),
        "bpffs directory of the policy maps (a directory per node and layout below it)",
    )
