"""The whole pipeline on a secured nats-server: every service (sensor,
enricher, enforcer, exporter, the CLI) as its own user with only the
permissions of services/common/permissions.py, over TLS with client
certificates. Each does its job, and the server logs no permissions
violation for any of them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.aio.client import Client as NATS

from services.common import bus
from tests.conftest import ServiceProcess, require_root
from tests.enforcer.enforcer_process import file_policy
from tests.security.conftest import ADMIN, SecuredNats

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

NODE = "sec.node"
OCELLUS = str(Path(sys.executable).parent / "ocellus")


def service(secured: SecuredNats, name: str, log: Path, **env: str) -> ServiceProcess:
    return ServiceProcess(
        name,
        secured.env(name, OCELLUS_NODE_NAME=NODE, OCELLUS_STATUS_INTERVAL="0.5", **env),
        log,
    )


def cli(secured: SecuredNats, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **secured.env("cli", OCELLUS_NODE_NAME=NODE)}
    return subprocess.run(
        [OCELLUS, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def pipeline(
    secured: SecuredNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """sensor, enricher, enforcer and exporter (json_file sink), each as its user."""
    require_root()
    work = tmp_path_factory.mktemp("pipeline")
    out = work / "out"
    config = work / "exporter.yaml"
    sink = {"name": "local", "type": "json_file", "options": {"path": str(out / "events.json")}}
    config.write_text(yaml.safe_dump({"sinks": [sink]}))
    started: list[ServiceProcess] = []
    try:
        sensor = service(secured, "sensor", work / "sensor.log")
        started.append(sensor)
        sensor.wait_for_log('"sensor running"')
        enricher = service(secured, "enricher", work / "enricher.log")
        started.append(enricher)
        enricher.wait_for_log('"enricher running"')
        enforcer = service(
            secured, "enforcer", work / "enforcer.log", OCELLUS_ENFORCER_POLICY_DIR=str(work)
        )
        started.append(enforcer)
        enforcer.wait_for_log('"enforcer running"')
        exporter = service(
            secured, "exporter", work / "exporter.log", OCELLUS_EXPORTER_CONFIG_FILE=str(config)
        )
        started.append(exporter)
        exporter.wait_for_log('"exporter running"')
        yield {"out": out, "services": started}
    finally:
        codes = {s.name: s.stop() for s in reversed(started)}
    assert all(code == 0 for code in codes.values()), {
        s.name: s.log()[-3000:] for s in started if codes[s.name] != 0
    }


def exported(out: Path) -> list[dict[str, Any]]:
    path = out / "events.json"
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


async def wait_for(pred: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def admin(secured: SecuredNats) -> AsyncIterator[NATS]:
    nc = await bus.connect(
        secured.url,
        name="test-admin",
        auth=bus.NatsAuth(
            user=ADMIN,
            password_file=secured.password_files[ADMIN],
            tls_ca=secured.pki.ca,
            tls_cert=secured.pki.client_cert,
            tls_key=secured.pki.client_key,
        ),
    )
    yield nc
    await nc.close()


async def test_pipeline_runs_with_only_each_services_permissions(
    secured: SecuredNats, pipeline: dict[str, Any], tmp_path: Path
) -> None:
    """An exec reaches the exporter's file and `ocellus events`; a policy applied
    with `ocellus policy` (cli user) is enforced and its event exported; the
    server logged no permissions violation."""
    out: Path = pipeline["out"]
    tag = f"ocellus-sec-{uuid.uuid4().hex[:10]}"
    # `ocellus events` as the cli user, reading the live events.
    events_log = (tmp_path / "events.out").open("w")
    watcher = await asyncio.create_subprocess_exec(
        OCELLUS, "events", "-o", "json",
        env={**os.environ, **secured.env("cli", OCELLUS_NODE_NAME=NODE)},
        stdout=events_log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Subscribed once it prints anything: execs of our own until it does (a
        # quiet host may run nothing else meanwhile).
        def printed() -> bool:
            subprocess.run(["/bin/true", "ocellus-sec-warmup"], check=True)
            return (tmp_path / "events.out").stat().st_size > 0

        await wait_for(printed, "ocellus events")
        await asyncio.to_thread(subprocess.run, ["/bin/sh", "-c", ":", tag], check=True)

        def exec_of_tag() -> list[dict[str, Any]]:
            return [
                e for e in exported(out)
                if tag in e.get("process_exec", {}).get("process", {}).get("arguments", "")
            ]  # fmt: skip

        [event] = await wait_for(exec_of_tag, "the exec at the exporter")
        assert event["node_name"] == NODE
        await wait_for(lambda: tag in (tmp_path / "events.out").read_text(), "ocellus events")
    finally:
        watcher.terminate()
        await asyncio.wait_for(watcher.wait(), 10)
        events_log.close()

    # A policy through the KV bucket (cli user) → enforcer (KV read, hooks
    # write, sensor request) → sensor → enricher (hook registry) → exporter.
    target = tmp_path / f"{tag}.txt"
    target.write_text("x")
    policy = tmp_path / "policy.yaml"
    policy.write_text(file_policy("sec-open", str(target), operator="Equal"))
    applied = await asyncio.to_thread(cli, secured, "policy", "apply", str(policy))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    try:

        def listed() -> dict[str, Any] | None:
            done = cli(secured, "policy", "list", "--json")
            assert done.returncode == 0, done.stderr
            rows = {r["name"]: r for r in map(json.loads, done.stdout.splitlines())}
            row = rows.get("sec-open")
            return row if row and row["state"] == "applied" else None

        await wait_for(lambda: listed(), "the policy applied")

        async def hook_event() -> list[dict[str, Any]]:
            await asyncio.to_thread(subprocess.run, ["cat", str(target)], capture_output=True)
            await asyncio.sleep(0.5)
            return [
                e for e in exported(out)
                if e.get("process_kprobe", {}).get("policy_name") == "sec-open"
            ]  # fmt: skip

        deadline = time.monotonic() + 20
        while not (hooks := await hook_event()) and time.monotonic() < deadline:
            pass
        assert hooks, "the policy's event never reached the exporter"
        assert hooks[0]["process_kprobe"]["args"][0]["string_arg"] == str(target)
    finally:
        deleted = await asyncio.to_thread(cli, secured, "policy", "delete", "sec-open")
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr

    await asyncio.sleep(1.0)  # heartbeats and watches after the changes
    assert secured.server.violations() == [], "\n".join(secured.server.violations())
