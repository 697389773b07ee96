"""The OTLP sinks against a real OTLP endpoint (tests/otlp_receiver.py): log records as
decoded from the wire, the transport options (protocols, headers, TLS, retries), config
validation. Traces: test_otlp_traces.py."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import Container, Image, Pod, format_timestamp
from services.exporter.sinks import otlp_ids as ids
from services.exporter.sinks import otlp_mapping as mapping
from services.exporter.sinks import sink_class
from services.exporter.sinks.base import TransientSinkError
from services.exporter.sinks.otlp import (
    OtlpLogsConfig,
    OtlpLogsSink,
    OtlpTracesSink,
)
from tests.exporter.otlp_events import (
    BASH,
    CONTAINER_ID,
    INIT,
    NODE,
    SSHD,
    T0,
    command,
    exec_event,
    exit_event,
    kprobe_event,
    logs_sink,
    proc,
    send_all,
    traces_sink,
)
from tests.otlp_receiver import OtlpReceiver


@pytest.mark.parametrize(
    "trusted, delivered",
    [
        pytest.param(True, True, id="ca-file-verifies"),
        pytest.param(False, False, id="unknown-ca-refused"),
    ],
)
async def test_logs_over_tls_verify_the_receiver(
    request: pytest.FixtureRequest, trusted: bool, delivered: bool
) -> None:
    """With ca_file the TLS receiver is trusted; without it the send fails as transient."""
    receiver, ca_file = request.getfixturevalue("otlp_tls_receiver")
    config = OtlpLogsConfig(
        endpoint=receiver.endpoint, ca_file=ca_file if trusted else None, timeout=0.5
    )
    sink = OtlpLogsSink("tls", config)
    await sink.start()
    if delivered:
        await sink.send([exec_event(BASH, SSHD, INIT)])
        assert len(receiver.logs()) == 1
    else:
        with pytest.raises(TransientSinkError):
            await sink.send([exec_event(BASH, SSHD, INIT)])
        assert receiver.logs() == []
    await sink.close()


@pytest.mark.parametrize(
    "arguments, expected",
    [
        pytest.param("-la /tmp", {"process.command_args": ["/bin/x", "-la", "/tmp"]}, id="bare"),
        pytest.param(
            "-c 'echo \"hi there\"' 'it'\"'\"'s'",
            {"process.command_args": ["/bin/x", "-c", 'echo "hi there"', "it's"]},
            id="shlex-quoted",
        ),
        pytest.param("''", {"process.command_args": ["/bin/x", ""]}, id="empty-argument"),
        pytest.param(
            "-c 'cut mid-quo", {"process.command_line": "/bin/x -c 'cut mid-quo"}, id="truncated"
        ),
    ],
)
def test_command_args_split_back_as_the_enricher_quoted_them(
    arguments: str, expected: dict[str, Any]
) -> None:
    """process.command_args is argv again; an unsplittable string stays a command line."""
    attrs = mapping.process_attributes({"pid": 1, "binary": "/bin/x", "arguments": arguments}, None)
    assert {k: attrs[k] for k in expected if k in attrs} == expected
    assert not ({"process.command_args", "process.command_line"} - set(expected)) & set(attrs)


@pytest.mark.parametrize(
    "type_name, sink_cls",
    [
        pytest.param("otlp_logs", OtlpLogsSink, id="logs"),
        pytest.param("otlp_traces", OtlpTracesSink, id="traces"),
    ],
)
def test_sink_types_resolve_to_otlp_sinks(type_name: str, sink_cls: type) -> None:
    """The sink type table's otlp entries load these classes."""
    assert sink_class(type_name) is sink_cls


async def test_logs_exec_arrives_with_semconv_attributes(
    receiver_and_protocol: tuple[OtlpReceiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exec of a unique command arrives as one log record: JSON body, time, attributes."""
    receiver, protocol = receiver_and_protocol
    monkeypatch.setenv("OCELLUS_TEST_TENANT", "blue")
    marker = f"ocellus-{uuid.uuid4().hex}"
    cmd = command(marker)
    event = exec_event(cmd, BASH, SSHD, INIT)
    sink = logs_sink(
        receiver,
        protocol=protocol,
        headers={"Authorization": "Bearer s3cret", "x-tenant": {"env": "OCELLUS_TEST_TENANT"}},
    )
    await send_all(sink, [event])

    [log] = [r for r in receiver.logs() if marker in r.record.body.string_value]
    assert json.loads(log.record.body.string_value) == event
    assert log.record.time_unix_nano == T0 + 6_000
    assert log.record.severity_text == "INFO"
    assert log.resource == {"service.name": "ocellus", "host.name": NODE}
    assert log.scope == "ocellus.exporter"
    assert log.attributes == {
        "process.pid": 4300,
        "process.parent_pid": 4242,
        "process.executable.path": "/usr/bin/python3",
        "process.executable.name": "python3",
        "process.command_args": ["/usr/bin/python3", "-c", "print(1)", marker],
        "process.args_count": 4,
        "process.user.id": 1000,
        "process.working_directory": "/home/dev",
        "process.creation.time": format_timestamp(T0 + 6_000),
        "ocellus.exec_id": cmd.exec_id,
        "ocellus.parent_exec_id": BASH.exec_id,
        "ocellus.process.flags": "execve clone",
        "ocellus.event.type": "process_exec",
    }
    # Correlated with the traces sink: the process's span in its lineage's trace.
    assert int.from_bytes(log.record.span_id) == ids.span_id(cmd.exec_id)
    assert int.from_bytes(log.record.trace_id) == ids.trace_id(f"exec:{SSHD.exec_id}")
    assert receiver.headers[-1]["authorization"] == "Bearer s3cret"
    assert receiver.headers[-1]["x-tenant"] == "blue"


async def test_logs_container_process_carries_container_and_k8s_attributes(
    receiver: OtlpReceiver,
) -> None:
    """A process in a pod's container carries container.*, k8s.* and the workload."""
    container = Container(
        id=f"containerd://{CONTAINER_ID}",
        name="web",
        image=Image(id="sha256:9b2a", name="registry.local:5000/shop/web:1.4"),
        pid=7,
    )
    pod = Pod(
        namespace="shop",
        name="web-5d8f",
        uid="u-1",
        container=container,
        workload="web",
        workload_kind="Deployment",
    )
    nginx = proc(9100, "/usr/sbin/nginx", ktime=9_000, pod=pod, docker=CONTAINER_ID[:31])
    await send_all(logs_sink(receiver), [exec_event(nginx, None)])

    [log] = receiver.logs()
    expected = {
        "container.id": CONTAINER_ID,
        "container.runtime.name": "containerd",
        "k8s.container.name": "web",
        "container.image.name": "registry.local:5000/shop/web",
        "container.image.tags": ["1.4"],
        "container.image.id": "sha256:9b2a",
        "process.vpid": 7,
        "k8s.namespace.name": "shop",
        "k8s.pod.name": "web-5d8f",
        "k8s.pod.uid": "u-1",
        "k8s.deployment.name": "web",
    }
    assert {k: log.attributes.get(k) for k in expected} == expected
    assert int.from_bytes(log.record.trace_id) == ids.trace_id(f"container:{CONTAINER_ID[:31]}")


@pytest.mark.parametrize(
    "action, severity",
    [
        pytest.param("KPROBE_ACTION_SIGKILL", "WARN", id="sigkill-warns"),
        pytest.param("KPROBE_ACTION_SIGNAL", "WARN", id="signal-warns"),
        pytest.param("KPROBE_ACTION_POST", "INFO", id="post-informs"),
    ],
)
async def test_logs_policy_hit_severity(receiver: OtlpReceiver, action: str, severity: str) -> None:
    """A policy hit that killed or signalled the process is a WARN record, else INFO."""
    await send_all(logs_sink(receiver), [kprobe_event(BASH, SSHD, 5_500, action)])

    [log] = receiver.logs()
    assert log.record.severity_text == severity
    assert log.attributes["ocellus.event.type"] == "process_kprobe"
    assert log.attributes["ocellus.policy.name"] == "deny-shadow"
    assert log.attributes["ocellus.policy.action"] == action


@pytest.mark.parametrize(
    "make_sink, batch",
    [
        pytest.param(logs_sink, [exec_event(BASH, SSHD, INIT)], id="logs"),
        pytest.param(
            traces_sink,
            [
                exec_event(BASH, SSHD, INIT),
                kprobe_event(BASH, SSHD, 5_500, "KPROBE_ACTION_POST"),
                exit_event(BASH, SSHD, 6_000, INIT),
            ],
            id="traces",
        ),
    ],
)
async def test_unavailable_receiver_is_transient_then_retry_delivers(
    receiver: OtlpReceiver,
    make_sink: Any,
    batch: list[dict[str, Any]],
) -> None:
    """UNAVAILABLE makes send raise TransientSinkError; the retried batch arrives once."""
    sink = make_sink(receiver, timeout=0.5)  # shorter than the SDK's first backoff
    await sink.start()
    receiver.fail_next(1)
    with pytest.raises(TransientSinkError):
        await sink.send(batch)
    await sink.send(batch)
    await sink.close()

    assert receiver.failed_calls == 1
    delivered = receiver.logs() or receiver.spans()
    assert len(delivered) == 1
    if isinstance(sink, OtlpTracesSink):  # the failed batch's changes were undone
        assert len(receiver.spans()[0].span.events) == 1


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param(
            {"protocol": "http", "insecure": True}, "insecure applies", id="http-insecure"
        ),
        pytest.param({"client_cert_file": "/c.pem"}, "go together", id="cert-without-key"),
        pytest.param({"headers": {"a": "1", "A": "2"}}, "given twice", id="header-twice"),
        pytest.param({"headers_env": {"a": "X"}}, "headers_env is no longer", id="headers-env"),
        pytest.param({"protocol": "udp"}, "protocol", id="unknown-protocol"),
    ],
)
def test_config_rejects_contradictions(options: dict[str, Any], message: str) -> None:
    """Contradictory OTLP options fail validation with a message naming the problem."""
    with pytest.raises(ValidationError, match=message):
        OtlpLogsConfig.model_validate({"type": "otlp_logs", **options})


def test_missing_header_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header whose variable is not set fails validation, naming header and variable."""
    monkeypatch.delenv("OCELLUS_TEST_UNSET", raising=False)
    with pytest.raises(ValidationError, match=r"headers\.x-key\n.*OCELLUS_TEST_UNSET is not set"):
        OtlpLogsConfig(headers={"x-key": {"env": "OCELLUS_TEST_UNSET"}})


def test_secret_headers_are_not_shown() -> None:
    """Header values never appear in the config's repr."""
    config = OtlpLogsConfig(headers={"authorization": "Bearer s3cret"})
    assert "s3cret" not in repr(config)
