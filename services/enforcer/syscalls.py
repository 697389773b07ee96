"""Syscall numbers of this architecture, for Tetragon's ``lists`` of syscalls
used with ``InMap`` / ``NotInMap`` (e.g. on ``raw_syscalls:sys_enter``'s id).

The numbers come from the C library's kernel headers (Debian's
linux-libc-dev, which libc6-dev pulls in): ``#define __NR_openat 257``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

from schemas.policy import ListSpec, Problem, kprobe_syscall_name

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
SYSCALL_LIST_TYPES = {"syscalls", "generated_syscalls"}
_DEFINE = re.compile(r"#define\s+__NR_(\w+)\s+(\d+)")


@functools.cache
def syscall_numbers(unistd: Path = UNISTD) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in _DEFINE.finditer(unistd.read_text())}


def syscall_lists(
    lists: Iterable[ListSpec], problems: list[Problem], unistd: Path = UNISTD
) -> dict[str, list[int]]:
    """Each syscall list's numbers by name; what cannot be resolved goes to ``problems``."""
    out: dict[str, list[int]] = {}
    for i, spec in enumerate(lists):
        if spec.type not in SYSCALL_LIST_TYPES:
            continue
        try:
            table = syscall_numbers(unistd)
        except OSError as e:
            problems.append(
                Problem(f"spec.lists[{i}]", f"syscall numbers unavailable ({unistd}: {e.strerror})")
            )
            return out
        numbers = []
        for j, value in enumerate(spec.values):
            try:
                name = kprobe_syscall_name(value)
            except ValueError as e:
                problems.append(Problem(f"spec.lists[{i}].values[{j}]", str(e)))
                continue
            if name not in table:
                problems.append(
                    Problem(f"spec.lists[{i}].values[{j}]", f"no syscall {name!r} on x86_64")
                )
                continue
            numbers.append(table[name])
        out[spec.name] = numbers
    return out
