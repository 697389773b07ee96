"""/metrics, /healthz and /readyz of the real services: a sensor (root, BPF)
and an enricher on a real nats-server, real execs, scraped over HTTP and
parsed by prometheus_client's own parser."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.natsserver import EmbeddedNats
from tests.conftest import ServiceProcess, require_root, start_enricher
from tests.metrics.metrics_helpers import (
    TELEMETRY_ENV,
    fetch,
    get,
    metrics_port,
    readiness,
    scrape,
    value,
    wait_until,
)

pytestmark = [pytest.mark.bpf]
NODE = "metrics.node"  # pins of its own: no other module's policies


@pytest.fixture(scope="module")
def services(
    module_nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, int]]:
    """A sensor (with BPF run-time stats) and an enricher; service -> metrics port."""
    require_root()
    logs = tmp_path_factory.mktemp("metrics")
    enricher = start_enricher(
        module_nats_url, logs / "enricher.log", OCELLUS_NODE_NAME=NODE, **TELEMETRY_ENV
    )
    env = {
        "OCELLUS_NATS_URL": module_nats_url,
        "OCELLUS_NODE_NAME": NODE,
        "OCELLUS_STATUS_INTERVAL": "0.5",
        "OCELLUS_METRICS_BPF_STATS": "true",
        **TELEMETRY_ENV,
    }
    sensor = ServiceProcess("sensor", env, logs / "sensor.log")
    sensor.wait_for_log('"sensor running"')
    yield {"sensor": metrics_port(sensor), "enricher": metrics_port(enricher)}
    assert sensor.stop() == 0, sensor.log()
    assert enricher.stop() == 0, enricher.log()


def test_metrics_count_real_execs(services: dict[str, int]) -> None:
    """Execs on the host show as non-zero in/out counters at the sensor and the
    enricher, with the process cache size, and every service says it is ready."""
    for _ in range(5):
        subprocess.run(["/bin/echo", "ocellus-metrics-probe"], check=True, capture_output=True)
    sensor, enricher = services["sensor"], services["enricher"]
    wait_until(
        lambda: value(scrape(enricher), "ocellus_events_out_total", type="process_exec") >= 5,
        "the enricher's process_exec events out",
    )
    s = scrape(sensor)
    assert value(s, "ocellus_events_out_total", type="process_exec") >= 5
    assert value(s, "ocellus_events_in_total", type="ringbuf") >= 5
    assert value(s, "ocellus_counter_total", counter="kernel_records") >= 5
    assert value(s, "ocellus_dropped_total", stage="kernel", reason="ringbuf_full") >= 0
    assert value(s, "ocellus_dropped_total", stage="queue", reason="queue_full") >= 0
    assert value(s, "ocellus_ready", service="sensor", node=NODE) == 1
    assert value(s, "ocellus_nats_connected") == 1
    assert value(s, "process_cpu_seconds_total") > 0
    e = scrape(enricher)
    assert value(e, "ocellus_events_in_total", type="process_exec") >= 5
    assert value(e, "ocellus_events_out_total", type="process_exec") >= 5
    assert value(e, "ocellus_cache_entries", cache="process") > 0
    assert value(e, "ocellus_dropped_total", stage="input", reason="malformed") == 0
    assert value(e, "ocellus_ready", service="enricher") == 1
    assert get(sensor, "/healthz")[0] == 200
    assert readiness(enricher) == (
        200,
        {"service": "enricher", "ready": True, "checks": {"started": True, "nats": True}},
    )


def test_metrics_bpf_program_run_time(services: dict[str, int]) -> None:
    """With OCELLUS_METRICS_BPF_STATS the sensor turns run-time stats on and
    reports its programs' runs and time under their full names."""
    subprocess.run(["/bin/true"], check=True)
    s = scrape(services["sensor"])
    assert value(s, "ocellus_bpf_stats_enabled") == 1
    runs = {
        dict(labels)["program"]: v
        for (name, labels), v in s.items()
        if name == "ocellus_bpf_program_runs_total"
    }
    busy = [p for p, v in runs.items() if v > 0]
    assert busy, runs
    assert any(len(p) > 15 for p in busy), busy  # BCC's names, not the kernel's 15 characters
    assert value(s, "ocellus_bpf_program_run_seconds_total") > 0


def test_metrics_openmetrics_negotiated(services: dict[str, int]) -> None:
    """A scraper asking for OpenMetrics gets it."""
    accept = "application/openmetrics-text; version=1.0.0"
    status, content_type, body = fetch(services["enricher"], "/metrics", accept)
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_readiness_follows_start_up_and_nats(tmp_path: Path) -> None:
    """/readyz is 503 while the enforcer waits for the sensor's maps, 200 once
    both run, 503 while NATS is away and 200 when it is back; /healthz stays 200."""
    require_root()
    server = EmbeddedNats(tmp_path / "nats", port=0)
    url = server.start()
    env = {
        "OCELLUS_NATS_URL": url,
        "OCELLUS_NODE_NAME": "ready.node",
        "OCELLUS_STATUS_INTERVAL": "0.5",
        **TELEMETRY_ENV,
    }
    enforcer = ServiceProcess("enforcer", env, tmp_path / "enforcer.log")
    sensor: ServiceProcess | None = None
    again = EmbeddedNats(tmp_path / "nats", port=int(url.rsplit(":", 1)[1]))
    try:
        enforcer.wait_for_log("waiting for the sensor's policy maps")
        port = metrics_port(enforcer)
        status, body = readiness(port)
        assert status == 503
        assert body["checks"]["policy maps found"] is False
        assert body["checks"]["nats"] is True
        assert get(port, "/healthz")[0] == 200

        sensor = ServiceProcess("sensor", env, tmp_path / "sensor.log")
        sensor_port = metrics_port(sensor)
        wait_until(lambda: readiness(port)[0] == 200, "the enforcer ready")
        wait_until(lambda: readiness(sensor_port)[0] == 200, "the sensor ready")

        server.stop()
        for p in (port, sensor_port):
            wait_until(lambda p=p: readiness(p)[0] == 503, "not ready without NATS")
            assert readiness(p)[1]["checks"]["nats"] is False
            assert get(p, "/healthz")[0] == 200
            assert value(scrape(p), "ocellus_nats_connected") == 0

        again.start()  # same port, same JetStream store
        wait_until(lambda: readiness(port)[0] == 200, "the enforcer ready again", timeout=30)
        wait_until(lambda: readiness(sensor_port)[0] == 200, "the sensor ready again", timeout=30)
    finally:
        assert enforcer.stop() == 0, enforcer.log()
        if sensor is not None:
            assert sensor.stop() == 0, sensor.log()
        server.stop()
        again.stop()
