"""The string prefilter of a tracepoint (services/enforcer/prefilter.py): when
every slot there requires a path to be Equal to or start with one of its
values, the kernel looks the path up once against their union and counts an
event in none as filtered; it never changes what matches."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from services.common import bpfsys
from services.enforcer.compile import compile_selectors
from services.enforcer.hooktable import HookTable, HookTableError, arg_layouts
from services.enforcer.plan import plan_hooks
from services.enforcer.prefilter import plan_prefilter
from services.sensor.hook_records import FilterOp, StrKey
from tests.hook_engine import NO_KPROBES, Engine, engine, policy

__all__ = ["engine"]  # the fixture, used by name

OPENAT = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{{index: 5, type: int}}, {{index: 6, type: string}}]
    selectors:
{selectors}"""


def selector(match: str) -> str:
    return f"    - matchArgs: [{match}]\n"


def cat() -> str:
    path = shutil.which("cat")
    if path is None:
        pytest.fail("cat is needed on PATH")
    return str(Path(path).resolve())


def place(eng: Engine, *matches: str) -> tuple[int, int]:
    """(hook id, tracepoint id) of an openat hook, a selector per match."""
    p = policy(OPENAT.format(selectors="".join(selector(m) for m in matches)))
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    slots = compile_selectors("p", planned, p.spec.tracepoints[0])
    return eng.table.attach(planned, slots), planned.tracepoint.id


def update(eng: Engine, hook_id: int, *matches: str) -> None:
    p = policy(OPENAT.format(selectors="".join(selector(m) for m in matches)))
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    eng.table.update(hook_id, compile_selectors("p", planned, p.spec.tracepoints[0]))


def prefix(d: Path) -> str:
    return f"{{index: 6, operator: Prefix, values: ['{d}/']}}"


def files(tmp: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (tmp / name).mkdir()
        (tmp / name / "f").write_text("x")
        out.append(tmp / name / "f")
    return out


def opens(eng: Engine, path: Path) -> set[int]:
    """The hooks that reported ``cat path``'s open."""
    eng.hooks.clear()
    subprocess.run([cat(), str(path)], capture_output=True, check=True, timeout=10)
    eng.drain()
    return {r["hook_id"] for r in eng.hooks if str(path) in str(r.get("args"))}


def prefilter_values(eng: Engine) -> list[StrKey]:
    m = bpfsys.PinnedMap(eng.probes.pin_dir / "str_prefilter")
    try:
        return m.keys(StrKey)
    finally:
        m.close()


@pytest.mark.bpf
def test_a_prefix_policy_is_prefiltered(engine: Engine, tmp_path: Path) -> None:
    inside, outside = files(tmp_path, "in", "out")
    hook_id, tp_id = place(engine, prefix(inside.parent))
    try:
        assert engine.table.inner.prefilters.is_on(tp_id)
        assert len(prefilter_values(engine)) == 1
        assert opens(engine, inside) == {hook_id}
        before = engine.table.stats(hook_id)
        assert opens(engine, outside) == set()
        after = engine.table.stats(hook_id)
        assert after["filtered"] > before["filtered"] and after["matched"] == before["matched"]
    finally:
        engine.table.detach(hook_id)
    assert not engine.table.inner.prefilters.is_on(tp_id)
    assert prefilter_values(engine) == []


@pytest.mark.bpf
def test_the_prefilter_holds_every_hooks_values(engine: Engine, tmp_path: Path) -> None:
    a, b, c = files(tmp_path, "a", "b", "c")
    by_prefix, tp_id = place(engine, prefix(a.parent))
    by_equal, _ = place(
        engine,
        "{index: 5, operator: Equal, values: ['1234']}",  # no string: not the prefilter's
        f"{{index: 6, operator: Equal, values: ['{b}']}}, "
        "{index: 5, operator: GT, values: [-200]}",
    )
    try:
        # The first selector of the second hook requires no path: off.
        assert not engine.table.inner.prefilters.is_on(tp_id)
        assert opens(engine, b) == {by_equal}
        update(engine, by_equal, f"{{index: 6, operator: Equal, values: ['{b}']}}")
        assert engine.table.inner.prefilters.is_on(tp_id)
        assert opens(engine, a) == {by_prefix}
        assert opens(engine, b) == {by_equal}
        before = [engine.table.stats(h)["filtered"] for h in (by_prefix, by_equal)]
        assert opens(engine, c) == set()
        after = [engine.table.stats(h)["filtered"] for h in (by_prefix, by_equal)]
        assert all(x > y for x, y in zip(after, before, strict=True))  # each hook counts it
    finally:
        engine.table.detach(by_equal)
        engine.table.detach(by_prefix)


@pytest.mark.bpf
def test_negated_and_postfix_filters_turn_it_off(engine: Engine, tmp_path: Path) -> None:
    a, b = files(tmp_path, "a", "b")
    hook_id, tp_id = place(engine, f"{{index: 6, operator: NotPrefix, values: ['{a.parent}/']}}")
    try:
        assert not engine.table.inner.prefilters.is_on(tp_id)
        assert opens(engine, b) == {hook_id}
        update(engine, hook_id, f"{{index: 6, operator: Postfix, values: ['{b.parent.name}/f']}}")
        assert not engine.table.inner.prefilters.is_on(tp_id)
        assert opens(engine, b) == {hook_id}
        assert opens(engine, a) == set()
    finally:
        engine.table.detach(hook_id)


@pytest.mark.bpf
def test_it_follows_a_change_of_values(engine: Engine, tmp_path: Path) -> None:
    a, b = files(tmp_path, "a", "b")
    hook_id, tp_id = place(engine, prefix(a.parent))
    try:
        update(engine, hook_id, prefix(b.parent))
        assert engine.table.inner.prefilters.is_on(tp_id)
        [value] = prefilter_values(engine)  # the old generation's value is gone
        assert bytes(value.data).rstrip(b"\0") == f"{b.parent}/".encode()
        assert opens(engine, a) == set()
        assert opens(engine, b) == {hook_id}
    finally:
        engine.table.detach(hook_id)


@pytest.mark.bpf
def test_an_adopting_enforcer_turns_it_off_until_it_knows_the_values(
    engine: Engine, tmp_path: Path
) -> None:
    a, b = files(tmp_path, "a", "b")
    hook_id, tp_id = place(engine, prefix(a.parent))
    successor = HookTable(engine.probes.pin_dir)
    try:
        successor.adopt_existing()
        assert not successor.prefilters.is_on(tp_id) and prefilter_values(engine) == []
        assert opens(engine, a) == {hook_id}  # the configs alone still decide
        assert opens(engine, b) == set()
        p = policy(OPENAT.format(selectors=selector(prefix(a.parent))))
        [planned] = plan_hooks("p", p.spec, NO_KPROBES)
        assert successor.relayout(hook_id, planned)
        successor.update(hook_id, compile_selectors("p", planned, p.spec.tracepoints[0]))
        assert successor.prefilters.is_on(tp_id)
        assert opens(engine, a) == {hook_id}
    finally:
        successor.close()
        engine.table.detach(hook_id)  # the fixture's table, which placed it
    assert prefilter_values(engine) == []


def test_the_plan_keeps_each_values_operator_whatever_the_arg_index() -> None:
    """Two hooks read the path at different arg indexes: one field, one
    prefilter, each value with its own operator (Equal is matched with its NUL)."""
    specs = [
        (OPENAT, "{index: 6, operator: Prefix, values: ['/x/a/']}"),
        (OPENAT.replace("{{index: 5, type: int}}, ", ""),
         "{index: 6, operator: Equal, values: ['/x/b/f']}"),
    ]  # fmt: skip
    hooks = []
    for template, match in specs:
        p = policy(template.format(selectors=selector(match)))
        [planned] = plan_hooks("p", p.spec, NO_KPROBES)
        slots = compile_selectors("p", planned, p.spec.tracepoints[0])
        hooks.append((arg_layouts(planned), slots))
    planned_pre = plan_prefilter(hooks)
    assert planned_pre is not None and planned_pre.arg == 1  # the first hook's index
    assert planned_pre.values == {(FilterOp.STR_PREFIX, b"/x/a/"), (FilterOp.STR_EQUAL, b"/x/b/f")}


@pytest.mark.bpf
def test_a_change_that_fails_leaves_it_off(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half of a change may be in the maps: the prefilter stays off (slower,
    never wrong) until a change goes through."""
    a, b = files(tmp_path, "a", "b")
    hook_id, tp_id = place(engine, prefix(a.parent))
    table = engine.table.inner
    write = table._write

    def half_written(*args: object, **kwargs: object) -> None:
        write(*args, **kwargs)  # type: ignore[arg-type]
        raise HookTableError("writing hook_config: injected")

    try:
        monkeypatch.setattr(table, "_write", half_written)
        with pytest.raises(HookTableError, match="injected"):
            update(engine, hook_id, prefix(b.parent))
        assert not table.prefilters.is_on(tp_id)
        assert opens(engine, b) == {hook_id}  # the configs in the maps decide
        monkeypatch.setattr(table, "_write", write)
        update(engine, hook_id, prefix(a.parent))
        assert table.prefilters.is_on(tp_id)
        assert opens(engine, a) == {hook_id} and opens(engine, b) == set()
    finally:
        engine.table.detach(hook_id)
