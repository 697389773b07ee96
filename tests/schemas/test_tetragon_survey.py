"""Tetragon's own policies on this kernel: every one stored under policies/tetragon/
(refused/ holds those that do not even load) is either planned against the real
tracefs and compiled, or refused with the PolicyError asserted here; the ones that
compile fire, through the in-process engine, on a real command.
docs/tetragon-policies.md is the readable form of this table."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import PolicyError, Problem, load_policy
from services.common.hostfs import cgroup2_root
from services.enforcer.compile import compile_selectors
from services.enforcer.connect_rules import compile_connect_rules
from services.enforcer.plan import PlannedHook, plan_hooks
from services.enforcer.syscalls import syscall_lists
from services.sensor.mounts import TRACEFS, ensure_mounted
from tests.hook_engine import NO_KPROBES, Engine, engine

__all__ = ["engine"]  # the fixture, used by name

TETRAGON = Path(__file__).parent / "policies" / "tetragon"
STORED = sorted(TETRAGON.glob("*.yaml")) + sorted((TETRAGON / "refused").glob("*.yaml"))
NO_KPROBE = "kprobe on a kernel function needs kprobes, which this kernel does not offer"
TWO_PID_FILTERS = "matchPIDs: at most 1 matchPIDs filter per selector in the kernel"
CREDS_CALLS = ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
               "setfsgid")  # fmt: skip

# file (relative to policies/tetragon) -> ("compiles", [tracepoints]) or
# (stage, [messages]): every message must be in the PolicyError of that stage.
SURVEY: dict[str, tuple[str, list[str]]] = {
    # Syscall and tracepoint hooks that compile today.
    "raw_syscalls.yaml": ("compiles", ["raw_syscalls:sys_enter"]),
    "sys_ptrace.yaml": ("compiles", ["syscalls:sys_enter_ptrace"]),
    "sys_setuid.yaml": ("compiles", ["syscalls:sys_enter_setuid"]),
    # Syscall and tracepoint hooks that plan, with selectors the kernel side lacks yet.
    "write.yaml": ("compiles", ["syscalls:sys_enter_write"]),
    "process-credentials-changes-at-syscalls.yaml": (
        "compiles",
        [f"syscalls:sys_enter_{c}" for c in CREDS_CALLS],
    ),
    "list-syscalls-tracepoint.yaml": ("compiles", ["raw_syscalls:sys_enter"]),
    "sys_clock_settime.yaml": ("compile", [f"spec.kprobes[0].selectors[0].{TWO_PID_FILTERS}"]),
    "sys_pivot_root.yaml": ("compile", [f"spec.kprobes[0].selectors[0].{TWO_PID_FILTERS}"]),
    "fd_memfd_kill.yaml": (
        "compile",
        [
            "spec.kprobes[0].selectors[0].matchActions[0].action: action UnfollowFD is not "
            "supported yet"
        ],
    ),
    "hardlink-override.yaml": (
        "compile",
        [
            "spec.kprobes[0].selectors[0].matchActions[0]: Override is served for connect "
            "and sendto only"
        ],
    ),
    "symlink-override.yaml": (
        "compile",
        [
            "spec.kprobes[0].selectors[0].matchActions[0]: Override is served for connect "
            "and sendto only"
        ],
    ),
    # Syscall hooks next to a kernel-function kprobe (fd_install, do_dup2): the whole
    # policy is refused for the kprobe, by path.
    "names.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "open_kill.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "sys_write_follow_fd_prefix.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "sys_write_sigkill.yaml": (
        "plan",
        [f"spec.kprobes[0]: {NO_KPROBE}", f"spec.kprobes[1]: {NO_KPROBE}"],
    ),
    # Kernel functions only (__sys_setuid is the internal helper, not the syscall).
    "policylibrary-privileges-setuid-root.yaml": (
        "plan",
        [f"spec.kprobes[{i}]: {NO_KPROBE}" for i in range(8)],
    ),
    "policylibrary-privileges-raise.yaml": (
        "plan",
        [f"spec.kprobes[{i}]: {NO_KPROBE}" for i in range(9)],
    ),
    "datagram-with-sock-tracking.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "fd_install_ns.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "filename_monitoring_filtered.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "kprobe_commit_creds.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "modules-nohost.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "policylibrary-acceptsshd.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "policylibrary-bpf.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "policylibrary-modules.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "policylibrary-tty-ioctl-observe.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "security-socket-connect.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "security_bprm_check.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "tcp-accept.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "tcp-listen.yaml": ("plan", [f"spec.kprobes[0]: {NO_KPROBE}"]),
    "lsm_brm_check.yaml": (
        "plan",
        ["spec.lsmhooks[0]: lsmhooks hooks need bpf_lsm, which this kernel does not offer"],
    ),
    "usdt.yaml": (
        "plan",
        ["spec.usdts[0]: usdts hooks need uprobes, which this kernel does not offer"],
    ),
    # Do not load: what Ocellus's schema does not accept (yet), by path.
    "refused/pipe.yaml": (
        "load",
        [
            "spec.kprobes[0].args[0].type: type 'int32_arr' is not supported",
            "spec.kprobes[0].args[0].size: unknown field",
        ],
    ),
    "refused/socketpair.yaml": (
        "load",
        [
            "spec.kprobes[0].args[3].type: type 'int32_arr' is not supported",
            "spec.kprobes[0].args[3].size: unknown field",
        ],
    ),
    "refused/killer.yaml": (
        "load",
        [
            "spec.killers: unknown field",
            "matchActions[0].action: action 'NotifyKiller' is not supported",
        ],
    ),
    "refused/openat_write.yaml": ("load", ["kind: required field is missing"]),
    "refused/cve-2021-4034-pwnkit-ld-preload.yaml": (
        "load",
        [
            "spec.kprobes[1].selectors[0].matchActions[0].rateLimit: rateLimit '5/minute' is "
            "not a duration like 30, 30s, 5m or 1h"
        ],
    ),
}


@pytest.fixture(scope="module", autouse=True)
def tracefs() -> None:
    """tracefs mounted, as the sensor makes sure it is."""
    ensure_mounted("tracefs", TRACEFS)


def name_of(path: Path) -> str:
    return str(path.relative_to(TETRAGON))


def compile_policy(text: str) -> list[PlannedHook]:
    """load -> plan_hooks (real tracefs, no kprobes) -> compile_selectors, or a PolicyError
    whose `stage` attribute is "load", "plan" or "compile"."""
    stage = "load"
    try:
        policy = load_policy(text)
        stage = "plan"
        planned = plan_hooks(policy.metadata.name, policy.spec, NO_KPROBES)
        stage = "compile"
        hooks = dict(policy.spec.hooks())
        problems: list[Problem] = []
        lists = syscall_lists(policy.spec.lists, problems)
        for p in planned:
            try:
                slots = compile_selectors(policy.metadata.name, p, hooks[p.path], lists)
                compile_connect_rules(policy.metadata.name, p, hooks[p.path], slots, NO_KPROBES)
            except PolicyError as e:
                problems += e.problems
        if problems:
            raise PolicyError(policy.metadata.name, problems)
        return planned
    except PolicyError as e:
        e.stage = stage  # type: ignore[attr-defined]
        raise


def test_survey_covers_every_stored_policy() -> None:
    """The table names every stored Tetragon policy, each with its source."""
    assert {name_of(p) for p in STORED} == set(SURVEY)
    for path in STORED:
        assert path.read_text().startswith("# Source: cilium/tetragon examples/"), path.name


def test_survey_has_enough_syscall_and_tracepoint_policies() -> None:
    """At least 12 surveyed policies hook syscalls or tracepoints."""
    syscall_or_tp = [
        n for n, (stage, _) in SURVEY.items() if stage in ("compiles", "compile")
    ] + ["names.yaml", "open_kill.yaml", "sys_write_follow_fd_prefix.yaml",
         "sys_write_sigkill.yaml", "refused/pipe.yaml", "refused/socketpair.yaml",
         "refused/killer.yaml", "refused/openat_write.yaml",
         "refused/cve-2021-4034-pwnkit-ld-preload.yaml"]  # fmt: skip
    assert len(set(syscall_or_tp)) >= 12


@pytest.mark.parametrize("name", sorted(SURVEY))
def test_tetragon_policy_compiles_or_is_refused_by_name(name: str) -> None:
    """Compiles on this kernel (to the tracepoints listed), or is refused at the stage
    and with the messages listed: never silently half-applied."""
    stage, expected = SURVEY[name]
    text = (TETRAGON / name).read_text()
    if stage == "compiles":
        planned = compile_policy(text)
        assert [f"{p.tracepoint.subsystem}:{p.tracepoint.event}" for p in planned] == expected
        return
    with pytest.raises(PolicyError) as caught:
        compile_policy(text)
    assert caught.value.stage == stage  # type: ignore[attr-defined]
    message = str(caught.value)
    for want in expected:
        assert want in message, message


# --- what the ones that compile report --------------------------------------------------

# file -> (trigger command, expected args of at least one record from it)
FIRES: dict[str, tuple[str, list[Any]]] = {
    # Every syscall; getpid is 39.
    "raw_syscalls.yaml": ("python3 -c 'import os; os.getpid()'", [39]),
    # ptrace's third argument (addr): 0 for strace's PTRACE_SEIZE.
    "sys_ptrace.yaml": ("strace -o /dev/null true", [0]),
    # setuid's uid, as type int.
    "sys_setuid.yaml": ("python3 -c 'import os; os.setuid(0)'", [0]),
    # InMap over the list dups (sys_dup, sys_dup2): dup2 is 33 on x86_64.
    "list-syscalls-tracepoint.yaml": ("python3 -c 'import os; os.dup2(0, 7)'", [33]),
}


def run_in_cgroup(command: str) -> int:
    """Run `sh -c command` in a fresh cgroup; the cgroup id (its inode)."""
    root = cgroup2_root()
    if root is None:
        pytest.fail("no cgroup2 mount: mount -t cgroup2 none /sys/fs/cgroup/unified")
    cg = root / f"ocellus-survey-{uuid.uuid4().hex[:12]}"
    cg.mkdir()
    try:
        done = subprocess.run(
            ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec sh -c "$0"', command],
            env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return cg.stat().st_ino
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                subprocess.run(["sleep", "0.02"], check=False)


@pytest.mark.bpf
@pytest.mark.parametrize("name", sorted(FIRES))
def test_tetragon_policy_that_compiles_fires(engine: Engine, name: str) -> None:
    """The compiled policy, placed in the engine, reports its trigger with the args
    docs/tetragon-policies.md lists."""
    assert SURVEY[name][0] == "compiles"
    policy = load_policy((TETRAGON / name).read_text())
    hooks = dict(policy.spec.hooks())
    lists = syscall_lists(policy.spec.lists, [])
    ids = []
    try:
        for p in plan_hooks(policy.metadata.name, policy.spec, NO_KPROBES):
            slots = compile_selectors(policy.metadata.name, p, hooks[p.path], lists)
            ids.append(engine.table.attach(p, slots))
        command, args = FIRES[name]
        cgroup_id = run_in_cgroup(command)
        found = engine.wait(
            lambda r: r["cgroup_id"] == cgroup_id and r["hook_id"] in ids and r["args"] == args
        )
        assert found, [r["args"] for r in engine.hooks if r["cgroup_id"] == cgroup_id][:20]
    finally:
        for hook_id in ids:
            engine.table.detach(hook_id)
