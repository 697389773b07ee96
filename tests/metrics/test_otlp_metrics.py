"""OTLP metrics from a real enricher process to the real OTLP gRPC receiver
(tests/otlp_receiver.py), in plaintext and over TLS."""

from __future__ import annotations

from pathlib import Path

import nats

from tests.conftest import start_enricher
from tests.metrics.metrics_helpers import wait_until
from tests.otlp_receiver import OtlpReceiver, ReceivedMetric

NODE = "otlp.node"


def latest(receiver: OtlpReceiver, name: str) -> ReceivedMetric | None:
    found = [m for m in receiver.metrics() if m.name == name]
    return found[-1] if found else None


def point(metric: ReceivedMetric | None, **labels: str) -> float | None:
    if metric is None:
        return None
    values = [v for attrs, v in metric.points if labels.items() <= attrs.items()]
    return sum(values) if values else None


async def test_otlp_metrics_received(
    nats_url: str, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """The enricher exports its cache size and a real drop (a malformed raw
    message) as OTLP metrics: a monotonic sum, a gauge, the service as resource."""
    enricher = start_enricher(
        nats_url,
        tmp_path / "enricher.log",
        OCELLUS_NODE_NAME=NODE,
        OCELLUS_METRICS_OTLP_ENDPOINT=otlp_receiver.endpoint,
        OCELLUS_METRICS_OTLP_INTERVAL="0.3",
    )
    try:
        nc = await nats.connect(nats_url)
        await nc.publish("ocellus.raw.otlp_node.process_exec", b"\xc1 not msgpack")
        await nc.close()

        def dropped() -> float | None:
            metric = latest(otlp_receiver, "ocellus_dropped")
            return point(metric, stage="input", reason="malformed")

        wait_until(lambda: dropped() == 1, "the malformed message counted over OTLP")
        drops = latest(otlp_receiver, "ocellus_dropped")
        assert drops is not None and drops.kind == "sum" and drops.monotonic
        assert drops.resource["service.name"] == "ocellus-enricher"
        assert drops.resource["host.name"] == NODE
        cache = latest(otlp_receiver, "ocellus_cache_entries")
        assert cache is not None and cache.kind == "gauge"
        assert (point(cache, cache="process", node=NODE) or 0) > 0
        assert point(latest(otlp_receiver, "ocellus_ready"), service="enricher") == 1
    finally:
        assert enricher.stop() == 0, enricher.log()


def test_otlp_metrics_over_tls(
    nats_url: str, otlp_tls_receiver: tuple[OtlpReceiver, Path], tmp_path: Path
) -> None:
    """With a CA file the export goes over TLS to a receiver that only speaks TLS."""
    receiver, ca = otlp_tls_receiver
    enricher = start_enricher(
        nats_url,
        tmp_path / "enricher.log",
        OCELLUS_NODE_NAME=NODE,
        OCELLUS_METRICS_OTLP_ENDPOINT=receiver.endpoint,
        OCELLUS_METRICS_OTLP_INTERVAL="0.3",
        OCELLUS_METRICS_OTLP_CA_FILE=str(ca),
    )
    try:
        wait_until(lambda: latest(receiver, "ocellus_cache_entries") is not None, "TLS export")
    finally:
        assert enricher.stop() == 0, enricher.log()


def test_otlp_metrics_last_export_at_stop(
    nats_url: str, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A stopping service exports its last numbers, whatever the interval."""
    enricher = start_enricher(
        nats_url,
        tmp_path / "enricher.log",
        OCELLUS_NODE_NAME=NODE,
        OCELLUS_METRICS_OTLP_ENDPOINT=otlp_receiver.endpoint,
        OCELLUS_METRICS_OTLP_INTERVAL="30",
    )
    assert latest(otlp_receiver, "ocellus_uptime_seconds") is None
    assert enricher.stop() == 0, enricher.log()
    assert latest(otlp_receiver, "ocellus_uptime_seconds") is not None
