"""Tetragon's syscall lists for InMap, resolved against this machine's C
library headers; what is not a syscall here is named by its path."""

from __future__ import annotations

from schemas.policy import ListSpec, Problem
from services.enforcer.syscalls import syscall_lists, syscall_numbers


def test_numbers_come_from_the_headers() -> None:
    numbers = syscall_numbers()
    assert (numbers["read"], numbers["openat"], numbers["dup2"]) == (0, 257, 33)


def test_lists_resolve_and_unknown_names_are_problems() -> None:
    problems: list[Problem] = []
    lists = [
        ListSpec(name="dups", type="syscalls", values=["sys_dup", "__x64_sys_dup2", "dup3"]),
        ListSpec(name="bad", type="syscalls", values=["sys_nosuchcall", "__arm64_sys_dup"]),
        ListSpec(name="fns", values=["fd_install"]),  # kernel functions: not for InMap
    ]
    resolved = syscall_lists(lists, problems)
    assert resolved["dups"] == [32, 33, 292]
    assert "fns" not in resolved
    assert [p.path for p in problems] == ["spec.lists[1].values[0]", "spec.lists[1].values[1]"]
    assert "no syscall 'nosuchcall' on x86_64" in problems[0].message
