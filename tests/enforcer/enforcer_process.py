"""What the enforcer tests share: the enforcer (and optionally an enricher) as
processes next to the module's sensor, the `ocellus policy` CLI, a policy
factory, waiting, and a collector of ocellus.alerts.<node>."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import nats

from schemas import codec, subjects
from tests.conftest import REPO, ServiceProcess, start_enricher

NODE = "test.node"  # the sensor fixture's


def file_policy(name: str, prefix: str, operator: str = "Prefix") -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    - index: 2
      type: int
    selectors:
    - matchArgs:
      - index: 1
        operator: {operator}
        values: ["{prefix}"]
"""


def start_enforcer(nats_url: str, policy_dir: Path, log: Path, **env: str) -> ServiceProcess:
    """The enforcer on ``policy_dir``, once it says it runs (the caller stops it)."""
    service = ServiceProcess(
        "enforcer",
        {
            "OCELLUS_NATS_URL": nats_url,
            "OCELLUS_NODE_NAME": NODE,
            "OCELLUS_STATUS_INTERVAL": "0.5",
            "OCELLUS_ENFORCER_POLICY_DIR": str(policy_dir),
            **env,
        },
        log,
    )
    service.wait_for_log('"enforcer running"')
    return service


@contextmanager
def running_enforcer(
    nats_url: str,
    policy_dir: Path,
    logs: Path,
    *,
    enricher: bool = False,
    enricher_env: dict[str, str] | None = None,
    **env: str,
) -> Iterator[ServiceProcess]:
    """The enforcer on ``policy_dir`` (plus an enricher, with ``enricher_env``);
    at the end every policy file goes and the maps are empty again before it
    stops: other modules' sensors load the same pinned maps."""
    service = start_enforcer(nats_url, policy_dir, logs / "enforcer.log", **env)
    enriching = (
        start_enricher(nats_url, logs / "enricher.log", **(enricher_env or {}))
        if enricher
        else None
    )
    try:
        yield service
    finally:
        for f in policy_dir.iterdir():
            f.unlink()
        wait_until(lambda: not policies(nats_url), what="policies removed", timeout=20)
        if enriching is not None:
            assert enriching.stop() == 0, enriching.log()
        assert service.stop() == 0, service.log()


def cli(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCELLUS_NATS_URL": nats_url, "OCELLUS_NODE_NAME": NODE}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "policy", *args],
        capture_output=True, text=True, env=env, timeout=30, cwd=REPO,
    )  # fmt: skip


def policies(nats_url: str) -> dict[str, dict[str, Any]]:
    out = cli(nats_url, "list", "--json")
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in map(json.loads, out.stdout.splitlines())}


def wait_until(pred: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def collected(nats_url: str, subject: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message on ``subject`` while the block runs, unpacked."""
    got: list[dict[str, Any]] = []

    async def on_message(msg: Any) -> None:
        got.append(codec.unpack(msg.data))

    nc = await nats.connect(nats_url)
    await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    try:
        yield got
    finally:
        await nc.close()


async def cat(path: str | Path) -> int:
    proc = await asyncio.create_subprocess_exec(
        "cat", str(path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await proc.wait()
    return proc.pid


async def sensor_state(nats_url: str) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.request(subjects.control("sensor", NODE, "sync_hooks"), b"", timeout=5)
        return codec.unpack(msg.data)
    finally:
        await nc.close()
