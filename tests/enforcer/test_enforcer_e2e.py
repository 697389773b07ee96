"""The enforcer as people run it: a real sensor and enforcer process on a real
nats-server, policies from a watched directory and from `ocellus policy`,
real processes tripping them, the sensor's raw hook records as the proof."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from schemas import subjects
from schemas.hooks import HookRegistry
from tests.conftest import RawCollector, ServiceProcess
from tests.enforcer.enforcer_process import (
    NODE,
    cat,
    cli,
    file_policy,
    policies,
    running_enforcer,
    sensor_state,
    wait_until,
)

pytestmark = [pytest.mark.bpf]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policies")


@pytest.fixture(scope="module")
def enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    with running_enforcer(module_nats_url, policy_dir, tmp_path_factory.mktemp("enf")) as s:
        yield s


def opened(raw: RawCollector, path: str) -> list[dict[str, Any]]:
    return raw.of(subjects.PROCESS_HOOK, lambda r: r["args"][0] == path and r["comm"] == "cat")


async def test_directory_policy_reports_etc_not_tmp_then_edit_flips_it(
    enforcer: ServiceProcess,
    policy_dir: Path,
    module_nats_url: str,
    raw: RawCollector,
    tmp_path: Path,
) -> None:
    """A file policy on the prefix /etc/ reports `cat /etc/hostname` with its path
    and not `cat /tmp/x`; edited on disk, it reports the new prefix within a
    second, with the same program and hook ids (map values only)."""
    other = tmp_path / "x"
    other.write_text("x")
    (policy_dir / "etc.yaml").write_text(file_policy("etc-reads", "/etc/"))
    row = wait_until(lambda: policies(module_nats_url).get("etc-reads"), "etc-reads listed")
    assert row["state"] == "applied", row
    assert row["hooks"][0]["tracepoint"] == "syscalls:sys_enter_openat"
    assert row["hooks"][0]["prefiltered"] is True  # one Prefix: the string prefilter's case
    before = await sensor_state(module_nats_url)

    pid = await cat("/etc/hostname")
    await cat(other)
    hostname = lambda r: r["pid"] == pid and r["args"][0] == "/etc/hostname"  # noqa: E731
    [rec] = (await raw.wait_for(subjects.PROCESS_HOOK, hostname))[:1]
    assert rec["hook_id"] == row["hooks"][0]["id"]
    await asyncio.sleep(0.3)
    assert not opened(raw, str(other))

    (policy_dir / "etc.yaml").write_text(file_policy("etc-reads", str(tmp_path)))
    edited = time.monotonic()
    while time.monotonic() - edited < 1.0:
        await cat(other)
        if opened(raw, str(other)):
            break
        await asyncio.sleep(0.05)
    assert opened(raw, str(other)), "the edited policy did not take effect within a second"
    after = policies(module_nats_url)["etc-reads"]
    assert after["hooks"][0]["id"] == row["hooks"][0]["id"]
    assert after["revision"] != row["revision"]
    state = await sensor_state(module_nats_url)
    assert state["program_id"] == before["program_id"]
    assert state["args_program_id"] == before["args_program_id"]
    (policy_dir / "etc.yaml").unlink()
    wait_until(lambda: "etc-reads" not in policies(module_nats_url), "etc-reads removed")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (file_policy("bad-op", "/x", operator="Foo"), "operator 'Foo' is not supported"),
        (
            file_policy("too-many", "/x").replace(
                "    - matchArgs:",
                "    - matchPIDs:\n      - {operator: In, values: "
                + str(list(range(1, 13)))
                + "}\n      matchArgs:",
            ),
            "12 PIDs: at most 8 are matched in the kernel",
        ),
        (
            file_policy("no-kprobes", "/x").replace(
                "call: sys_openat\n    syscall: true",
                "call: security_file_open\n    syscall: false",
            ),
            "needs kprobes",
        ),
    ],
    ids=["unknown-operator", "too-many-values", "hook-this-kernel-lacks"],
)
async def test_bad_policy_is_refused_and_running_ones_keep_working(
    enforcer: ServiceProcess,
    policy_dir: Path,
    module_nats_url: str,
    raw: RawCollector,
    tmp_path: Path,
    text: str,
    message: str,
) -> None:
    watched = tmp_path / "watched"
    watched.write_text("w")
    (policy_dir / "good.yaml").write_text(file_policy("good", str(watched)))
    wait_until(lambda: policies(module_nats_url).get("good", {}).get("state") == "applied", "good")
    bad = policy_dir / "bad.yaml"
    bad.write_text(text)
    name = text.split("name: ", 1)[1].split("\n", 1)[0]
    row = wait_until(lambda: policies(module_nats_url).get(name), f"{name} listed")
    assert row["state"] == "error" and message in row["error"], row
    assert not row["hooks"]

    pid = await cat(watched)
    assert await raw.wait_for(subjects.PROCESS_HOOK, lambda r: r["pid"] == pid)
    bad.unlink()
    (policy_dir / "good.yaml").unlink()
    wait_until(lambda: not policies(module_nats_url), "policies removed")


async def test_policy_cli_apply_list_delete(
    enforcer: ServiceProcess, module_nats_url: str, raw: RawCollector, tmp_path: Path
) -> None:
    """`ocellus policy apply` checks on the node, stores in KV, reports it applied;
    a refused policy changes nothing; `delete` removes it."""
    watched = tmp_path / "kv-watched"
    watched.write_text("k")
    good = tmp_path / "kv.yaml"
    good.write_text(file_policy("kv-reads", str(watched)))
    out = cli(module_nats_url, "apply", str(good))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "applied on node test.node" in out.stdout
    pid = await cat(watched)
    assert await raw.wait_for(subjects.PROCESS_HOOK, lambda r: r["pid"] == pid)

    bad = tmp_path / "bad.yaml"
    bad.write_text(file_policy("kv-reads", str(watched), operator="Postfixx"))
    out = cli(module_nats_url, "apply", str(bad))
    assert out.returncode == 1 and "Postfixx" in out.stderr and "nothing was changed" in out.stderr
    assert policies(module_nats_url)["kv-reads"]["state"] == "applied"

    table = cli(module_nats_url, "list")
    assert table.returncode == 0 and "kv-reads" in table.stdout and "applied" in table.stdout
    out = cli(module_nats_url, "delete", "kv-reads")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kv-reads" not in policies(module_nats_url)
    assert cli(module_nats_url, "delete", "kv-reads").returncode == 1


async def test_registry_names_every_hook_for_the_enricher(
    enforcer: ServiceProcess, policy_dir: Path, module_nats_url: str
) -> None:
    (policy_dir / "reg.yaml").write_text(file_policy("reg", "/nonexistent/"))
    row = wait_until(lambda: policies(module_nats_url).get("reg"), "reg listed")
    nc = await nats.connect(module_nats_url)
    try:
        kv = await nc.jetstream().key_value(subjects.HOOK_BUCKET)
        registry = HookRegistry.unpack((await kv.get(subjects.node_token(NODE))).value)
    finally:
        await nc.close()
    info = registry.hooks[row["hooks"][0]["id"]]
    assert (info.policy, info.kind, info.function_name) == (
        "reg",
        "process_kprobe",
        "__x64_sys_openat",
    )
    assert [a.type for a in info.args] == ["string", "int"]
    (policy_dir / "reg.yaml").unlink()
    wait_until(lambda: "reg" not in policies(module_nats_url), "reg removed")
