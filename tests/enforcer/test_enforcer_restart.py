"""Enforcement outlives the enforcer: hooks stay in the pinned maps while it is
down, and the next enforcer adopts them (same hook ids, no gap) or removes
those no policy defines any more."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas import subjects
from tests.conftest import RawCollector, ServiceProcess
from tests.enforcer.enforcer_process import NODE, cat, file_policy, policies, wait_until

pytestmark = [pytest.mark.bpf]


def start_enforcer(nats_url: str, policy_dir: Path, log: Path) -> ServiceProcess:
    env = {
        "OCELLUS_NATS_URL": nats_url,
        "OCELLUS_NODE_NAME": NODE,
        "OCELLUS_ENFORCER_POLICY_DIR": str(policy_dir),
    }
    service = ServiceProcess("enforcer", env, log)
    service.wait_for_log('"enforcer running"')
    return service


async def test_restart_keeps_enforcing_and_adopts(
    sensor: ServiceProcess, module_nats_url: str, raw: RawCollector, tmp_path: Path
) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    watched, dropped = tmp_path / "kept", tmp_path / "dropped"
    watched.write_text("k")
    dropped.write_text("d")
    (policy_dir / "kept.yaml").write_text(file_policy("kept", str(watched)))
    (policy_dir / "dropped.yaml").write_text(file_policy("dropped", str(dropped)))
    first = start_enforcer(module_nats_url, policy_dir, tmp_path / "first.log")
    rows = wait_until(lambda: len(policies(module_nats_url)) == 2 and policies(module_nats_url),
                      "both applied")  # fmt: skip
    kept_id = rows["kept"]["hooks"][0]["id"]
    assert first.stop() == 0, first.log()

    # No enforcer: the kernel goes on reporting from the maps.
    pid = await cat(watched)
    assert await raw.wait_for(subjects.PROCESS_HOOK, lambda r: r["pid"] == pid)

    (policy_dir / "dropped.yaml").unlink()
    second = start_enforcer(module_nats_url, policy_dir, tmp_path / "second.log")
    try:
        rows = policies(module_nats_url)
        assert set(rows) == {"kept"}
        assert rows["kept"]["hooks"][0]["id"] == kept_id
        assert '"adopted_hooks": 2' in second.log() or '"adopted_hooks":2' in second.log()
        raw.records.clear()
        await cat(dropped)
        pid = await cat(watched)
        assert await raw.wait_for(subjects.PROCESS_HOOK, lambda r: r["pid"] == pid)
        await asyncio.sleep(0.3)
        assert not raw.of(subjects.PROCESS_HOOK, lambda r: r["args"][0] == str(dropped))
    finally:
        (policy_dir / "kept.yaml").unlink()
        wait_until(lambda: not policies(module_nats_url), "policies removed")
        assert second.stop() == 0, second.log()
