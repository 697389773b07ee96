"""Every policy in deploy/policies/, end to end: the enforcer applies the
directory, the sensor attaches, the enricher publishes Tetragon events into
JetStream, and each trigger command of tests/policies/triggers.py shows up
there — reported by the process the command started (or a descendant), on
the right hook, with the expected args."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from schemas import codec, subjects
from schemas.events import BPF_CMDS, GetEventsResponse
from tests.conftest import REPO, ServiceProcess, start_enricher
from tests.enforcer.enforcer_process import NODE, policies, running_enforcer, wait_until
from tests.policies.triggers import TRIGGERS

pytestmark = [pytest.mark.bpf]
DEPLOY_POLICIES = REPO / "deploy" / "policies"
TRIGGER_ENV = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture(scope="module")
def enforcer(
    sensor: ServiceProcess, module_nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    policy_dir = tmp_path_factory.mktemp("deploy-policies")
    for f in DEPLOY_POLICIES.glob("*.yaml"):
        shutil.copy(f, policy_dir)
    with running_enforcer(module_nats_url, policy_dir, tmp_path_factory.mktemp("enf")):
        yield policy_dir


@pytest.fixture(scope="module")
def enricher(
    enforcer: Path, module_nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = start_enricher(module_nats_url, tmp_path_factory.mktemp("enr") / "enricher.log")
    yield service
    assert service.stop() == 0, service.log()


@pytest.fixture
async def hook_events(
    enricher: ServiceProcess, module_nats_url: str
) -> AsyncIterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    async def on_event(msg: Any) -> None:
        body = codec.unpack(msg.data)
        body.pop("v")
        GetEventsResponse.from_json_dict(body)  # valid Tetragon JSON, strictly
        events.append(body)

    nc = await nats.connect(module_nats_url)
    for kind in (subjects.PROCESS_KPROBE, subjects.PROCESS_TRACEPOINT):
        await nc.subscribe(subjects.events(NODE, kind), cb=on_event)
    await nc.flush()
    yield events
    await nc.close()


def arg_value(arg: dict[str, Any]) -> Any:
    """A KprobeArgument's value, as triggers.py states it."""
    [(kind, value)] = [(k, v) for k, v in arg.items() if k != "label"] or [("none", None)]
    if kind in ("long_arg", "size_arg"):
        return int(value)  # 64-bit integers are strings in protobuf JSON
    if kind == "bpf_cmd_arg":
        return BPF_CMDS.index(value)
    return value


def arg_matches(want: Any, got: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(got.get(k) == v for k, v in want.items())
    if isinstance(want, str) and ":" in want and isinstance(got, str):
        try:
            return ipaddress.ip_address(want) == ipaddress.ip_address(got)
        except ValueError:
            pass
    return bool(got == want)


def hook_of(kind: str, body: dict[str, Any]) -> str:
    if kind == subjects.PROCESS_KPROBE:
        return str(body["function_name"])
    return f"{body['subsys']}:{body['event']}"


def from_command(body: dict[str, Any], root: int) -> bool:
    """Reported by the command's shell or one of its descendants."""
    chain = [body.get("process", {}), body.get("parent", {}), *body.get("ancestors", [])]
    return any(p.get("pid") == root for p in chain)


def matches(expect: dict[str, Any], event: dict[str, Any], root: int) -> bool:
    body = event.get(expect["event"])
    if body is None or hook_of(expect["event"], body) != expect["hook"]:
        return False
    args = [arg_value(a) for a in body.get("args", [])]
    return from_command(body, root) and all(
        pos < len(args) and arg_matches(want, args[pos]) for pos, want in expect["args"].items()
    )


@pytest.mark.parametrize("name", sorted(TRIGGERS), ids=lambda n: n.removesuffix(".yaml"))
async def test_deploy_policy_events_reach_jetstream(
    name: str, hook_events: list[dict[str, Any]], module_nats_url: str, tmp_path: Path
) -> None:
    policy = (DEPLOY_POLICIES / name).read_text().split("name: ", 1)[1].split("\n", 1)[0].strip()
    row = wait_until(lambda: policies(module_nats_url).get(policy), f"{policy} listed")
    assert row["state"] == "applied", row
    for entry in TRIGGERS[name]:
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", entry["command"], cwd=tmp_path, env=TRIGGER_ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 0, (entry["command"], err)
        missing = list(entry["expect"])
        for _ in range(100):
            missing = [
                e for e in missing if not any(matches(e, ev, proc.pid) for ev in hook_events)
            ]
            if not missing:
                break
            await asyncio.sleep(0.05)
        assert not missing, f"{entry['command']}\nmissing: {missing}"
        for ev in hook_events:
            body = ev.get("process_kprobe") or ev.get("process_tracepoint") or {}
            if from_command(body, proc.pid):
                assert body["policy_name"] and body["process"]["binary"], ev


def return_and_binaries_policy(watched: Path) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: opens-returned
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args:
    - {{index: 1, type: string}}
    returnArg: {{index: 0, type: int}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: Prefix, values: ["{watched}"]}}
      matchBinaries:
      - {{operator: NotIn, values: ["/usr/bin/head"]}}
"""


async def test_return_value_reported_and_binary_excluded(
    enforcer: Path, hook_events: list[dict[str, Any]], module_nats_url: str, tmp_path: Path
) -> None:
    """`return: true` reports openat's result (an fd, or -ENOENT), and matchBinaries
    NotIn leaves `head` out while `cat` is reported."""
    watched = tmp_path / "ret"
    watched.mkdir()
    (watched / "there").write_text("x\n")
    (enforcer / "returned.yaml").write_text(return_and_binaries_policy(watched))
    row = wait_until(lambda: policies(module_nats_url).get("opens-returned"), "listed")
    assert row["state"] == "applied", row

    async def run(*argv: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await proc.wait()
        return proc.pid

    cat_ok = await run("cat", str(watched / "there"))
    cat_missing = await run("cat", str(watched / "missing"))
    head = await run("head", str(watched / "there"))

    def returned(pid: int) -> list[dict[str, Any]]:
        return [
            ev["process_kprobe"]
            for ev in hook_events
            if "process_kprobe" in ev
            and ev["process_kprobe"]["process"]["pid"] == pid
            and ev["process_kprobe"]["policy_name"] == "opens-returned"
        ]

    for _ in range(100):
        if returned(cat_ok) and returned(cat_missing):
            break
        await asyncio.sleep(0.05)
    [ok] = returned(cat_ok)[:1]
    [missing] = returned(cat_missing)[:1]
    assert ok["args"][0]["string_arg"] == str(watched / "there")
    assert ok["return"]["int_arg"] >= 0
    assert missing["return"] == {"int_arg": -2}  # -ENOENT
    assert not returned(head)
    (enforcer / "returned.yaml").unlink()
    wait_until(lambda: "opens-returned" not in policies(module_nats_url), "removed")
