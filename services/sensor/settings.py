"""Sensor settings: OCELLUS_SENSOR_* (plus the shared OCELLUS_* ones)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import PolicyMapsSettings


class Settings(PolicyMapsSettings):
    model_config = SettingsConfigDict(env_prefix="OCELLUS_SENSOR_")
    section: ClassVar[str] = "sensor"

    # 16 MiB: about a second of events at 100k/s (benchmarks/open_storm.py
    # delivers that rate with no loss from a 2 MiB ring on a quiet machine):
    # room for a shared core's scheduling stalls, and the ring is the only
    # buffer while the sensor is not running.
    ringbuf_pages: int = Field(4096, description="ring buffer size in 4 KiB pages (power of two)")
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
    watchdog_interval: float = Field(
        5.0, ge=0, description="seconds between self-checks (canary, pins, new BPF); 0: off"
    )
    canary_timeout: float = Field(
        2.0, gt=0, description="seconds the canary's records get to come back"
    )

    @model_validator(mode="after")
    def _wakeups_fit_the_ring(self) -> Self:
        # A forced wakeup that never comes leaves the ring to the timer alone.
        ring = self.ringbuf_pages * 4096
        if self.wakeup_bytes > ring // 4:
            raise ValueError(
                f"wakeup_bytes ({self.wakeup_bytes}) must be at most a quarter of the ring "
                f"buffer ({ring} bytes): raise ringbuf_pages or lower wakeup_bytes"
            )
        return self
