"""`return: true` syscall kprobes against the real kernel: sys_enter_* paired with
sys_exit_* in one record carrying the args and the return value, matchReturnArgs
evaluated in the kernel, and no record left waiting; and string Postfix/NotPostfix
on the paths real processes open."""

from __future__ import annotations

import ctypes as ct
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import PolicyError
from schemas.raw import RawHook
from services.enforcer.compile import compile_selectors
from services.enforcer.plan import plan_hooks
from tests.hook_engine import NO_KPROBES, Engine, engine, policy, run

__all__ = ["engine"]  # the fixture, used by name

ENOENT = 2
OPENAT_RETURN = """  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 1, type: string}, {index: 2, type: int}]
"""
EXECVE_RETURN = """  kprobes:
  - call: sys_execve
    syscall: true
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: string}]
"""
OPENAT = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{index: 6, type: string}]
"""


def place(engine: Engine, spec: str, selectors: str) -> int:
    planned, hook = engine.plan(spec + "    selectors:\n" + selectors)
    return engine.table.attach(planned, compile_selectors("p", planned, hook))


def pending(engine: Engine) -> int:
    """Records waiting in the kernel for a sys_exit_* (entries of hook_pending; BCC's
    table view cannot describe its value type, so the keys are walked by fd)."""
    from bcc import libbcc

    fd = libbcc.lib.bpf_table_fd(engine.probes.bpf.module, b"hook_pending")
    assert fd >= 0
    key, nxt = (ct.c_uint8 * 16)(), (ct.c_uint8 * 16)()
    count, prev = 0, None
    while libbcc.lib.bpf_get_next_key(fd, prev, ct.byref(nxt)) == 0:
        count += 1
        ct.memmove(key, nxt, 16)
        prev = ct.byref(key)
    return count


def of(engine: Engine, hook_id: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    return engine.wait(lambda r: r["hook_id"] == hook_id, timeout=timeout)


def test_return_reports_fd_and_enoent(engine: Engine, tmp_path: Path) -> None:
    """openat with return: true posts ONE record per call with the path, the flags and the
    return value: an fd for a file that exists, -ENOENT for one that does not."""
    there, missing = tmp_path / "there", tmp_path / "missing"
    there.write_text("x")
    hook_id = place(
        engine,
        OPENAT_RETURN,
        f"    - matchArgs: [{{index: 1, operator: Prefix, values: ['{tmp_path}/']}}]\n",
    )
    try:
        run("cat", str(there))
        run("cat", str(missing))
        found = engine.wait(lambda r: r["hook_id"] == hook_id and r["args"][0] == str(missing))
        recs = {r["args"][0]: r for r in engine.hooks if r["hook_id"] == hook_id}
        assert sorted(recs) == [str(missing), str(there)]
        assert len([r for r in engine.hooks if r["hook_id"] == hook_id]) == 2
        assert recs[str(there)]["ret"] >= 3  # stdin/out/err are taken
        assert found[0]["ret"] == -ENOENT
        RawHook.model_validate(found[0])
        assert pending(engine) == 0
    finally:
        engine.table.detach(hook_id)


def test_match_return_args_reports_failures_only(engine: Engine, tmp_path: Path) -> None:
    """matchReturnArgs LT 0 (in the kernel) reports the failed open only; matched counts
    every call the args matched, posted only the failures."""
    there, missing = tmp_path / "ok", tmp_path / "nope"
    there.write_text("x")
    hook_id = place(
        engine,
        OPENAT_RETURN,
        f"    - matchArgs: [{{index: 1, operator: Prefix, values: ['{tmp_path}/']}}]\n"
        "      matchReturnArgs: [{index: 0, operator: LT, values: ['0']}]\n",
    )
    try:
        run("cat", str(there))
        run("cat", str(missing))
        assert engine.wait(lambda r: r["hook_id"] == hook_id)
        recs = [r for r in engine.hooks if r["hook_id"] == hook_id]
        assert [(r["args"][0], r["ret"]) for r in recs] == [(str(missing), -ENOENT)]
        stats = engine.table.stats(hook_id)
        assert stats["matched"] >= 2 and stats["posted"] == 1
        assert pending(engine) == 0
    finally:
        engine.table.detach(hook_id)


@pytest.mark.parametrize(
    ("returns", "expect"),
    [
        pytest.param("{index: 0, operator: Equal, values: ['-2', '-13']}", [-ENOENT], id="equal"),
        pytest.param("{index: 0, operator: InRange, values: ['0:1000']}", ["fd"], id="inrange"),
        pytest.param("{index: 0, operator: InMap, values: ['-4095:-1']}", [-ENOENT], id="inmap"),
        pytest.param("{index: 0, operator: NotEqual, values: ['-2']}", ["fd"], id="notequal"),
    ],
)
def test_match_return_args_operators(
    engine: Engine, tmp_path: Path, returns: str, expect: list[Any]
) -> None:
    """matchReturnArgs Equal, InRange, InMap (a val_match set) and NotEqual on the return."""
    there, missing = tmp_path / "ok", tmp_path / "nope"
    there.write_text("x")
    hook_id = place(
        engine,
        OPENAT_RETURN,
        f"    - matchArgs: [{{index: 1, operator: Prefix, values: ['{tmp_path}/']}}]\n"
        f"      matchReturnArgs: [{returns}]\n",
    )
    try:
        run("cat", str(there))
        run("cat", str(missing))
        engine.wait(lambda r: r["hook_id"] == hook_id)
        run("true")  # let a late record arrive before asserting there is no other
        engine.wait(lambda r: False, timeout=0.2)
        rets = [r["ret"] for r in engine.hooks if r["hook_id"] == hook_id]
        assert ["fd" if r >= 0 else r for r in rets] == expect
    finally:
        engine.table.detach(hook_id)


def test_return_of_execve_success_and_failure(engine: Engine, tmp_path: Path) -> None:
    """A successful execve returns (0, in the new program) and a failed one -ENOENT; a
    non-leader thread's successful execve returns as the leader and is still paired."""
    exe = tmp_path / "truex"
    shutil.copy("/bin/true", exe)
    hook_id = place(
        engine,
        EXECVE_RETURN,
        f"    - matchArgs: [{{index: 0, operator: Prefix, values: ['{tmp_path}/']}}]\n",
    )
    thread_exec = (
        "import os,sys,threading\n"
        "t = threading.Thread(target=lambda: os.execv(sys.argv[1], [sys.argv[1], 'thread']))\n"
        "t.start(); t.join()\n"
    )
    try:
        assert run(str(exe)).returncode == 0
        assert run(
            sys.executable, "-c", f"import os; os.execv('{tmp_path}/none', ['x'])"
        ).returncode
        assert run(sys.executable, "-c", thread_exec, str(exe)).returncode == 0
        recs: list[dict[str, Any]] = []
        for _ in range(3):  # three records, in whatever order they drain
            recs = engine.wait(lambda r: r["hook_id"] == hook_id)
            if len(recs) >= 3:
                break
            engine.wait(lambda r: False, timeout=0.3)
        got = sorted((r["args"][0], r["ret"], r["pid"] == r["tid"]) for r in recs)
        assert got == [
            (str(tmp_path / "none"), -ENOENT, True),
            (str(exe), 0, False),  # from the thread: its tid, then the leader's
            (str(exe), 0, True),
        ]
        assert pending(engine) == 0
    finally:
        engine.table.detach(hook_id)


def test_return_refused_where_it_cannot_be_served() -> None:
    """exit_group never returns, and a returnArg that is no integer cannot be read from
    a syscall's return value: both are errors naming the path."""
    never = OPENAT_RETURN.replace("sys_openat", "sys_exit_group").replace(
        "args: [{index: 1, type: string}, {index: 2, type: int}]", "args: [{index: 0, type: int}]"
    )
    with pytest.raises(PolicyError, match="exit_group never returns") as e:
        plan_hooks("p", policy(never).spec, NO_KPROBES)
    assert "spec.kprobes[0].return" in str(e.value)
    as_string = OPENAT_RETURN.replace("{index: 0, type: int}", "{index: 0, type: string}")
    with pytest.raises(PolicyError, match="returnArg type 'string'"):
        plan_hooks("p", policy(as_string).spec, NO_KPROBES)


@pytest.mark.parametrize(
    ("operator", "values", "opened"),
    [
        pytest.param("Postfix", [".conf"], ["a.conf", "b.conf"], id="postfix"),
        pytest.param(
            "Postfix", [".conf", "x.pem", "t"], ["a.conf", "a.txt", "b.conf", "x.pem"], id="lengths"
        ),
        pytest.param(
            "NotPostfix", [".conf", ".pem"], ["a.txt", "aconf", "y.pem.bak"], id="notpostfix"
        ),
    ],
)
def test_postfix_on_opened_paths(
    engine: Engine, tmp_path: Path, operator: str, values: list[str], opened: list[str]
) -> None:
    """Postfix matches paths by their end (values of several lengths), NotPostfix the rest."""
    names = ["a.conf", "b.conf", "x.pem", "y.pem.bak", "a.txt", "aconf"]
    for name in names:
        (tmp_path / name).write_text("x")
    hook_id = place(
        engine,
        OPENAT,
        f"    - matchArgs: [{{index: 6, operator: Prefix, values: ['{tmp_path}/']}},\n"
        f"                  {{index: 6, operator: {operator}, values: {values!r}}}]\n",
    )
    try:
        for name in names:
            run("cat", str(tmp_path / name))
        engine.wait(lambda r: r["hook_id"] == hook_id and r["args"][0].endswith(opened[-1]))
        engine.wait(lambda r: False, timeout=0.2)
        got = sorted(
            Path(r["args"][0]).name
            for r in engine.hooks
            if r["hook_id"] == hook_id and r["comm"] == "cat"
        )
        assert got == sorted(opened)
    finally:
        engine.table.detach(hook_id)


def test_postfix_refuses_too_many_lengths() -> None:
    """Postfix values of more than 8 different lengths are an error naming the filter."""
    values = ", ".join(f"'{'x' * n}'" for n in range(1, 10))
    selector = f"[{{index: 6, operator: Postfix, values: [{values}]}}]"
    p = policy(OPENAT + f"    selectors:\n    - matchArgs: {selector}\n")
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    with pytest.raises(PolicyError, match="9 different lengths") as e:
        compile_selectors("p", planned, p.spec.tracepoints[0])
    assert "spec.tracepoints[0].selectors[0].matchArgs[0].values" in str(e.value)
