"""The generic hook engine against the real kernel: the sensor's BPF object
loaded in this process, hooks placed with the enforcer's HookTable in its pinned maps and attached
by the sensor's HookAttachments (tests/hook_engine.py), records read from the
real ring buffer and decoded as the sensor does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import PolicyError
from schemas.raw import RawHook
from services.enforcer.compile import compile_selectors
from services.enforcer.plan import plan_hooks
from services.sensor.hook_records import Action, FilterConfig, FilterFlag, FilterOp, SlotConfig
from services.sensor.mounts import TRACEFS, ensure_mounted
from tests.hook_engine import NO_KPROBES, Engine, engine, policy, run

__all__ = ["engine"]  # the fixture, used by name

OPENAT = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{index: 6, type: string}, {index: 7, type: int}]
"""
SETUID = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_setuid
    args: [{index: 5, type: uint32}]
"""


def prefix(value: str, negate: bool = False) -> SlotConfig:
    flags = FilterFlag.NOT if negate else FilterFlag(0)
    return SlotConfig(0, (FilterConfig(0, FilterOp.STR_PREFIX, flags, strings=(value.encode(),)),))


def opened(path: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["comm"] == "cat" and r["args"][0] == path


def test_hook_prefix_reports_matching_opens_only(engine: Engine, tmp_path: Path) -> None:
    """A Prefix /etc/ filter reports `cat /etc/hostname` (pid, path) and not `cat /tmp/x`."""
    planned, _ = engine.plan(OPENAT)
    hook_id = engine.table.attach(planned, [prefix("/etc/")])
    other = tmp_path / "x"
    other.write_text("x")
    try:
        run("cat", str(other))
        proc = subprocess.Popen(["cat", "/etc/hostname"], stdout=subprocess.DEVNULL)
        proc.wait()
        [rec] = engine.wait(opened("/etc/hostname"))[:1]
        assert rec["pid"] == proc.pid and rec["hook_id"] == hook_id
        assert rec["action"] == Action.POST
        RawHook.model_validate(rec)
        assert not [r for r in engine.hooks if r["args"][0] == str(other)]
    finally:
        engine.table.detach(hook_id)


def test_hook_update_flips_without_a_new_program(engine: Engine, tmp_path: Path) -> None:
    """Changing the Prefix to the tmp dir (maps only) flips what is reported within a
    second, with the same program id."""
    planned, _ = engine.plan(OPENAT)
    target = tmp_path / "flip"
    target.write_text("x")
    prog = engine.prog_id()
    hook_id = engine.table.attach(planned, [prefix("/etc/")])
    try:
        run("cat", "/etc/hostname")
        assert engine.wait(opened("/etc/hostname"))
        engine.table.update(hook_id, [prefix(str(tmp_path))])
        engine.hooks.clear()
        started = time.monotonic()
        run("cat", str(target))
        run("cat", "/etc/hostname")
        assert engine.wait(opened(str(target)), timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert not [r for r in engine.hooks if r["hook_id"] == hook_id and "/etc/" in r["args"][0]]
        assert engine.prog_id() == prog
    finally:
        engine.table.detach(hook_id)


def test_hook_not_prefix_and_equal(engine: Engine, tmp_path: Path) -> None:
    """NotPrefix reports what does not start with the value; Equal only the exact path."""
    planned, _ = engine.plan(OPENAT)
    keep = tmp_path / "keep"
    keep.write_text("x")
    hook_id = engine.table.attach(
        planned,
        [
            SlotConfig(
                0,
                (
                    FilterConfig(0, FilterOp.STR_PREFIX, FilterFlag.NOT, strings=(b"/etc/",)),
                    FilterConfig(0, FilterOp.STR_EQUAL, strings=(str(keep).encode(),)),
                ),
            )
        ],
    )
    try:
        run("cat", "/etc/hostname")
        run("cat", str(keep) + "x")
        run("cat", str(keep))
        assert engine.wait(opened(str(keep)))
        assert not [
            r for r in engine.hooks if r["hook_id"] == hook_id and r["args"][0] != str(keep)
        ]
    finally:
        engine.table.detach(hook_id)


def test_hook_selectors_share_one_read_of_the_path(engine: Engine, tmp_path: Path) -> None:
    """Selectors of one hook filtering the same string arg (read once per event, looked
    up in place): the first that matches reports, with every arg; an int filter ahead of a
    string one; a path longer than the read matches a Prefix on its start, cut to 255."""
    planned, _ = engine.plan(OPENAT)
    target, other = tmp_path / "shared", tmp_path / "sharedx"
    deep = tmp_path / ("d" * 200) / ("e" * 100)
    deep.mkdir(parents=True)
    long_file = deep / "f"
    for f in (target, other, long_file):
        f.write_text("x")
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW  # os.open adds O_CLOEXEC anyway
    slots = [
        SlotConfig(0, (FilterConfig(0, FilterOp.STR_PREFIX, strings=(b"/nonexistent-ocellus/",)),)),
        SlotConfig(
            1,
            (
                FilterConfig(1, FilterOp.EQUAL, ints=(flags,)),
                FilterConfig(0, FilterOp.STR_EQUAL, strings=(str(target).encode(),)),
            ),
        ),
        SlotConfig(2, (FilterConfig(0, FilterOp.STR_PREFIX, strings=(str(deep).encode()[:240],)),)),
    ]
    hook_id = engine.table.attach(planned, slots)
    code = "import os,sys; [os.close(os.open(p, int(sys.argv[1]))) for p in sys.argv[2:]]"
    try:
        run(sys.executable, "-c", code, str(flags), str(other), str(target), str(long_file))
        run(sys.executable, "-c", code, str(os.O_RDONLY), str(target))
        found = engine.wait(lambda r: r["hook_id"] == hook_id and r["selector"] == 2)
        mine = [r for r in engine.hooks if r["hook_id"] == hook_id]
        assert [(r["selector"], r["args"]) for r in mine if r["selector"] == 1] == [
            (1, [str(target), flags])
        ]
        assert [r["args"] for r in found] == [[str(long_file)[:255], flags]]
        assert not [r for r in mine if r["args"][0] == str(other)]
    finally:
        engine.table.detach(hook_id)


def test_hook_int_equal_on_setuid(engine: Engine) -> None:
    """An Equal filter on setuid's uid reports setuid(4242) and not setuid(0)."""
    planned, _ = engine.plan(SETUID)
    hook_id = engine.table.attach(
        planned, [SlotConfig(0, (FilterConfig(0, FilterOp.EQUAL, FilterFlag.UNSIGNED, (4242,)),))]
    )
    code = "import os,sys; os.setuid(int(sys.argv[1]))"
    try:
        run(sys.executable, "-c", code, "0")
        run(sys.executable, "-c", code, "4242")
        found = engine.wait(lambda r: r["hook_id"] == hook_id)
        assert [r["args"] for r in found] == [[4242]]
    finally:
        engine.table.detach(hook_id)


def test_hook_nopost_counts_without_records(engine: Engine, tmp_path: Path) -> None:
    """NoPost counts the match in hook_stats and writes no record."""
    planned, _ = engine.plan(OPENAT)
    target = tmp_path / "quiet"
    target.write_text("x")
    cfg = prefix(str(target))
    quiet = SlotConfig(0, cfg.filters, Action.NOPOST, post=False)
    hook_id = engine.table.attach(planned, [quiet])
    try:
        run("cat", str(target))
        time.sleep(0.2)
        engine.drain()
        assert not [r for r in engine.hooks if r["hook_id"] == hook_id]
        stats = engine.table.stats(hook_id)
        assert stats["matched"] >= 1 and stats["posted"] == 0 and stats["filtered"] > 0
    finally:
        engine.table.detach(hook_id)


def test_hook_sigkill_kills_the_opener_only(engine: Engine, tmp_path: Path) -> None:
    """Sigkill on a marker path: `cat marker` dies by SIGKILL, `cat other` is untouched."""
    planned, _ = engine.plan(OPENAT)
    marker = tmp_path / "marker"
    marker.write_text("secret")
    kill = SlotConfig(0, prefix(str(marker)).filters, Action.SIGKILL, post=True, signal=9)
    hook_id = engine.table.attach(planned, [kill])
    try:
        killed = run("cat", str(marker))
        assert killed.returncode == -9 and killed.stdout == b""
        assert run("cat", "/etc/hostname").returncode == 0
        [rec] = engine.wait(opened(str(marker)))[:1]
        assert rec["action"] == Action.SIGKILL
        assert engine.table.stats(hook_id)["signalled"] >= 1
    finally:
        engine.table.detach(hook_id)


def test_hook_detach_stops_events(engine: Engine, tmp_path: Path) -> None:
    """After detach, matching opens are no longer reported."""
    planned, _ = engine.plan(OPENAT)
    target = tmp_path / "gone"
    target.write_text("x")
    hook_id = engine.table.attach(planned, [prefix(str(target))])
    run("cat", str(target))
    assert engine.wait(opened(str(target)))
    engine.table.detach(hook_id)
    engine.hooks.clear()
    run("cat", str(target))
    time.sleep(0.2)
    engine.drain()
    assert not engine.hooks
    assert planned.tracepoint.id not in engine.table.attached()


def test_compiled_policy_posts_and_kills(engine: Engine, tmp_path: Path) -> None:
    """A TracingPolicy compiled end to end: selector 0 kills on one path, selector 1 posts."""
    marker, seen = tmp_path / "m", tmp_path / "s"
    marker.write_text("x")
    seen.write_text("x")
    spec = OPENAT + (
        "    selectors:\n"
        f"    - matchArgs: [{{index: 6, operator: Prefix, values: ['{marker}']}}]\n"
        "      matchActions: [{action: Sigkill}]\n"
        f"    - matchArgs: [{{index: 0, operator: Equal, values: ['{seen}']}}]\n"
    )
    planned, hook = engine.plan(spec)
    hook_id = engine.table.attach(planned, compile_selectors("p", planned, hook))
    try:
        assert run("cat", str(marker)).returncode == -9
        assert run("cat", str(seen)).returncode == 0
        assert engine.wait(lambda r: r["hook_id"] == hook_id and r["selector"] == 1)
    finally:
        engine.table.detach(hook_id)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            "matchParentBinaries: [{operator: In, values: [/bin/cat]}]",
            "matchParentBinaries is not supported yet",
        ),
        (
            "matchCapabilities: [{type: Effective, operator: In, values: [CAP_SYS_ADMIN]}]",
            "matchCapabilities is not supported yet",
        ),
        (
            "matchArgs: [{index: 6, operator: SubString, values: [lib]}]",
            "operator SubString on strings is not supported yet",
        ),
        (
            "matchActions: [{action: FollowFD, argFd: 0, argName: 1}]",
            "action FollowFD is not supported",
        ),
        (
            "matchArgs: [{index: 7, operator: InRange, values: ['1:2','3:4','5:6','7:8','9:10']}]",
            "at most 8 integers",
        ),
    ],
    ids=["parent-binaries", "capabilities", "substring", "followfd", "too-many-ints"],
)
def test_compile_selectors_refuses_what_the_kernel_cannot_do_yet(
    selector: str, message: str
) -> None:
    """Unsupported selector parts are errors naming the selector path, never ignored."""
    ensure_mounted("tracefs", TRACEFS)
    p = policy(OPENAT + f"    selectors:\n    - {selector}\n")
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    with pytest.raises(PolicyError, match=message) as e:
        compile_selectors("p", planned, p.spec.tracepoints[0])
    assert "spec.tracepoints[0].selectors[0]" in str(e.value)


def test_compile_selectors_index_semantics() -> None:
    """matchArgs index 6 (format field) and 0 (spec-arg position) both name `filename`."""
    ensure_mounted("tracefs", TRACEFS)
    for index in (6, 0):
        p = policy(
            OPENAT + f"    selectors:\n    - matchArgs: [{{index: {index}, operator: NotEqual, "
            "values: [/a, /b]}]\n"
        )
        [planned] = plan_hooks("p", p.spec, NO_KPROBES)
        [slot] = compile_selectors("p", planned, p.spec.tracepoints[0])
        [f] = slot.filters
        assert (f.arg, f.op, f.flags, f.strings) == (
            0, FilterOp.STR_EQUAL, FilterFlag.NOT, (b"/a", b"/b"),
        )  # fmt: skip
