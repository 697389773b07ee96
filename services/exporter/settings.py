"""Exporter settings: OCELLUS_EXPORTER_* (plus the shared OCELLUS_* ones).
What to export, and where, is in the exporter's own YAML (`config_file`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OCELLUS_EXPORTER_")
    section: ClassVar[str] = "exporter"

    config_file: Path = Field(
        description="the exporter YAML: sinks, filters, masks, limits (deploy/exporter.yaml)"
    )
    stop_timeout: float = Field(
        10.0, gt=0, description="seconds sinks get at shutdown to deliver what was fetched"
    )
