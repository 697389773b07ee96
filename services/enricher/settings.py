"""Enricher settings: OCELLUS_ENRICHER_* (plus the shared OCELLUS_* ones)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OCELLUS_ENRICHER_")
    section: ClassVar[str] = "enricher"

    queue_group: str = Field("enricher", description="NATS queue group of the raw subscription")
    stream_max_age: float = Field(
        24 * 3600.0, gt=0, description="seconds OCELLUS_EVENTS keeps events"
    )
    stream_max_bytes: int = Field(
        1024**3, ge=1024 * 1024, description="bytes OCELLUS_EVENTS keeps at most"
    )
    stream_replicas: int = Field(
        1, ge=1, le=5, description="OCELLUS_EVENTS replicas: 3 on a NATS cluster, 1 on one server"
    )
    max_inflight: int = Field(
        4096, ge=1, description="JetStream publishes awaiting their ack at once"
    )
    cache_max: int = Field(200_000, ge=1000, description="process cache entries at most (LRU)")
    ancestors_depth: int = Field(
        10, ge=0, le=100, description="ancestors beyond the parent in each event"
    )
    hold_seconds: float = Field(
        1.0, ge=0, le=60, description="how long out-of-order records wait for what they need"
    )
    proc_root: Path = Field(Path("/proc"), description="the host's /proc")
    cgroup_root: Path | None = Field(
        None, description="the cgroup v2 mount (found from /proc/self/mounts if unset)"
    )
    docker_socket: Path = Field(
        Path("/var/run/docker.sock"), description="Docker Engine API socket"
    )
    container_ttl: float = Field(60.0, gt=0, description="seconds container details are cached")
    container_grace: float = Field(
        30.0, ge=0, description="seconds a removed container is still resolved"
    )
    hook_get_timeout: float = Field(
        0.25,
        gt=0,
        le=5,
        description="seconds a direct hook-registry get for an unknown hook id may take",
    )
    hook_retry_after: float = Field(
        1.0,
        ge=0,
        description="seconds before an unknown hook id is looked up in the registry again",
    )
    hook_grace: float = Field(
        30.0, ge=0, description="seconds a hook id removed from the registry still resolves"
    )
