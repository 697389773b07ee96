"""The JSON formats (services/exporter/formats): ECS and OCSF field tables,
classes and ids, and the index template's coverage of what ECS emits."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.events import format_timestamp
from services.exporter.formats import ecs_mappings, to_ecs, to_ocsf
from tests.exporter.siem_samples import (
    CONTAINER,
    NODE,
    T0,
    dig,
    exec_event,
    exit_event,
    kprobe_event,
    process,
    tracepoint_event,
)

CONTAINER_BARE = CONTAINER.removeprefix("containerd://")


# -- ECS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field", "value"),
    [
        pytest.param(exec_event(), "@timestamp", format_timestamp(T0), id="timestamp"),
        pytest.param(exec_event(), "event.kind", "event", id="kind"),
        pytest.param(exec_event(), "event.category", ["process"], id="category"),
        pytest.param(exec_event(), "event.type", ["start"], id="type-start"),
        pytest.param(exec_event(), "event.action", "process_exec", id="action"),
        pytest.param(exec_event(), "event.dataset", "ocellus.events", id="dataset"),
        pytest.param(exec_event(), "host.name", NODE, id="host"),
        pytest.param(exec_event(), "process.pid", 4242, id="pid"),
        pytest.param(exec_event(), "process.executable", "/usr/bin/curl", id="executable"),
        pytest.param(exec_event(), "process.name", "curl", id="name"),
        pytest.param(
            exec_event(), "process.args", ["/usr/bin/curl", "-s", "https://example.com"], id="args"
        ),
        pytest.param(exec_event(), "process.args_count", 3, id="args-count"),
        pytest.param(
            exec_event(), "process.command_line", "/usr/bin/curl -s https://example.com", id="cmd"
        ),
        pytest.param(exec_event(), "process.working_directory", "/srv/app", id="cwd"),
        pytest.param(exec_event(), "process.parent.pid", 1, id="parent-pid"),
        pytest.param(
            exec_event(), "process.parent.args", ["/usr/bin/bash", "-c", "curl -s https://example.com"],
            id="parent-args-shell-quoted",
        ),
        pytest.param(exec_event(), "user.id", "1000", id="user-id"),
        pytest.param(exec_event(), "container.id", CONTAINER_BARE, id="container-id"),
        pytest.param(exec_event(), "container.runtime", "containerd", id="container-runtime"),
        pytest.param(exec_event(), "container.image.name", "nginx:1.25", id="image"),
        pytest.param(exec_event(), "orchestrator.namespace", "shop", id="namespace"),
        pytest.param(exec_event(), "orchestrator.resource.name", "web-7f9c", id="pod"),
        pytest.param(exec_event(), "orchestrator.resource.type", "pod", id="pod-type"),
        pytest.param(exit_event(status=3), "event.type", ["end"], id="type-end"),
        pytest.param(exit_event(status=3), "process.exit_code", 3, id="exit-code"),
        pytest.param(exit_event(), "process.exit_code", 0, id="exit-code-zero"),
        pytest.param(exit_event(signal="SIGKILL"), "ocellus.signal", "SIGKILL", id="signal"),
        pytest.param(kprobe_event(), "event.kind", "alert", id="alert"),
        pytest.param(
            kprobe_event(), "event.category", ["intrusion_detection", "process", "file"],
            id="category-file",
        ),
        pytest.param(kprobe_event(), "event.type", ["denied"], id="type-denied"),
        pytest.param(kprobe_event(), "rule.name", "deny-shadow", id="rule"),
        pytest.param(kprobe_event(), "file.path", "/etc/shadow", id="file"),
        pytest.param(kprobe_event(), "ocellus.action", "SIGKILL", id="action-enum"),
        pytest.param(tracepoint_event(), "event.type", ["info"], id="type-info"),
        pytest.param(tracepoint_event(), "destination.ip", "203.0.113.9", id="dst-ip"),
        pytest.param(tracepoint_event(), "destination.port", 443, id="dst-port"),
        pytest.param(tracepoint_event(), "network.transport", "tcp", id="transport"),
    ],
)  # fmt: skip
def test_ecs_fields(event: dict[str, Any], field: str, value: Any) -> None:
    """Tetragon fields land in their ECS names."""
    assert dig(to_ecs(event), field) == value


def test_ecs_signalled_exit_has_no_exit_code() -> None:
    """An exit by signal leaves process.exit_code out rather than claiming 0."""
    assert "exit_code" not in to_ecs(exit_event(signal="SIGKILL"))["process"]


def _leaves(doc: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in doc.items():
        if isinstance(value, dict):
            paths += _leaves(value, f"{prefix}{key}.")
        else:
            paths.append(prefix + key)
    return paths


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(exec_event(), id="exec"),
        pytest.param(exit_event(status=1), id="exit"),
        pytest.param(kprobe_event(message="m"), id="kprobe"),
        pytest.param(tracepoint_event(), id="tracepoint"),
    ],
)
def test_ecs_mapping_covers_every_emitted_field(event: dict[str, Any]) -> None:
    """The index template maps every field the ECS documents carry."""
    mappings = ecs_mappings()
    for path in _leaves(to_ecs(event)):
        node = mappings
        for step in path.split("."):
            node = node["properties"][step]
        assert "type" in node, path


def _values(doc: Any) -> list[Any]:
    if isinstance(doc, dict):
        return [doc, *(v for value in doc.values() for v in _values(value))]
    if isinstance(doc, list):
        return [doc, *(v for value in doc for v in _values(value))]
    return [doc]


@pytest.mark.parametrize("render", [to_ecs, to_ocsf])
@pytest.mark.parametrize(
    "event",
    [
        pytest.param(exec_event(process(pod=False)), id="host-exec"),
        pytest.param(exit_event(signal="SIGKILL"), id="exit"),
        pytest.param(kprobe_event(), id="kprobe"),
        pytest.param(tracepoint_event(), id="tracepoint"),
    ],
)
def test_json_formats_have_no_empty_values(render: Any, event: dict[str, Any]) -> None:
    """No null, "" or empty object anywhere: unknown stays absent, never blank."""
    assert not [v for v in _values(render(event)) if v in (None, "", {}, [])]


def test_ecs_masked_event_keeps_what_is_left() -> None:
    """An event a field mask stripped down still maps, with absent fields absent."""
    doc = to_ecs({"process_exec": {"process": {"pid": 7}}, "node_name": NODE})
    assert doc["process"] == {"pid": 7}
    assert "@timestamp" not in doc and "container" not in doc


# -- OCSF -----------------------------------------------------------------------------

RATE_LIMIT = {"rate_limit_info": {"number_of_dropped_process_events": "12"}, "node_name": NODE}


@pytest.mark.parametrize(
    ("event", "class_uid", "category_uid", "activity_id"),
    [
        pytest.param(exec_event(), 1007, 1, 1, id="exec-launch"),
        pytest.param(exit_event(), 1007, 1, 2, id="exit-terminate"),
        pytest.param(kprobe_event(), 2004, 2, 1, id="kprobe-finding"),
        pytest.param(tracepoint_event(), 2004, 2, 1, id="tracepoint-finding"),
        pytest.param(RATE_LIMIT, 0, 0, 99, id="other-base-event"),
    ],
)
def test_ocsf_classification(
    event: dict[str, Any], class_uid: int, category_uid: int, activity_id: int
) -> None:
    """class, category, activity and type_uid = class_uid * 100 + activity_id."""
    doc = to_ocsf(event)
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"]) == (
        class_uid, category_uid, activity_id,
    )  # fmt: skip
    assert doc["type_uid"] == class_uid * 100 + activity_id
    # Attributes OCSF requires of every event, and of the class.
    for attr in ("severity_id", "metadata.version", "metadata.product.vendor_name"):
        dig(doc, attr)
    required = {1007: ("process", "actor", "device", "time"), 2004: ("finding_info.uid",)}
    for attr in required.get(class_uid, ()):
        dig(doc, attr)


@pytest.mark.parametrize(
    ("event", "field", "value"),
    [
        pytest.param(exec_event(), "time", T0 // 10**6, id="time-ms"),
        pytest.param(exec_event(), "severity_id", 1, id="severity-informational"),
        pytest.param(exec_event(), "metadata.product.name", "Ocellus", id="product"),
        pytest.param(exec_event(), "metadata.version", "1.3.0", id="ocsf-version"),
        pytest.param(exec_event(), "device.hostname", NODE, id="hostname"),
        pytest.param(exec_event(), "process.pid", 4242, id="pid"),
        pytest.param(exec_event(), "process.uid", process().exec_id, id="uid-exec-id"),
        pytest.param(exec_event(), "process.file.path", "/usr/bin/curl", id="file-path"),
        pytest.param(exec_event(), "process.file.name", "curl", id="file-name"),
        pytest.param(
            exec_event(), "process.cmd_line", "/usr/bin/curl -s https://example.com", id="cmd"
        ),
        pytest.param(exec_event(), "process.parent_process.pid", 1, id="parent"),
        pytest.param(exec_event(), "process.user.uid", "1000", id="user"),
        pytest.param(exec_event(), "process.container.uid", CONTAINER_BARE, id="container"),
        pytest.param(exec_event(), "process.container.name", "web", id="container-name"),
        pytest.param(exec_event(), "process.container.image.name", "nginx:1.25", id="image"),
        pytest.param(exec_event(), "actor.process.pid", 1, id="launch-actor-parent"),
        pytest.param(exit_event(status=3), "exit_code", 3, id="exit-code"),
        pytest.param(exit_event(status=3), "actor.process.pid", 4242, id="exit-actor-self"),
        pytest.param(kprobe_event(), "finding_info.analytic.name", "deny-shadow", id="analytic"),
        pytest.param(kprobe_event(), "finding_info.title",
                     "Policy match deny-shadow: __x64_sys_openat", id="title"),
        pytest.param(kprobe_event(), "evidences.0.file.path", "/etc/shadow", id="evidence-file"),
        pytest.param(kprobe_event(), "evidences.0.process.pid", 4242, id="evidence-process"),
        pytest.param(kprobe_event(), "severity_id", 4, id="enforced-high"),
        pytest.param(kprobe_event(), "disposition_id", 2, id="blocked"),
        pytest.param(kprobe_event(action="KPROBE_ACTION_POST"), "severity_id", 3, id="post-medium"),
        pytest.param(kprobe_event(action="KPROBE_ACTION_POST"), "disposition_id", 17, id="logged"),
        pytest.param(tracepoint_event(), "evidences.0.dst_endpoint.port", 443, id="dst-endpoint"),
        pytest.param(RATE_LIMIT, "unmapped.rate_limit_info.number_of_dropped_process_events",
                     "12", id="unmapped-kept"),
    ],
)  # fmt: skip
def test_ocsf_fields(event: dict[str, Any], field: str, value: Any) -> None:
    """Tetragon fields land in their OCSF attributes."""
    assert dig(to_ocsf(event), field) == value
