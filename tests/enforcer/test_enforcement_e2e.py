"""Kills in the kernel, end to end: a Sigkill policy from the enforcer's
directory kills the reader of a protected file before the read returns; the
events say who did it and how the process died; `ocellus policy mode`
switches to monitor (reported, not killed) and back, in place; an invalid
change leaves enforcement as it was; deleting the policy stops the kills."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import subjects
from tests.conftest import ServiceProcess
from tests.enforcer.enforcer_process import (
    NODE,
    cli,
    collected,
    policies,
    running_enforcer,
    wait_until,
)

pytestmark = [pytest.mark.bpf]


def kill_policy(path: Path, operator: str = "Equal") -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: protect
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    message: "protected file opened"
    args:
    - {{index: 1, type: string}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: {operator}, values: ["{path}"]}}
      matchActions:
      - {{action: Sigkill}}
"""


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kill-policies")


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "protected"
    path.write_text("secret\n")
    return path


@pytest.fixture(scope="module")
def enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    logs = tmp_path_factory.mktemp("enf")
    with running_enforcer(module_nats_url, policy_dir, logs, enricher=True) as service:
        yield service


@pytest.fixture
async def events(module_nats_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    async with collected(module_nats_url, subjects.events_all(NODE)) as got:
        yield got


async def cat(path: Path) -> tuple[int, int]:
    proc = await asyncio.create_subprocess_exec(
        "cat", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    if proc.returncode == 0:
        assert out == b"secret\n"
    return proc.pid, proc.returncode


async def find(
    events: list[dict[str, Any]], kind: str, pid: int, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in events:
            body = ev.get(kind)
            if body and body["process"]["pid"] == pid:
                return dict(body)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} of pid {pid}")


async def switch_and_wait(
    nats_url: str, mode: str, protected: Path, killed: bool, within: float = 1.0
) -> float:
    """Switch modes with the CLI; the seconds until a reader's fate shows it."""
    out = await asyncio.to_thread(cli, nats_url, "mode", "protect", mode)
    assert out.returncode == 0, out.stdout + out.stderr
    started = time.monotonic()
    while True:
        _, code = await cat(protected)
        if (code == -signal.SIGKILL) == killed:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"mode {mode} not in effect within {within}s"
        await asyncio.sleep(0.02)


async def test_sigkill_enforced_switched_to_monitor_and_back(
    enforcer: ServiceProcess,
    policy_dir: Path,
    protected: Path,
    module_nats_url: str,
    events: list[dict[str, Any]],
) -> None:
    (policy_dir / "protect.yaml").write_text(kill_policy(protected))
    row = wait_until(lambda: policies(module_nats_url).get("protect"), "protect listed")
    assert (row["state"], row["mode"]) == ("applied", "enforce"), row
    assert any("call itself completes" in n for n in row["notes"])

    pid, code = await cat(protected)
    assert code == -signal.SIGKILL
    hit = await find(events, "process_kprobe", pid)
    assert hit["action"] == "KPROBE_ACTION_SIGKILL" and hit["policy_name"] == "protect"
    assert hit["args"][0]["string_arg"] == str(protected)
    assert (await find(events, "process_exit", pid)).get("signal") == "SIGKILL"
    assert policies(module_nats_url)["protect"]["counters"]["signalled"] >= 1

    await switch_and_wait(module_nats_url, "monitor", protected, killed=False)
    row = policies(module_nats_url)["protect"]
    assert row["mode"] == "monitor" and row["hooks"][0]["id"] == row["hooks"][0]["id"]
    pid, code = await cat(protected)
    assert code == 0
    seen = await find(events, "process_kprobe", pid)
    assert seen["action"] == "KPROBE_ACTION_POST"
    assert seen["message"] == "protected file opened [monitor mode: would SIGKILL]"
    # each match that would have killed counts as monitored, and none as signalled
    counters = policies(module_nats_url)["protect"]["counters"]
    assert counters["monitored"] >= 2, counters  # switch_and_wait's reader and this one
    signalled = counters["signalled"]
    await cat(protected)
    counters = policies(module_nats_url)["protect"]["counters"]
    assert counters["signalled"] == signalled and counters["monitored"] >= 3, counters

    await switch_and_wait(module_nats_url, "enforce", protected, killed=True)
    after = policies(module_nats_url)["protect"]
    assert after["mode"] == "enforce"
    assert [h["id"] for h in after["hooks"]] == [h["id"] for h in row["hooks"]]


async def test_invalid_change_keeps_enforcing_and_delete_stops(
    enforcer: ServiceProcess, policy_dir: Path, protected: Path, module_nats_url: str
) -> None:
    (policy_dir / "protect.yaml").write_text(kill_policy(protected))
    wait_until(lambda: policies(module_nats_url).get("protect", {}).get("state") == "applied", "up")
    (policy_dir / "protect.yaml").write_text(kill_policy(protected, operator="Equalz"))
    row = wait_until(
        lambda: (
            policies(module_nats_url)["protect"]["state"] == "stale"
            and policies(module_nats_url)["protect"]
        ),
        "change refused",
    )
    assert "Equalz" in row["error"]
    assert (await cat(protected))[1] == -signal.SIGKILL

    (policy_dir / "protect.yaml").unlink()
    wait_until(lambda: "protect" not in policies(module_nats_url), "protect removed")
    assert (await cat(protected))[1] == 0


def test_exec_deny_kills_before_the_binary_runs(
    enforcer: ServiceProcess, policy_dir: Path, module_nats_url: str, tmp_path: Path
) -> None:
    """A denied binary whose first act would create a file: across 1,000 execs
    every caller dies at execve's entry, and no file ever appears."""
    denied = tmp_path / "denied-touch"
    denied.write_bytes(Path("/usr/bin/touch").read_bytes())
    denied.chmod(0o755)
    marker = tmp_path / "ran"
    (policy_dir / "deny-exec.yaml").write_text(f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: deny-exec
spec:
  kprobes:
  - call: sys_execve
    syscall: true
    args:
    - {{index: 0, type: string}}
    selectors:
    - matchArgs:
      - {{index: 0, operator: Equal, values: ["{denied}"]}}
      matchActions:
      - {{action: Sigkill}}
""")
    wait_until(
        lambda: policies(module_nats_url).get("deny-exec", {}).get("state") == "applied", "up"
    )
    codes = _exec_many([str(denied), str(marker)], 1000)
    assert codes == {-signal.SIGKILL: 1000}
    assert not marker.exists()
    assert policies(module_nats_url)["deny-exec"]["counters"]["signalled"] >= 1000
    (policy_dir / "deny-exec.yaml").unlink()
    wait_until(lambda: "deny-exec" not in policies(module_nats_url), "deny-exec removed")
    assert subprocess.run([str(denied), str(marker)], check=False).returncode == 0
    assert marker.exists()  # the same exec, allowed, does create it


def _exec_many(argv: list[str], n: int) -> dict[int, int]:
    codes: dict[int, int] = {}
    for _ in range(n):
        code = subprocess.run(argv, check=False, stderr=subprocess.DEVNULL).returncode
        codes[code] = codes.get(code, 0) + 1
    return codes
