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
from pydantic import AliasChoices, Field
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
