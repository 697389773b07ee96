"""Enforcer settings: OCELLUS_ENFORCER_* (plus the shared OCELLUS_* ones)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import PolicyMapsSettings


class Settings(PolicyMapsSettings):
    model_config = SettingsConfigDict(env_prefix="OCELLUS_ENFORCER_")
    section: ClassVar[str] = "enforcer"

    policy_dir: Path | None = Field(
        None, description="directory of policy YAML files, watched (add, change, delete)"
    )
    poll_interval: float = Field(
        0.25, gt=0, le=10, description="seconds between scans of the policy directory"
    )
    kv_policies: bool = Field(
        True, description="also apply the cluster-wide policies of the NATS KV ocellus_policies"
    )
    maps_wait: float = Field(
        60.0, ge=0, description="seconds to wait at start for the sensor's policy maps"
    )
    sensor_timeout: float = Field(
        2.0, gt=0, description="seconds to wait for the sensor to attach a new hook"
    )
    retired_ttl: float = Field(
        60.0, ge=0, description="seconds a removed hook id stays in the registry"
    )
    reactions_file: Path | None = Field(
        None, description="reactive enforcement rules (kind: Reactions), reloaded on change"
    )
    docker_socket: Path = Field(
        Path("/var/run/docker.sock"), description="Docker Engine API socket (scoped policies)"
    )
    cgroup_root: Path | None = Field(
        None, description="cgroup2 mount (default: found in /proc/self/mounts)"
    )
    scope_rescan_interval: float = Field(
        30.0, gt=0, description="seconds between rescans of the cgroup tree for scoped policies"
    )
    trusted_keys_dir: Path | None = Field(
        None,
        description="ed25519 public keys (*.pub) policies must be signed by; unset: no signing",
    )
