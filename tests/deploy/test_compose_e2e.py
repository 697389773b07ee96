"""deploy/docker-compose.yml on the real engine: an exec in a container on
the host reaches the exporter's JSON file with its container context."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.compose_stack import SERVICES, ComposeStack

# The first run builds the base image (~40 s) and the image (~70 s).
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.bpf, pytest.mark.timeout(900)]


def _exec_events(path: Path, marker: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    found = []
    for line in text[: text.rfind("\n") + 1].splitlines():  # whole lines only
        event = json.loads(line)
        process = event.get("process_exec", {}).get("process", {})
        if process.get("binary") == "/bin/echo" and process.get("arguments") == marker:
            found.append(event)
    return found


def _exec_in_container(stack: ComposeStack, container: str, timeout: float = 30) -> dict[str, Any]:
    """docker exec echo <marker> in ``container``; the exporter's line for that exec."""
    marker = f"compose-e2e-{secrets.token_hex(4)}"
    stack.docker.run("exec", container, "/bin/echo", marker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events := _exec_events(stack.events_file, marker):
            assert len(events) == 1, events
            return events[0]
        time.sleep(0.25)
    pytest.fail(f"no process_exec of echo {marker} in {stack.events_file} within {timeout}s")


def test_compose_exec_in_container_reaches_exporter_file(
    compose_stack: ComposeStack, target: tuple[str, str], busybox_image: str
) -> None:
    """An exec in a container shows up in the json_file sink with name, id and image."""
    name, container_id = target
    event = _exec_in_container(compose_stack, name)
    process = event["process_exec"]["process"]
    container = process["pod"]["container"]
    assert container["id"] == f"docker://{container_id}"
    assert container["name"] == name
    assert container["image"]["name"] == busybox_image
    assert process["docker"] == container_id[:31]
    assert process["in_init_tree"] is False  # docker exec, not the container's init
    assert event["node_name"] == compose_stack.env["OCELLUS_NODE_NAME"]


def test_compose_sensor_restart_reuses_pinned_maps(
    compose_stack: ComposeStack, target: tuple[str, str]
) -> None:
    """The sensor restarts with its pinned maps in place (the reason for SYS_ADMIN)
    and events flow again."""
    compose_stack.compose("restart", "-t", "10", "sensor")
    compose_stack.wait_for_log("sensor", '"sensor running"', count=2)
    event = _exec_in_container(compose_stack, target[0])
    assert event["process_exec"]["process"]["pod"]["container"]["name"] == target[0]


@pytest.mark.parametrize("service", SERVICES)
def test_compose_least_privilege_as_run(compose_stack: ComposeStack, service: str) -> None:
    """What the engine runs: no privileged container, read-only root, all caps
    dropped, only the measured ones added, and nothing restarted."""
    expected_caps = {
        "sensor": {"CAP_SYS_ADMIN"},
        "enforcer": {f"CAP_{compose_stack.bpf_cap}"},
    }.get(service, set())
    info = json.loads(compose_stack.docker.run("inspect", compose_stack.container(service)))[0]
    host = info["HostConfig"]
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert {c if c.startswith("CAP_") else f"CAP_{c}" for c in host["CapAdd"] or []} == (
        expected_caps
    )
    assert info["State"]["Running"] is True
    assert info["RestartCount"] == 0, compose_stack.logs(service)
    if service != "nats":  # every Ocellus service reports ready on /readyz
        deadline = time.monotonic() + 90
        while info["State"]["Health"]["Status"] != "healthy" and time.monotonic() < deadline:
            time.sleep(1)
            info = json.loads(
                compose_stack.docker.run("inspect", compose_stack.container(service))
            )[0]
        assert info["State"]["Health"]["Status"] == "healthy", info["State"]["Health"]
