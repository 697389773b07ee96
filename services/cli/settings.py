"""Settings of the `ocellus` command (OCELLUS_* and the shared ones)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/ocellus")
    return Path.home() / ".local" / "state" / "ocellus"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OCELLUS_")
    section: ClassVar[str] = "cli"

    state_dir: Path = Field(
        default_factory=_default_state_dir, description="where `ocellus up` keeps NATS data"
    )
    output: Literal["compact", "json"] = Field("compact", description="event output format")
    nats_port: int = Field(
        4222, ge=0, le=65535, description="port of the embedded NATS (`up`); 0 picks one"
    )
    start_timeout: float = Field(60.0, gt=0, description="seconds a service gets to report ready")
    stop_timeout: float = Field(5.0, gt=0, description="seconds services get to exit on stop")
