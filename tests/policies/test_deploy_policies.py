"""The ready-to-use policies in deploy/policies/: each loads, plans against this
kernel's tracefs and compiles to slot configs, and each hook fires on the trigger
commands of tests/policies/triggers.py, run for real, with the expected args in the
records read from the real ring buffer (the engine of tests/hook_engine.py)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import Policy, load_policy
from schemas.policy.hooks import AnyHook
from services.common.hostfs import cgroup2_root
from services.enforcer.compile import compile_selectors
from services.enforcer.plan import PlannedHook, plan_hooks
from services.sensor.hook_records import HOOK_ARGS, HOOK_SLOTS, SlotConfig
from services.sensor.mounts import TRACEFS, ensure_mounted
from tests.hook_engine import NO_KPROBES, Engine, engine
from tests.policies.triggers import TRIGGERS

__all__ = ["engine"]  # the fixture, used by name

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "policies"
POLICY_FILES = sorted(DEPLOY.glob("*.yaml"))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Commands that each policy must NOT report: what its filters are there to leave out.
QUIET: dict[str, list[str]] = {
    # Reads outside the secrets, writes outside system directories.
    "file-access.yaml": [
        "cat /etc/hostname /etc/passwd > /dev/null",
        "echo x > /tmp/ocellus-quiet && chmod 644 /tmp/ocellus-quiet && rm /tmp/ocellus-quiet",
    ],
    # An AF_UNIX connect (addrlen is not 16 or 28).
    "network.yaml": [
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); "
        's.connect_ex("/tmp/ocellus-quiet.sock")\''
    ],
    # Dropping to a non-root uid, and ptrace requests that only read.
    "privileges.yaml": [
        "python3 -c 'import os; os.setresgid(65534, 65534, 65534); "
        "os.setresuid(65534, 65534, 65534)'"
    ],
    "kernel-modules.yaml": ["true"],
    # A map lookup (BPF_MAP_LOOKUP_ELEM, 1) on a bad fd.
    "bpf.yaml": ["python3 -c 'import ctypes; ctypes.CDLL(None).syscall(321, 1, None, 0)'"],
}


@pytest.fixture(scope="module", autouse=True)
def tracefs() -> None:
    """tracefs mounted, as the sensor makes sure it is."""
    ensure_mounted("tracefs", TRACEFS)


@dataclass(frozen=True)
class CompiledHook:
    planned: PlannedHook
    hook: AnyHook
    slots: list[SlotConfig]

    @property
    def name(self) -> str:
        """The name TRIGGERS uses: the kprobe's function, or subsystem:event."""
        fmt = self.planned.tracepoint
        return self.planned.function_name or f"{fmt.subsystem}:{fmt.event}"


def load(path: Path) -> Policy:
    return load_policy(path.read_text(), source=path.name)


def compiled(path: Path) -> list[CompiledHook]:
    """Every hook of a deploy policy planned against the real tracefs and compiled."""
    policy = load(path)
    hooks = dict(policy.spec.hooks())
    planned = plan_hooks(policy.metadata.name, policy.spec, NO_KPROBES)
    return [
        CompiledHook(p, hooks[p.path], compile_selectors(policy.metadata.name, p, hooks[p.path]))
        for p in planned
    ]


def test_deploy_policies_exist() -> None:
    """There is a policy per event family, and a trigger table entry for each."""
    names = {p.name for p in POLICY_FILES}
    assert {"file-access.yaml", "network.yaml", "privileges.yaml", "bpf.yaml"} <= names
    assert names == set(TRIGGERS) == set(QUIET)


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_deploy_policy_plans_and_compiles(path: Path) -> None:
    """Loads unchanged, every hook plans on this kernel and compiles within the kernel's
    limits, and carries a message and tags."""
    policy = load(path)
    assert policy.metadata.name == path.stem
    hooks = compiled(path)
    assert len(hooks) == len(list(policy.spec.hooks()))
    for h in hooks:
        assert h.hook.message and h.hook.tags, h.planned.path
        assert len(h.planned.args) <= HOOK_ARGS
        assert 1 <= len(h.slots) <= HOOK_SLOTS
        assert h.planned.tracepoint.id > 0


def test_deploy_policies_fit_together() -> None:
    """All deploy policies at once fit in the per-tracepoint slots, leaving room."""
    used: Counter[str] = Counter()
    for path in POLICY_FILES:
        for h in compiled(path):
            used[f"{h.planned.tracepoint.subsystem}:{h.planned.tracepoint.event}"] += len(h.slots)
    assert used and max(used.values()) <= HOOK_SLOTS - 1, used.most_common(3)


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_triggers_cover_every_hook(path: Path) -> None:
    """Every hook of a deploy policy is the target of at least one expected event,
    and every expected event names a hook and args that the policy has."""
    hooks = compiled(path)
    nargs = {h.name: len(h.planned.args) for h in hooks}
    expected = [e for t in TRIGGERS[path.name] for e in t["expect"]]
    assert {h.name for h in hooks} == {e["hook"] for e in expected}
    for e in expected:
        assert all(0 <= pos < nargs[e["hook"]] for pos in e["args"]), e
        assert e["event"] == next(h.planned.event_kind for h in hooks if h.name == e["hook"])


# --- firing, against the real kernel -------------------------------------------------------


@pytest.fixture(scope="module")
def cgroup_root() -> Path:
    """The cgroup v2 mount: each trigger runs in a cgroup of its own, and only its
    records count."""
    root = cgroup2_root()
    if root is None:
        pytest.fail("no cgroup2 mount: mount -t cgroup2 none /sys/fs/cgroup/unified")
    return root


class Trigger:
    """One command run as `sh -c` in a fresh cgroup; its id is the cgroup's inode."""

    def __init__(self, root: Path, command: str) -> None:
        self.dir = root / f"ocellus-trigger-{uuid.uuid4().hex[:12]}"
        self.dir.mkdir()
        self.cgroup_id = self.dir.stat().st_ino
        self.command = command

    def run(self) -> subprocess.CompletedProcess[str]:
        # The shell moves itself into the cgroup, then runs the command (in a child
        # shell, so that the move is done before anything of the command runs).
        wrapper = f'echo $$ > {self.dir}/cgroup.procs && exec sh -c "$0"'
        return subprocess.run(
            ["sh", "-c", wrapper, self.command],
            env={**os.environ, "PATH": SYSTEM_PATH},
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/tmp",
            check=False,
        )

    def close(self) -> None:
        for _ in range(50):  # the cgroup empties once its last process is reaped
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.02)


@pytest.fixture
def trigger_in(cgroup_root: Path) -> Iterator[Any]:
    made: list[Trigger] = []

    def make(command: str) -> Trigger:
        made.append(Trigger(cgroup_root, command))
        return made[-1]

    yield make
    for t in made:
        t.close()


def arg_matches(want: Any, got: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(got.get(k) == v for k, v in want.items())
    if isinstance(want, str) and ":" in want and isinstance(got, str):
        try:
            return ipaddress.ip_address(want) == ipaddress.ip_address(got)
        except ValueError:
            pass
    return bool(got == want)


def event_matches(expect: dict[str, Any], rec: dict[str, Any], names: dict[int, str]) -> bool:
    if names.get(rec["hook_id"]) != expect["hook"]:
        return False
    args = rec["args"]
    return all(pos < len(args) and arg_matches(v, args[pos]) for pos, v in expect["args"].items())


def attach_policy(engine: Engine, path: Path) -> dict[int, str]:
    """Every hook of the policy placed in the engine; hook id -> hook name."""
    names: dict[int, str] = {}
    try:
        for h in compiled(path):
            names[engine.table.attach(h.planned, h.slots)] = h.name
    except BaseException:
        detach(engine, names)
        raise
    return names


def detach(engine: Engine, names: dict[int, str]) -> None:
    for hook_id in names:
        engine.table.detach(hook_id)


@pytest.mark.bpf
@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_deploy_policy_fires_on_its_triggers(engine: Engine, trigger_in: Any, path: Path) -> None:
    """Each trigger command of the policy makes every expected event be reported by
    the process it started, with the expected args, on the policy's own hooks."""
    names = attach_policy(engine, path)
    try:
        for entry in TRIGGERS[path.name]:
            trigger = trigger_in(entry["command"])
            done = trigger.run()
            assert done.returncode == 0, (entry["command"], done.stderr)
            mine = lambda r, t=trigger: r["cgroup_id"] == t.cgroup_id and r["hook_id"] in names  # noqa: E731
            missing = list(entry["expect"])
            deadline = time.monotonic() + 3.0
            while missing and time.monotonic() < deadline:
                engine.drain()
                seen = [r for r in engine.hooks if mine(r)]
                missing = [e for e in missing if not any(event_matches(e, r, names) for r in seen)]
                time.sleep(0.02)
            reported = [(names[r["hook_id"]], r["args"]) for r in engine.hooks if mine(r)]
            assert not missing, f"{entry['command']}\nmissing: {missing}\nreported: {reported}"
    finally:
        detach(engine, names)


@pytest.mark.bpf
@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_deploy_policy_leaves_out_what_it_filters(
    engine: Engine, trigger_in: Any, path: Path
) -> None:
    """The policy's in-kernel filters keep its quiet commands out of the ring buffer,
    while a trigger run right after them is reported (the hooks were live)."""
    names = attach_policy(engine, path)
    try:
        quiet = [trigger_in(command) for command in QUIET[path.name]]
        for t in quiet:
            done = t.run()
            assert done.returncode == 0, (t.command, done.stderr)
        first = TRIGGERS[path.name][0]
        loud = trigger_in(first["command"])
        assert loud.run().returncode == 0
        assert engine.wait(lambda r: r["cgroup_id"] == loud.cgroup_id and r["hook_id"] in names)
        ids = {t.cgroup_id for t in quiet}
        leaked = [
            (names[r["hook_id"]], r["args"])
            for r in engine.hooks
            if r["cgroup_id"] in ids and r["hook_id"] in names
        ]
        assert not leaked
    finally:
        detach(engine, names)
