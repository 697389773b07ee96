"""Sensor settings: OCELLUS_SENSOR_* (plus the shared OCELLUS_* ones)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import PolicyMapsSettings


class Settings(PolicyMapsSettings):
    model_config = SettingsConfigDict(env_prefix="OCELLUS_SENSOR_")
    section: ClassVar[str] = "sensor"

    ringbuf_pages: int = Field(512, description="ring buffer size in 4 KiB pages (power of two)")
    drain_interval_ms: int = Field(50, ge=1, le=1000, description="ring buffer drain period")
    wakeup_bytes: int = Field(
        128 * 1024, ge=4096, description="bytes per CPU between forced early drains"
    )
    queue_max: int = Field(
        262_144, ge=1024, description="records held in user space before dropping"
    )
    batch_max: int = Field(4096, ge=1, description="records per drain batch")
    publish_max_bytes: int = Field(
        256 * 1024, ge=4096, description="records per NATS message, by size"
    )
    args_max: int = Field(4096, description="bytes of argv kept per exec (power of two)")
    arg_max: int = Field(1024, description="bytes kept of one argument")
    argc_max: int = Field(128, ge=1, le=1024, description="arguments kept per exec")
    procs_max: int = Field(65536, ge=1024, description="processes tracked in the kernel")
