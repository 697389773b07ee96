"""`ocellus status` against real services on a real nats-server: the whole
stack healthy (exit 0), then a policy in error, drops increasing and a
stopped service each make it exit 1; and the report's rules on heartbeats."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from services.cli.status import build_report
from tests.conftest import ServiceProcess, require_root, start_enricher

OCELLUS = str(Path(sys.executable).parent / "ocellus")
NODE = "status.node"
INTERVAL = 0.5
GOOD_POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: watch-tmp-open
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["/tmp/ocellus-status-"]
"""


def status(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCELLUS_NATS_URL": nats_url, "OCELLUS_STATUS_INTERVAL": str(INTERVAL)}
    return subprocess.run(
        [OCELLUS, "status", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def stack(
    module_nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Sensor, enricher, enforcer (one policy) and exporter (a JSON file sink)."""
    require_root()
    tmp = tmp_path_factory.mktemp("status")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "good.yaml").write_text(GOOD_POLICY)
    config = tmp / "exporter.yaml"
    sink = {"name": "file", "type": "json_file", "options": {"path": str(tmp / "events.json")}}
    config.write_text(yaml.safe_dump({"sinks": [sink]}))
    env = {
        "OCELLUS_NATS_URL": module_nats_url,
        "OCELLUS_NODE_NAME": NODE,
        "OCELLUS_STATUS_INTERVAL": str(INTERVAL),
    }
    enricher = start_enricher(module_nats_url, tmp / "enricher.log", OCELLUS_NODE_NAME=NODE)
    sensor = ServiceProcess("sensor", env, tmp / "sensor.log")
    sensor.wait_for_log('"sensor running"')
    enforcer = ServiceProcess(
        "enforcer", {**env, "OCELLUS_ENFORCER_POLICY_DIR": str(policies)}, tmp / "enforcer.log"
    )
    enforcer.wait_for_log('"enforcer running"')
    exporter = ServiceProcess(
        "exporter", {**env, "OCELLUS_EXPORTER_CONFIG_FILE": str(config)}, tmp / "exporter.log"
    )
    exporter.wait_for_log('"sink running"')
    procs = {"sensor": sensor, "enricher": enricher, "enforcer": enforcer, "exporter": exporter}
    yield {"procs": procs, "policies": policies, "url": module_nats_url}
    for f in policies.iterdir():  # no policy left in this node's maps
        f.unlink()
    for name in ("exporter", "enforcer", "sensor", "enricher"):
        assert procs[name].stop() == 0, procs[name].log()


def test_status_healthy_stack(stack: dict[str, Any]) -> None:
    """Every service of the node is listed with its rates and caches, the
    policy as applied, and the exit status is 0; --json says the same."""
    subprocess.run(["/bin/true"], check=True)
    done = status(stack["url"])
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for service in ("sensor", "enricher", "enforcer", "exporter"):
        assert any(line.startswith(NODE) and f" {service} " in line for line in lines), done.stdout
    assert any("watch-tmp-open" in line and "applied" in line for line in lines), done.stdout
    assert "process cache" in done.stdout
    assert lines[-1] == "healthy"

    report = json.loads(status(stack["url"], "--json").stdout)
    assert report["healthy"] is True and report["problems"] == []
    rows = {r["service"]: r for r in report["services"] if r["node"] == NODE}
    assert set(rows) == {"sensor", "enricher", "enforcer", "exporter"}
    assert rows["sensor"]["in_rate"] is not None  # two heartbeats kept
    assert rows["enricher"]["levels"]["process cache"] > 0
    assert rows["exporter"]["levels"]["lag file"] >= 0
    assert report["policies"][0]["state"] == "applied"


def test_status_policy_in_error(stack: dict[str, Any]) -> None:
    """A policy the enforcer refuses makes status exit 1 naming it."""
    bad = stack["policies"] / "bad.yaml"
    bad.write_text(GOOD_POLICY.replace("watch-tmp-open", "bad-op").replace("Prefix", "Foo"))
    try:
        deadline = time.monotonic() + 10
        while True:
            done = status(stack["url"])
            if (done.returncode == 1 and "bad-op" in done.stdout) or time.monotonic() > deadline:
                break
        assert done.returncode == 1, done.stdout
        assert "policy 'bad-op' on status.node: error" in done.stdout
    finally:
        bad.unlink()


def test_status_drops_increasing(stack: dict[str, Any]) -> None:
    """Malformed raw messages, dropped by the enricher while status runs,
    make it exit 1 with the drops named."""

    async def garble(stop: asyncio.Event) -> None:
        nc = await nats.connect(stack["url"])
        while not stop.is_set():
            await nc.publish("ocellus.raw.status_node.process_exec", b"\xc1 garbage")
            await asyncio.sleep(0.05)
        await nc.close()

    async def run() -> subprocess.CompletedProcess[str]:
        stop = asyncio.Event()
        task = asyncio.create_task(garble(stop))
        await asyncio.sleep(3 * INTERVAL)
        done = await asyncio.to_thread(status, stack["url"])
        stop.set()
        await task
        return done

    done = asyncio.run(run())
    assert done.returncode == 1, done.stdout
    assert "enricher on status.node:" in done.stdout
    assert "dropped since the last heartbeat" in done.stdout


def test_status_stopped_service(stack: dict[str, Any]) -> None:
    """Once a service stops its last heartbeat ages: past 3 intervals status
    exits 1 and says which; the others are still listed."""
    time.sleep(3 * INTERVAL)  # drops of the previous test are history by now
    assert status(stack["url"]).returncode == 0
    assert stack["procs"]["exporter"].stop() == 0
    time.sleep(4 * INTERVAL)
    done = status(stack["url"])
    assert done.returncode == 1, done.stdout
    assert "exporter on status.node: last heartbeat" in done.stdout
    assert any(" sensor " in line for line in done.stdout.splitlines())


def beat(service: str, t: float, uptime: float, **counters: int) -> dict[str, Any]:
    return {
        "service": service,
        "node": "n1",
        "time": int(t * 1e9),
        "uptime": uptime,
        "counters": counters,
    }


@pytest.mark.parametrize(
    ("beats", "healthy", "in_rate"),
    [
        pytest.param(
            [beat("sensor", 99, 9, received=0), beat("sensor", 100, 10, received=50)],
            True,
            50.0,
            id="rates-from-two-beats",
        ),
        pytest.param(
            [beat("sensor", 97.6, 9, received=0), beat("sensor", 98.6, 10, received=50)],
            True,
            50.0,
            id="age-just-under-three-intervals",
        ),
        pytest.param(
            [beat("sensor", 97.4, 9), beat("sensor", 98.4, 10)],
            False,
            0.0,
            id="age-over-three-intervals",
        ),
        pytest.param(
            [beat("sensor", 99, 50, received=900), beat("sensor", 100, 1, received=10)],
            True,
            None,
            id="restart-between-beats-no-rate",
        ),
        pytest.param(
            [beat("sensor", 99, 9, queue_dropped=3), beat("sensor", 100, 10, queue_dropped=3)],
            True,
            0.0,
            id="old-drops-not-increasing",
        ),
        pytest.param(
            [beat("sensor", 99, 9, queue_dropped=3), beat("sensor", 100, 10, queue_dropped=4)],
            False,
            0.0,
            id="drops-increasing",
        ),
        pytest.param([beat("sensor", 100, 10)], True, None, id="one-beat-no-rate"),
    ],
)
def test_build_report_rules(
    beats: list[dict[str, Any]], healthy: bool, in_rate: float | None
) -> None:
    """Age against 3 intervals (0.5 s), rates only between beats of one run,
    and unhealthy only when drops grow."""
    report = build_report({("sensor", "n1"): beats}, 0.5, 100.0)
    assert report.healthy is healthy, report.problems
    assert report.services[0].in_rate == in_rate


def test_build_report_intended_drops_are_not_trouble() -> None:
    """An exporter's filtered and rate-limited events are counted, not alarming."""
    sink = {"state": "running", "received": 10, "sent": 2, "filtered": 5, "rate_limited": 3}
    first = {"service": "exporter", "node": "n1", "time": int(99e9), "uptime": 1}
    beats = [
        {**first, "sinks": {"s": {}}},
        {**first, "time": int(100e9), "uptime": 2, "sinks": {"s": sink}},
    ]
    report = build_report({("exporter", "n1"): beats}, 0.5, 100.0)
    assert report.healthy, report.problems
    assert report.services[0].intended_drops == 8
    assert report.services[0].out_rate == 2.0


def test_build_report_nothing_is_unhealthy() -> None:
    """No heartbeat at all is not a healthy cluster."""
    report = build_report({}, 5.0, 100.0)
    assert not report.healthy and report.problems == ["no heartbeat from any service"]
