"""Fixtures of the deploy tests: the compose stack and a container to exec in."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from services.common.hostfs import cgroup2_root
from tests.conftest import REPO
from tests.deploy.compose_stack import (
    EXPORTER_CONFIG,
    IMAGE,
    PIN_BASE,
    ComposeStack,
    build_image,
    engine_major,
    require,
)
from tests.docker_fixtures import DockerDaemon

READY = {
    "sensor": "sensor running",
    "enricher": "enricher running",
    "exporter": "sink running",
    "enforcer": "enforcer running",
}


@pytest.fixture(scope="module")
def compose_stack(
    docker_daemon: DockerDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeStack]:
    """deploy/docker-compose.yml up on the local engine, every service ready."""
    require(os.geteuid() == 0, "the sensor loads BPF: run as root")
    require(shutil.which("docker-compose") is not None, "no docker-compose: apt-get install it")
    cgroup2 = cgroup2_root()
    require(cgroup2 is not None, "no cgroup v2 hierarchy is mounted on this host")
    build_image(docker_daemon)

    work = tmp_path_factory.mktemp("compose")
    (work / "log").mkdir()
    (work / "policies").mkdir()
    (work / "exporter.yaml").write_text(EXPORTER_CONFIG)
    token = secrets.token_hex(3)
    # A user, a password and a client certificate per service, TLS to nats.
    subprocess.run([str(REPO / "deploy" / "make-secrets.sh"), str(work / "secrets")], check=True)
    passwords = dict(
        line.split("=", 1) for line in (work / "secrets" / "nats.env").read_text().split()
    )
    # Engines before 23.0 reject CAP_BPF: the documented fallback.
    bpf_cap = "SYS_ADMIN" if engine_major(docker_daemon) < 23 else "BPF"
    stack = ComposeStack(
        docker=docker_daemon,
        project=f"ocellus-e2e-{token}",
        env={
            **os.environ,
            "OCELLUS_IMAGE": IMAGE,
            **passwords,
            "OCELLUS_SECRETS": str(work / "secrets"),
            "OCELLUS_NODE_NAME": f"e2e-{token}",
            "OCELLUS_BPF_CAP": bpf_cap,
            "OCELLUS_HOST_CGROUP2": str(cgroup2),
            "OCELLUS_EXPORTER_CONFIG": str(work / "exporter.yaml"),
            "OCELLUS_LOG_DIR": str(work / "log"),
            "OCELLUS_POLICY_DIR": str(work / "policies"),
        },
        events_file=work / "log" / "events.json",
        bpf_cap=bpf_cap,
    )
    try:
        stack.compose("up", "-d", "--no-build")
        for service, ready in READY.items():
            stack.wait_for_log(service, f'"{ready}"')
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "-t", "10")
        # Pinned maps outlive the containers: remove this node's.
        shutil.rmtree(PIN_BASE / stack.env["OCELLUS_NODE_NAME"], ignore_errors=True)


@pytest.fixture
def target(compose_stack: ComposeStack, busybox_image: str) -> Iterator[tuple[str, str]]:
    """A busybox container on the host (not in the stack): its name and id."""
    name = f"{compose_stack.project}-target"
    container_id = compose_stack.docker.run(
        "run", "-d", "--name", name, busybox_image, "sleep", "300"
    )
    yield name, container_id
    compose_stack.docker.run("rm", "-f", name)
