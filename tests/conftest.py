"""Fixtures that start real components: nats-server on port 0, the sensor as a
process. A missing prerequisite fails the test with what to do about it;
deselect by marker (`-m "not bpf"`) on a machine that cannot run them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from schemas import codec
from services.common.natsserver import EmbeddedNats, die_with_parent

# Real receivers and daemons, as fixtures: dockerd + image, an OTLP gRPC/HTTP
# endpoint, HEC and _bulk servers, rsyslog.
pytest_plugins = [
    "tests.docker_fixtures",
    "tests.otlp_receiver",
    "tests.http_receivers",
    "tests.rsyslog_fixture",
]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def own_bpf_pins() -> Iterator[None]:
    """Services started by tests pin their policy maps in a bpffs directory
    of this run's own, never in a production sensor's."""
    if os.geteuid() != 0:
        yield
        return
    from services.sensor.mounts import BPFFS, ensure_mounted

    ensure_mounted("bpf", BPFFS)
    pins = BPFFS / f"ocellus-test-{os.getpid()}"
    os.environ["OCELLUS_BPF_PIN_DIR"] = str(pins)
    yield
    shutil.rmtree(pins, ignore_errors=True)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root for BPF; run as root or deselect with -m 'not bpf'")


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A real nats-server with JetStream, on a free port, for one test."""
    server = EmbeddedNats(tmp_path / "nats", port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="module")
def module_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


class ServiceProcess:
    """An Ocellus service run as `python -m services.<name>`, stderr captured."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env={**os.environ, "OCELLUS_LOG_FORMAT": "json", **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            # A test run killed before its fixtures' teardown (a timeout) must
            # not leave sensors attached to the kernel behind it.
            preexec_fn=die_with_parent,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"{self.name}: no {text!r} within {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def sensor(
    module_nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """One sensor for a module's tests (compiling BPF takes about a second)."""
    require_root()
    env = {
        "OCELLUS_NATS_URL": module_nats_url,
        "OCELLUS_NODE_NAME": "test.node",
        "OCELLUS_STATUS_INTERVAL": "0.5",
    }
    service = ServiceProcess("sensor", env, tmp_path_factory.mktemp("sensor") / "sensor.log")
    service.wait_for_log('"sensor running"')
    yield service
    assert service.stop() == 0, service.log()


def start_enricher(nats_url: str, log_path: Path, **env: str) -> ServiceProcess:
    """The enricher as a process, ready (seeded and subscribed)."""
    require_root()
    service = ServiceProcess(
        "enricher",
        {
            "OCELLUS_NATS_URL": nats_url,
            "OCELLUS_NODE_NAME": "test.node",
            "OCELLUS_STATUS_INTERVAL": "0.5",
            **env,
        },
        log_path,
    )
    service.wait_for_log('"enricher running"')
    return service


class RawCollector:
    """Subscribes to raw subjects and keeps every record, by type."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.batches: list[dict[str, Any]] = []

    async def on_message(self, msg: Any) -> None:
        batch = codec.unpack(msg.data)
        self.batches.append(batch)
        self.records.setdefault(batch["type"], []).extend(batch["records"])

    def of(self, event_type: str, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [r for r in self.records.get(event_type, []) if pred(r)]

    async def wait_for(
        self,
        event_type: str,
        pred: Callable[[dict[str, Any]], bool],
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = self.of(event_type, pred)
            if len(found) >= count or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.02)


@pytest.fixture
async def raw(module_nats_url: str) -> AsyncIterator[RawCollector]:
    collector = RawCollector()
    client = await nats.connect(module_nats_url)
    await client.subscribe("ocellus.raw.>", cb=collector.on_message)
    await client.flush()
    yield collector
    await client.close()
