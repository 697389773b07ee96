"""hook_slots: the per-tracepoint index of slots the generic program looks up.
The enforcer's HookTable keeps it in step with hook_config, and the program
trusts it only to skip work, never to skip a slot's process filters. And
hook_stats, the counters indexed by hook id that every event adds to."""

from __future__ import annotations

import ctypes as ct
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common import bpfsys
from services.enforcer.compile import compile_selectors
from services.enforcer.hooktable import HookTableError
from services.enforcer.plan import plan_hooks
from services.sensor.hook_records import HOOKS_MAX, TpSlots, stats_index
from tests.hook_engine import NO_KPROBES, Engine, engine, policy

__all__ = ["engine"]  # the fixture, used by name

OPENAT = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{{index: 6, type: string}}]
    selectors:
    - matchArgs: [{{index: 6, operator: Prefix, values: ['{d}/']}}]
{extra}"""


def cat() -> str:
    path = shutil.which("cat")
    if path is None:
        pytest.fail("cat is needed on PATH")
    return str(Path(path).resolve())


@pytest.fixture
def slots_map(engine: Engine) -> Iterator[bpfsys.PinnedMap]:
    m = bpfsys.PinnedMap(engine.probes.pin_dir / "hook_slots")
    yield m
    m.close()


def read_slots(m: bpfsys.PinnedMap, tp_id: int) -> tuple[int, int]:
    v = TpSlots()
    assert m.lookup(ct.c_uint32(tp_id), v)
    return v.used, v.proc


def place(eng: Engine, d: Path, extra: str = "") -> tuple[int, int]:
    """(hook id, tracepoint id) of an openat hook on files under ``d``."""
    p = policy(OPENAT.format(d=d, extra=extra))
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    slots = compile_selectors("p", planned, p.spec.tracepoints[0])
    return eng.table.attach(planned, slots), planned.tracepoint.id


def opened(eng: Engine, hook_id: int, path: Path) -> bool:
    # posted at the syscall's entry: in the ring before cat has exited
    subprocess.run([cat(), str(path)], capture_output=True, check=True, timeout=10)
    eng.drain()
    return any(r["hook_id"] == hook_id for r in eng.hooks)


@pytest.mark.bpf
def test_hook_slots_follow_the_hooks_on_a_tracepoint(
    engine: Engine, slots_map: bpfsys.PinnedMap, tmp_path: Path
) -> None:
    plain, tp_id = place(engine, tmp_path / "a")
    with_bin, _ = place(
        engine, tmp_path / "b", f"      matchBinaries: [{{operator: In, values: ['{cat()}']}}]\n"
    )
    try:
        used, proc = read_slots(slots_map, tp_id)
        assert bin(used).count("1") == 2  # one slot each
        assert bin(proc).count("1") == 1 and proc & used == proc  # only matchBinaries'
        engine.table.detach(with_bin)
        used_after, proc_after = read_slots(slots_map, tp_id)
        assert used_after == used & ~proc and proc_after == 0
    finally:
        for hook_id in (plain, with_bin):
            if hook_id in engine.table.inner.hook_ids():
                engine.table.detach(hook_id)
    assert read_slots(slots_map, tp_id) == (0, 0)  # the program stops at the index


@pytest.mark.bpf
def test_process_filters_the_index_does_not_show_are_not_skipped(
    engine: Engine, slots_map: bpfsys.PinnedMap, tmp_path: Path
) -> None:
    """A slot with matchBinaries whose `proc` bit is missing (as for a moment
    while the enforcer writes) matches nothing, rather than everything."""
    target = tmp_path / "f"
    target.write_text("x")
    # NotIn a binary that is not cat: cat matches once its filter is evaluated
    hook_id, tp_id = place(
        engine, tmp_path, "      matchBinaries: [{operator: NotIn, values: ['/nonexistent/bin']}]\n"
    )
    try:
        assert opened(engine, hook_id, target)  # evaluated: a match
        used, proc = read_slots(slots_map, tp_id)
        assert proc
        slots_map.update(ct.c_uint32(tp_id), TpSlots(used, 0))
        engine.hooks.clear()
        before = engine.table.stats(hook_id)["filtered"]
        assert not opened(engine, hook_id, target)
        assert engine.table.stats(hook_id)["filtered"] > before  # seen, counted, not matched
    finally:
        engine.table.detach(hook_id)


@pytest.mark.bpf
def test_hooks_never_share_counters(engine: Engine, tmp_path: Path) -> None:
    """hook_stats is indexed by hook id modulo HOOKS_MAX: the table gives no
    two live hooks one index, and a hook placed at a reused index starts at 0."""
    table = engine.table.inner
    target = tmp_path / "f"
    target.write_text("x")
    first, _ = place(engine, tmp_path / "nothing-here")
    opened(engine, first, target)
    counted = table.stats(first)["filtered"]
    assert counted > 0
    ids = [table.reserve() for _ in range(HOOKS_MAX - 1)]
    try:
        assert len({stats_index(i) for i in [first, *ids]}) == HOOKS_MAX
        with pytest.raises(HookTableError, match="hooks placed or being placed"):
            table.reserve()
    finally:
        table.release(ids)
    engine.table.detach(first)
    while True:  # the next id takes the first hook's index
        probe = table.reserve()
        table.release([probe])
        if stats_index(probe + 1) == stats_index(first):
            break
    second, _ = place(engine, tmp_path)
    try:
        assert stats_index(second) == stats_index(first) and second != first
        assert table.stats(second)["filtered"] == 0  # not the first hook's counts
        assert opened(engine, second, target)
        assert table.stats(second)["matched"] >= 1
    finally:
        engine.table.detach(second)
