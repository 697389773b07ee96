"""Scoped policies, end to end with real containers and real kills: a policy
limited to containers (containerSelector), to pods (podSelector,
TracingPolicyNamespaced from CRI labels) or to the host (hostSelector: {})
kills the reader of a file where it applies and nowhere else; containers
started later join within a second, removed ones leave the set."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceProcess
from tests.docker_fixtures import DockerDaemon
from tests.enforcer.enforcer_process import policies, running_enforcer, wait_until

pytestmark = [pytest.mark.bpf, pytest.mark.docker]

SIGKILLED = 137  # docker exec's exit status, a shell's too, for a process killed by SIGKILL
RUN_ID = secrets.token_hex(4)
SECRET = f"/tmp/ocellus-scope-{RUN_ID}"  # the same path on the host and in each container


def scoped_policy(name: str, scope: str, kind: str = "TracingPolicy", meta: str = "") -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: {kind}
metadata:
  name: {name}
{meta}spec:
{scope}
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {{index: 1, type: string}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: Equal, values: ["{SECRET}"]}}
      matchActions:
      - {{action: Sigkill}}
"""


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scoped-policies")


@pytest.fixture(scope="module")
def enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    docker_daemon: DockerDaemon,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    socket = {"OCELLUS_ENFORCER_DOCKER_SOCKET": str(docker_daemon.socket)}
    logs = tmp_path_factory.mktemp("enforcer")
    Path(SECRET).write_text("secret\n")
    try:
        with running_enforcer(module_nats_url, policy_dir, logs, **socket) as service:
            yield service
    finally:
        Path(SECRET).unlink()


class Containers:
    """Busybox containers with the secret at SECRET; removed at the end."""

    def __init__(self, docker: DockerDaemon) -> None:
        self.docker = docker
        self.ids: list[str] = []

    def start(self, name: str, labels: dict[str, str] | None = None) -> str:
        cid = self.docker.run(
            "run", "-d", "--name", name,
            *(a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")),
            "ocellus-test-busybox", "sh", "-c", f"echo secret > {SECRET}; exec sleep 300",
        )  # fmt: skip
        self.ids.append(cid)
        deadline = time.monotonic() + 10
        while self.cat(cid) not in (0, SIGKILLED):  # the file is there (or reading it kills)
            assert time.monotonic() < deadline, f"container {name}: no {SECRET}"
            time.sleep(0.05)
        return cid

    def cat(self, cid: str) -> int:
        """``cat SECRET`` in the container (docker exec); its exit status."""
        done = subprocess.run(
            [self.docker.cli, "exec", cid, "cat", SECRET], capture_output=True, timeout=30
        )
        return done.returncode

    def remove(self, cid: str) -> None:
        self.docker.run("rm", "-f", cid)
        self.ids.remove(cid)


@pytest.fixture
def containers(docker_daemon: DockerDaemon, busybox_image: str) -> Iterator[Containers]:
    made = Containers(docker_daemon)
    yield made
    for cid in list(made.ids):
        made.remove(cid)


def host_cat() -> int:
    done = subprocess.run(["cat", SECRET], capture_output=True, timeout=10)
    return done.returncode if done.returncode >= 0 else 128 - done.returncode


def apply(policy_dir: Path, nats_url: str, name: str, text: str) -> dict[str, object]:
    (policy_dir / f"{name}.yaml").write_text(text)
    row = wait_until(
        lambda: (r := policies(nats_url).get(name)) and r["state"] != "pending" and r,
        what=f"policy {name} applied",
    )
    assert row["state"] == "applied", row
    return dict(row)


def delete(policy_dir: Path, nats_url: str, name: str) -> None:
    (policy_dir / f"{name}.yaml").unlink()
    wait_until(lambda: name not in policies(nats_url), what=f"policy {name} removed")


def test_container_scope_kills_inside_the_container_only(
    enforcer: ServiceProcess, module_nats_url: str, policy_dir: Path, containers: Containers
) -> None:
    """containerSelector name: the same cat is killed in that container, not in
    another container and not on the host."""
    target = containers.start(f"scoped-{RUN_ID}")
    other = containers.start(f"other-{RUN_ID}")
    assert containers.cat(target) == 0 and host_cat() == 0  # nothing applies yet
    scope = f"  containerSelector:\n    matchLabels: {{name: scoped-{RUN_ID}}}"
    row = apply(policy_dir, module_nats_url, "in-container", scoped_policy("in-container", scope))
    assert row["scope"]["host"] is False and row["scope"]["cgroups"] >= 1  # type: ignore[index]
    try:
        assert containers.cat(target) == SIGKILLED
        assert containers.cat(other) == 0
        assert host_cat() == 0
    finally:
        delete(policy_dir, module_nats_url, "in-container")
    assert containers.cat(target) == 0  # deleting the policy stops the kills


def test_container_started_later_joins_within_a_second_and_leaves_when_removed(
    enforcer: ServiceProcess, module_nats_url: str, policy_dir: Path, containers: Containers
) -> None:
    """A matching container started after the policy is killed-in within 1 s of
    its start; once removed, its cgroups leave the scope's set."""
    later = f"later-{RUN_ID}"
    scope = (
        "  containerSelector:\n    matchExpressions:\n"
        f"    - {{key: name, operator: In, values: [{later}]}}"
    )
    apply(policy_dir, module_nats_url, "later", scoped_policy("later", scope))
    try:
        assert policies(module_nats_url)["later"]["scope"]["cgroups"] == 0
        cid = containers.docker.run(
            "run", "-d", "--name", later, "ocellus-test-busybox", "sh", "-c",
            f"echo secret > {SECRET}; exec sleep 300",
        )  # fmt: skip
        started = time.monotonic()
        containers.ids.append(cid)
        while (code := containers.cat(cid)) != SIGKILLED:
            assert code in (0, 1), code  # 1: the file is not written yet
            assert time.monotonic() - started < 1.0, "not scoped within a second"
        joined = time.monotonic() - started
        print(f"container start to first kill inside it: {joined * 1000:.0f} ms")
        assert policies(module_nats_url)["later"]["scope"]["cgroups"] >= 1
        containers.remove(cid)
        wait_until(
            lambda: policies(module_nats_url)["later"]["scope"]["cgroups"] == 0,
            what="removed container's cgroups out of the set",
            timeout=2.0,
        )
    finally:
        delete(policy_dir, module_nats_url, "later")


@pytest.mark.parametrize(
    ("kind", "scope", "meta"),
    [
        pytest.param(
            "TracingPolicy",
            "  podSelector:\n    matchLabels: {app: shop-web}",
            "",
            id="podSelector",
        ),
        pytest.param("TracingPolicyNamespaced", "", "  namespace: shop\n", id="namespaced"),
    ],
)
def test_pod_scope_from_cri_labels(
    enforcer: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    containers: Containers,
    kind: str,
    scope: str,
    meta: str,
) -> None:
    """Pods are what the CRI labels say: the policy kills in the pod it selects,
    not in another namespace's pod nor in a plain container with the label."""
    cri = {
        "io.kubernetes.pod.name": "web-1",
        "io.kubernetes.container.name": "web",
        "app": "shop-web",
    }
    shop = containers.start(f"shop-{RUN_ID}", {**cri, "io.kubernetes.pod.namespace": "shop"})
    elsewhere = containers.start(f"dev-{RUN_ID}", {**cri, "io.kubernetes.pod.namespace": "dev"})
    plain = containers.start(f"plain-{RUN_ID}", {"app": "shop-web"})
    text = scoped_policy("pods", scope, kind, meta)
    apply(policy_dir, module_nats_url, "pods", text)
    try:
        assert containers.cat(shop) == SIGKILLED
        assert containers.cat(plain) == 0
        assert host_cat() == 0
        if kind == "TracingPolicyNamespaced":
            assert containers.cat(elsewhere) == 0
        else:
            assert containers.cat(elsewhere) == SIGKILLED  # podSelector spans namespaces
    finally:
        delete(policy_dir, module_nats_url, "pods")


def test_host_only_scope_kills_on_the_host_not_in_containers(
    enforcer: ServiceProcess, module_nats_url: str, policy_dir: Path, containers: Containers
) -> None:
    """hostSelector: {} alone: the host's cat is killed, a container's is not."""
    cid = containers.start(f"hostonly-{RUN_ID}")
    row = apply(
        policy_dir, module_nats_url, "host-only", scoped_policy("host-only", "  hostSelector: {}")
    )
    assert row["scope"]["host"] is True  # type: ignore[index]
    try:
        assert host_cat() == SIGKILLED
        assert containers.cat(cid) == 0
    finally:
        delete(policy_dir, module_nats_url, "host-only")
    assert host_cat() == 0


def test_scoped_policy_errors_name_the_path(
    enforcer: ServiceProcess, module_nats_url: str, policy_dir: Path
) -> None:
    """A scope Ocellus cannot honour is refused naming its YAML path."""
    text = scoped_policy(
        "bad-scope",
        "  hostSelector: {}",
        meta="  annotations: {ocellus.io/scope: reactive}\n",
    )
    (policy_dir / "bad-scope.yaml").write_text(text)
    row = wait_until(lambda: policies(module_nats_url).get("bad-scope"), what="bad-scope row")
    try:
        assert row["state"] == "error"
        assert "spec.hostSelector: a reactive policy applies in the containers" in row["error"]
    finally:
        delete(policy_dir, module_nats_url, "bad-scope")
