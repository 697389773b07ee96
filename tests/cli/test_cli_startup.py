"""The CLI's own list of event kinds is the schema's, and `ocellus policy
apply` imports only what it needs (its start-up is most of the time from the
command to the policy enforced): not the event models, not the enforcer's
compiler, not cryptography, not aiohttp, which nats-py still gets when a
WebSocket URL needs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from schemas import subjects
from schemas.events import EVENT_KINDS
from services.cli import main
from services.common.natsserver import find_binary
from tests.conftest import REPO

OCELLUS = str(Path(sys.executable).parent / "ocellus")
POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: startup-check
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {index: 1, type: string}
    selectors:
    - matchArgs:
      - {index: 1, operator: Prefix, values: ["/tmp/ocellus-startup-"]}
"""
# Modules that `policy apply` has no use for, with what each costs it.
NOT_FOR_APPLY = (
    "aiohttp",  # nats-py's WebSocket transport; 100-150 ms (SSL contexts at import)
    "cryptography",  # signing is `policy sign`; the enforcer verifies
    "schemas.events",  # the event models
    "services.enforcer.compile",  # the node compiles, the CLI only asks it to check
)


def test_cli_event_kinds_are_the_schemas() -> None:
    assert main.EVENT_KINDS == EVENT_KINDS


def test_policy_commands_do_not_import_the_event_models() -> None:
    code = (
        "import sys; from services.cli import main; "
        "main._parser().parse_args(['policy', 'list']); "
        "print('schemas.events' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "False"


def test_policy_apply_imports_only_what_it_needs(nats_url: str, tmp_path: Path) -> None:
    """The whole command, to the policy stored (no enforcer: exit 3), then
    the modules it imported."""
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    code = (
        "import json, sys; from services.cli.main import main; "
        f"rc = main(['policy', 'apply', {str(policy)!r}, '--nats-url', {nats_url!r}]); "
        "print(json.dumps([rc, sorted(sys.modules)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr
    rc, modules = json.loads(out.stdout.splitlines()[-1])
    assert rc == 3, out.stdout + out.stderr
    imported = [m for m in modules if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_APPLY)]
    assert not imported, f"`policy apply` imported {imported}"


@pytest.fixture
def websocket_url(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real nats-server with JetStream and a WebSocket listener: (ws URL, nats URL)."""
    config = tmp_path / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:-1"\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        'websocket { listen: "127.0.0.1:-1", no_tls: true }\n'
    )
    ports = tmp_path / "ports"
    ports.mkdir()
    log = tmp_path / "nats.log"
    server = subprocess.Popen(
        [find_binary(), "-c", str(config), "--ports_file_dir", str(ports), "-l", str(log)]
    )
    try:
        deadline = time.monotonic() + 10
        while not (files := list(ports.glob("*.ports"))) or "websocket" not in files[0].read_text():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "nats-server did not write its ports"
            time.sleep(0.02)
        urls = json.loads(files[0].read_text())
        yield urls["websocket"][0], urls["nats"][0]
    finally:
        server.terminate()
        server.wait(10)


async def test_policy_apply_over_websocket_imports_aiohttp_when_used(
    websocket_url: tuple[str, str], tmp_path: Path
) -> None:
    """nats-py's stand-in for aiohttp imports the real one at the first ws:// connection."""
    ws_url, nats_url = websocket_url
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    out = await asyncio.to_thread(
        subprocess.run,
        [OCELLUS, "policy", "apply", str(policy)],
        env={**os.environ, "OCELLUS_NATS_URL": ws_url, "OCELLUS_NATS_CONNECT_TIMEOUT": "5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3, out.stdout + out.stderr  # stored; no enforcer answered
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(subjects.POLICY_BUCKET)
        assert (await kv.get("startup-check")).value == POLICY.encode()
    finally:
        await nc.close()
