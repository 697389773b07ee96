"""Integer args read at the width the policy declares, as Tetragon does: a
syscall's `int` travels zero-extended in an 8-byte tracepoint field."""

from __future__ import annotations

import subprocess

import pytest

from services.enforcer.compile import compile_selectors
from services.enforcer.plan import plan_hooks
from tests.hook_engine import NO_KPROBES, Engine, engine, policy

__all__ = ["engine"]  # the fixture, used by name

OPENAT_AT_FDCWD = """  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {index: 0, type: int}
    - {index: 1, type: string}
    selectors:
    - matchArgs:
      - {index: 0, operator: Equal, values: ["-100"]}
      - {index: 1, operator: Equal, values: ["/etc/hostname"]}
"""


@pytest.mark.bpf
def test_int_arg_is_32_bit_signed_like_tetragon(engine: Engine) -> None:
    """`type: int` is a 32-bit signed value, as in Tetragon: cat's openat(AT_FDCWD, ...)
    matches Equal -100 and reports dfd as -100."""
    p = policy(OPENAT_AT_FDCWD)
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    hook_id = engine.table.attach(planned, compile_selectors("p", planned, p.spec.kprobes[0]))
    try:
        proc = subprocess.run(["cat", "/etc/hostname"], capture_output=True, check=True)
        assert proc.stdout
        found = engine.wait(lambda r: r["hook_id"] == hook_id and r["comm"] == "cat")
        assert found and found[0]["args"][0] == -100
    finally:
        engine.table.detach(hook_id)
