"""Settings precedence: flags, then OCELLUS_* variables, then the config file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.settings import ConfigFileError
from services.sensor.settings import Settings as SensorSettings


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ocellus.yaml"
    path.write_text(
        "nats_url: nats://file:1\nnode_name: from-file\n"
        "sensor:\n  ringbuf_pages: 256\n  batch_max: 7\n"
    )
    monkeypatch.setenv("OCELLUS_CONFIG", str(path))
    for var in ("OCELLUS_NATS_URL", "OCELLUS_NODE_NAME", "OCELLUS_SENSOR_BATCH_MAX"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_config_file_applies_top_level_and_section(config: Path) -> None:
    """Top-level keys and the service's section both apply."""
    s = SensorSettings()
    assert (s.nats_url, s.node_name, s.ringbuf_pages, s.batch_max) == (
        "nats://file:1",
        "from-file",
        256,
        7,
    )


def test_env_beats_config_file_and_flags_beat_env(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OCELLUS_* beats the file; a flag (keyword) beats both."""
    monkeypatch.setenv("OCELLUS_NATS_URL", "nats://env:2")
    monkeypatch.setenv("OCELLUS_SENSOR_BATCH_MAX", "9")
    s = SensorSettings()
    assert (s.nats_url, s.batch_max, s.ringbuf_pages) == ("nats://env:2", 9, 256)
    assert SensorSettings(nats_url="nats://flag:3").nats_url == "nats://flag:3"


def test_bad_values_are_refused_by_name(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value out of range names the setting."""
    monkeypatch.setenv("OCELLUS_SENSOR_DRAIN_INTERVAL_MS", "0")
    with pytest.raises(ValidationError, match="drain_interval_ms"):
        SensorSettings()


def test_unreadable_config_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config file that does not exist or is not a mapping says so."""
    monkeypatch.setenv("OCELLUS_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigFileError, match=r"missing\.yaml"):
        SensorSettings()
    (tmp_path / "list.yaml").write_text("- 1\n")
    monkeypatch.setenv("OCELLUS_CONFIG", str(tmp_path / "list.yaml"))
    with pytest.raises(ConfigFileError, match="mapping"):
        SensorSettings()


def test_sensor_refuses_wakeups_the_ring_cannot_reach() -> None:
    """wakeup_bytes above a quarter of the ring would never force a wakeup."""
    with pytest.raises(ValidationError, match="at most a quarter of the ring buffer"):
        SensorSettings(ringbuf_pages=16, wakeup_bytes=128 * 1024)
