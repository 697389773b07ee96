"""Post rateLimit in the kernel (Tetragon's semantics): one record per interval
per scope (thread by default, process, global) and per args; every suppressed
record counts as `ratelimited`. Real processes open files through the generic
hook engine (tests/hook_engine.py); the policy goes through the compiler."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from schemas.policy import PolicyError
from services.enforcer.compile import compile_selectors
from services.sensor.hook_records import RateScope
from tests.hook_engine import Engine, engine

__all__ = ["engine"]  # the fixture, used by name

# Opens `path` `times` times in the main thread and as many in a second thread.
OPENER = """
import sys, threading
path, times = sys.argv[1], int(sys.argv[2])
def opens():
    for _ in range(times):
        open(path).close()
opens()
t = threading.Thread(target=opens)
t.start()
t.join()
"""


def spec(prefix: Path, action: str) -> str:
    return f"""  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{{index: 6, type: string}}, {{index: 7, type: int}}]
    selectors:
    - matchArgs:
      - {{index: 0, operator: Prefix, values: ["{prefix}/"]}}
      matchActions:
      - {action}
"""


def opener(path: Path, times: int) -> None:
    subprocess.run([sys.executable, "-c", OPENER, str(path), str(times)], check=True, timeout=10)


def attach(engine: Engine, text: str) -> int:
    planned, hook = engine.plan(text)
    slots = compile_selectors("p", planned, hook)
    return engine.table.attach(planned, slots)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        pytest.param("", 4, id="thread-by-default"),  # 2 processes x 2 threads
        pytest.param(", rateLimitScope: process", 2, id="process"),
        pytest.param(", rateLimitScope: global", 1, id="global"),
    ],
)
def test_ratelimit_posts_once_per_scope_and_counts_the_rest(
    engine: Engine, tmp_path: Path, scope: str, expected: int
) -> None:
    """Two processes, each opening a file 3 times in each of two threads, with
    rateLimit 1m: one record per thread, per process or in all; the others ratelimited."""
    target = tmp_path / "watched"
    target.write_text("x")
    hook_id = attach(engine, spec(tmp_path, f"{{action: Post, rateLimit: 1m{scope}}}"))
    try:
        opener(target, 3)
        opener(target, 3)
        time.sleep(0.2)
        engine.drain()
        found = [r for r in engine.hooks if r["hook_id"] == hook_id]
        assert len(found) == expected, found
        assert all(r["args"][0] == str(target) for r in found)
        if scope == ", rateLimitScope: process":
            assert len({r["pid"] for r in found}) == 2
        stats = engine.table.stats(hook_id)
        assert stats["matched"] == 12, stats
        assert (stats["posted"], stats["ratelimited"]) == (expected, 12 - expected), stats
    finally:
        engine.table.detach(hook_id)


@pytest.mark.parametrize(
    ("short", "expected"),
    [
        pytest.param(True, 2, id="paths-differ-in-first-40-bytes"),
        pytest.param(False, 1, id="paths-differ-after-40-bytes"),
    ],
)
def test_ratelimit_keys_on_first_40_bytes_of_args(
    engine: Engine, tmp_path: Path, short: bool, expected: int
) -> None:
    """As Tetragon: a repeat has the same first 40 bytes of each arg, so two paths
    that differ early are two events, and two that differ only later are one."""
    base = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp")) if short else tmp_path
    assert (len(str(base)) < 30) == short
    one, two = base / "one", base / "two"
    one.write_text("x")
    two.write_text("x")
    hook_id = attach(engine, spec(base, "{action: Post, rateLimit: 1h, rateLimitScope: global}"))
    try:
        opener(one, 2)
        opener(two, 2)
        time.sleep(0.2)
        engine.drain()
        found = [r["args"][0] for r in engine.hooks if r["hook_id"] == hook_id]
        assert len(found) == expected and found[0] == str(one), found
        assert engine.table.stats(hook_id)["ratelimited"] == 8 - expected
    finally:
        engine.table.detach(hook_id)
        if short:
            shutil.rmtree(base, ignore_errors=True)


def test_ratelimit_window_ends(engine: Engine, tmp_path: Path) -> None:
    """After the interval (rateLimit: 1, seconds) the same open is posted again."""
    target = tmp_path / "again"
    target.write_text("x")
    hook_id = attach(engine, spec(tmp_path, "{action: Post, rateLimit: 1, rateLimitScope: global}"))
    try:
        opener(target, 1)
        time.sleep(1.1)
        opener(target, 1)
        time.sleep(0.2)
        engine.drain()
        found = [r for r in engine.hooks if r["hook_id"] == hook_id]
        assert len(found) == 2
        stats = engine.table.stats(hook_id)
        assert (stats["posted"], stats["ratelimited"]) == (2, 2), stats
    finally:
        engine.table.detach(hook_id)


def test_ratelimit_compiles_scope_and_refuses_match_return_args(engine: Engine) -> None:
    """rateLimit: 5m process → 300 s in ns; with matchReturnArgs it is refused by path."""
    planned, hook = engine.plan(
        spec(Path("/x"), "{action: Post, rateLimit: 5m, rateLimitScope: process}")
    )
    [slot] = compile_selectors("p", planned, hook)
    assert (slot.rate_ns, slot.rate_scope) == (300 * 10**9, RateScope.PROCESS)
    returning = """  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args: [{index: 1, type: string}]
    returnArg: {index: 0, type: int}
    selectors:
    - matchReturnArgs: [{index: 0, operator: Equal, values: [3]}]
      matchActions: [{action: Post, rateLimit: 10s}]
"""
    planned, hook = engine.plan(returning)
    with pytest.raises(PolicyError) as e:
        compile_selectors("p", planned, hook)
    assert "spec.kprobes[0].selectors[0].matchActions[0].rateLimit: rateLimit with " in str(e.value)
