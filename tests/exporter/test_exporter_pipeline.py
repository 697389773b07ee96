"""The whole pipeline to an observability stack: a real exec, seen by the
sensor in the kernel, enriched, stored in JetStream, exported by the exporter
process to a real OTLP gRPC endpoint as a log record and a span."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceProcess, start_enricher
from tests.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("sensor")]


@pytest.fixture(scope="module")
def enricher(
    module_nats_url: str, sensor: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = start_enricher(module_nats_url, tmp_path_factory.mktemp("enr") / "enricher.log")
    yield service
    assert service.stop() == 0, service.log()


@pytest.fixture
def exporter(
    module_nats_url: str, enricher: ServiceProcess, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> Iterator[ServiceProcess]:
    config = tmp_path / "exporter.yaml"
    endpoint = f"{{endpoint: '{otlp_receiver.endpoint}'}}"
    config.write_text(
        "sinks:\n"
        f"  - {{name: logs, type: otlp_logs, options: {endpoint}}}\n"
        f"  - {{name: trees, type: otlp_traces, options: {endpoint}}}\n"
    )
    env = {
        "OCELLUS_NATS_URL": module_nats_url,
        "OCELLUS_NODE_NAME": "test.node",
        "OCELLUS_EXPORTER_CONFIG_FILE": str(config),
    }
    service = ServiceProcess("exporter", env, tmp_path / "exporter.log")
    service.wait_for_log('"exporter running"')
    yield service
    assert service.stop() == 0, service.log()


def _wait(found, within: float = 20.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := found():
            return result
        time.sleep(0.1)
    return found()


def test_real_exec_arrives_as_otlp_log_and_span_under_its_parent(
    exporter: ServiceProcess, otlp_receiver: OtlpReceiver
) -> None:
    """`sh -c '/bin/true TAG'`: the exec's log record carries its attributes, and
    /bin/true's span is a child of the shell's span in the same trace."""
    tag = f"otlp-{uuid.uuid4().hex[:10]}"
    subprocess.run(["/bin/sh", "-c", f"/bin/true {tag}; :"], check=True)

    def true_log():
        return [
            log
            for log in otlp_receiver.logs()
            if log.attributes.get("process.executable.path") == "/bin/true"
            and tag in (log.attributes.get("process.command_args") or [])
        ]

    logs = _wait(true_log)
    assert logs, f"no log record for {tag}:\n{exporter.log()[-2000:]}"
    attrs = logs[0].attributes
    assert attrs["ocellus.event.type"] == "process_exec"
    assert attrs["process.command_args"] == ["/bin/true", tag]
    assert attrs["process.parent_pid"] > 0
    assert logs[0].resource["host.name"] == "test.node"

    def spans():
        found = {
            s.attributes.get("process.executable.path"): s
            for s in otlp_receiver.spans()
            if s.attributes.get("process.pid")
            in (attrs["process.pid"], attrs["process.parent_pid"])
        }
        return found if {"/bin/true", "/bin/sh"} <= found.keys() else None

    by_binary = _wait(spans)
    assert by_binary, "no spans for /bin/true and its shell"
    child, parent = by_binary["/bin/true"].span, by_binary["/bin/sh"].span
    assert child.parent_span_id == parent.span_id
    assert child.trace_id == parent.trace_id
