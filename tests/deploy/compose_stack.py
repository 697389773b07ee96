"""The deploy/docker-compose.yml stack on the local dockerd, for tests:
base image (debootstrap + docker import, cached by tag), the Ocellus image
built on it, the stack brought up with Debian's docker-compose and torn down.

A missing tool skips the tests on a laptop and fails them under CI=true."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker_fixtures import DockerDaemon

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
BASE_IMAGE = "ocellus-base:bookworm"
IMAGE = "ocellus:e2e"
PIN_BASE = Path("/sys/fs/bpf/ocellus")
SERVICES = ("nats", "sensor", "enforcer", "enricher", "exporter")
EXPORTER_CONFIG = """\
stream: OCELLUS_EVENTS
sinks:
  - name: file
    type: json_file
    options: {path: /var/log/ocellus/events.json, max_size_mb: 0}  # one file
"""


def require(condition: bool, what: str) -> None:
    """Fail, saying what to do, when a prerequisite is missing (as every other
    fixture does; deselect with -m "not docker" on a machine without them)."""
    if not condition:
        pytest.fail(f"{what} (or deselect: -m 'not docker')")


def run(argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a command from the repository root; its stdout. Fails the test on error."""
    try:
        done = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)}: not done within {timeout}s")
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def build_image(docker: DockerDaemon) -> None:
    """The base image (once per host) and the Ocellus image on it (layers cached)."""
    require(shutil.which("debootstrap") is not None, "no debootstrap: apt-get install debootstrap")
    run([str(REPO / "scripts" / "build-base-image.sh"), BASE_IMAGE], timeout=600)
    run(
        [
            docker.cli,
            "build",
            "-q",
            "-f",
            "deploy/Dockerfile",
            "-t",
            IMAGE,
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            ".",
        ],
        timeout=900,
    )


def engine_major(docker: DockerDaemon) -> int:
    return int(docker.run("version", "--format", "{{.Server.Version}}").split(".")[0])


@dataclass
class ComposeStack:
    """A running compose project and where its exporter writes."""

    docker: DockerDaemon
    project: str
    env: dict[str, str]
    events_file: Path
    bpf_cap: str

    def compose(self, *args: str, timeout: float = 120) -> str:
        return run(
            ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args],
            timeout=timeout,
            env=self.env,
        )

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def logs(self, service: str) -> str:
        done = subprocess.run(
            [self.docker.cli, "logs", self.container(service)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout + done.stderr

    def wait_for_log(self, service: str, text: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logs(service).count(text) >= count:
                return
            time.sleep(0.5)
        pytest.fail(f"{service}: {text!r} not seen {count}x in {timeout}s:\n{self.logs(service)}")
