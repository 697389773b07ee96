"""ocellus_generic_args_tp: where a tracepoint's record holds a syscall's first
two args, the sensor attaches this entry, which copies them with direct loads
and tail-calls the engine; where the record is shorter the kernel refuses it
and the engine itself is attached. Either way the args are the call's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.enforcer.compile import compile_selectors
from tests.hook_engine import Engine, engine

__all__ = ["engine"]  # the fixture, used by name

FD = 987  # an fd number nothing else here closes


def place(eng: Engine, spec: str) -> tuple[int, int]:
    planned, hook = eng.plan(spec)
    return eng.table.attach(planned, compile_selectors("p", planned, hook)), planned.tracepoint.id


@pytest.mark.bpf
def test_long_records_take_the_entry_and_short_ones_the_engine(
    engine: Engine, tmp_path: Path
) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    opens, openat = place(
        engine,
        "  tracepoints:\n  - {subsystem: syscalls, event: sys_enter_openat,\n"
        "     args: [{index: 5, type: int}, {index: 6, type: string}],\n"
        "     selectors: [{matchArgs: [{index: 6, operator: Equal, values: "
        f"['{target}']}}]}}]}}\n",
    )
    closes, close = place(  # sys_enter_close: one arg, a 24-byte record
        engine,
        "  tracepoints:\n  - {subsystem: syscalls, event: sys_enter_close,\n"
        "     args: [{index: 5, type: int}],\n"
        f"     selectors: [{{matchArgs: [{{index: 5, operator: Equal, values: [{FD}]}}]}}]}}\n",
    )
    try:
        state = engine.attachments.state()
        assert openat in state["args_attached"] and close not in state["args_attached"]
        assert {openat, close} <= set(state["attached"])
        code = f"import os; os.dup2(0, {FD}); os.close({FD}); open({str(target)!r}).close()"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=10)
        [opened] = engine.wait(lambda r: r["hook_id"] == opens)
        assert opened["args"] == [-100, str(target)]  # AT_FDCWD, read from the copied words
        [closed] = engine.wait(lambda r: r["hook_id"] == closes)
        assert closed["args"] == [FD]
    finally:
        engine.table.detach(opens)
        engine.table.detach(closes)
