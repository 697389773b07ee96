"""Signed policies: with trusted keys configured, the enforcer applies only
policies signed by one of them (`ocellus policy keygen` / `sign`); an unsigned,
tampered or foreign-signed one is refused, nothing of it applied, and an
audit event says so on ocellus.alerts.<node>."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import subjects
from tests.conftest import REPO, ServiceProcess
from tests.enforcer.enforcer_process import (
    NODE,
    collected,
    file_policy,
    policies,
    running_enforcer,
    wait_until,
)

pytestmark = [pytest.mark.bpf]


def ocellus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "policy", *args],
        capture_output=True, text=True, cwd=REPO, timeout=30, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    trusted = tmp_path_factory.mktemp("trusted")
    made = {}
    for name in ("ops", "stranger"):
        out = ocellus("keygen", str(trusted / name))
        assert out.returncode == 0, out.stderr
        made[name] = trusted / name
    (trusted / "stranger.pub").rename(trusted.parent / "stranger.pub")  # not trusted
    assert oct((trusted / "ops").stat().st_mode & 0o777) == "0o600"
    assert ocellus("keygen", str(trusted / "ops")).returncode == 1  # never overwritten
    return made


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signed-policies")


@pytest.fixture(scope="module")
def enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    keys: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    trusted = {"OCELLUS_ENFORCER_TRUSTED_KEYS_DIR": str(keys["ops"].parent)}
    logs = tmp_path_factory.mktemp("enf")
    with running_enforcer(module_nats_url, policy_dir, logs, **trusted) as service:
        yield service


@pytest.fixture
async def alerts(module_nats_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    async with collected(module_nats_url, subjects.alerts(NODE)) as got:
        yield got


def signed(path: Path, key: Path, name: str) -> Path:
    path.write_text(file_policy(name, "/nonexistent-signed/"))
    out = ocellus("sign", str(path), "--key", str(key))
    assert out.returncode == 0, out.stderr
    assert path.read_text().splitlines()[-1].startswith("# ocellus-signature: ed25519 ")
    return path


async def test_signed_policy_applies_and_the_rest_is_refused_with_an_audit_event(
    enforcer: ServiceProcess,
    policy_dir: Path,
    keys: dict[str, Path],
    module_nats_url: str,
    alerts: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    # Signed elsewhere, then moved in whole, as an operator would: a file
    # signed in place is seen unsigned first (and refused until it changes).
    signed(tmp_path / "good.yaml", keys["ops"], "good-signed").replace(policy_dir / "good.yaml")
    row = wait_until(lambda: policies(module_nats_url).get("good-signed"), "good listed")
    assert row["state"] == "applied", row

    (policy_dir / "unsigned.yaml").write_text(file_policy("unsigned", "/x/"))
    foreign = signed(tmp_path / "foreign.yaml", keys["stranger"], "foreign")
    (policy_dir / "foreign.yaml").write_bytes(foreign.read_bytes())
    tampered = signed(tmp_path / "tampered.yaml", keys["ops"], "tampered")
    text = tampered.read_text().replace("/nonexistent-signed/", "/etc/")
    (policy_dir / "tampered.yaml").write_text(text)

    expected = {
        "unsigned": "is not signed",
        "foreign": "which is not trusted here",
        "tampered": "was changed after signing",
    }
    for name, why in expected.items():
        row = wait_until(lambda n=name: policies(module_nats_url).get(n), f"{name} listed")
        assert row["state"] == "error" and why in row["error"], row
        assert not row["hooks"]

    def audited() -> dict[str, dict[str, Any]]:
        # The sensor's watchdog reports on this subject too (kind bpf_program, ...).
        return {a["message"].split("'")[1]: a for a in alerts if a["kind"] == "policy_signature"}

    for _ in range(50):
        if len(audited()) >= 3:
            break
        await asyncio.sleep(0.1)
    assert set(audited()) >= set(expected), alerts
    assert policies(module_nats_url)["good-signed"]["state"] == "applied"


def test_cli_check_reports_an_unsigned_policy_before_storing_it(
    enforcer: ServiceProcess, module_nats_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(file_policy("plain", "/x/"))
    env = {**os.environ, "OCELLUS_NATS_URL": module_nats_url, "OCELLUS_NODE_NAME": NODE}
    out = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "policy", "apply", str(path)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "is not signed" in out.stderr, out.stderr
    assert "plain" not in policies(module_nats_url)
