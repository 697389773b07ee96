"""Hooks: kprobes, tracepoints, LSM hooks, uprobes and USDTs, their args, and the pure parts
of Tetragon's hook semantics (syscall names, arg-index resolution).

All five kinds parse; whether this kernel can attach them is the enforcer's decision, and it
rejects what it cannot honour with an explicit error.
"""

# ruff: noqa: RUF012 - pydantic copies a field's default per instance; ruff cannot see across
# modules that PolicyModel is a pydantic BaseModel, so it takes `= []` for a shared class attribute.

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from ._base import PolicyModel, UInt32
from .argtypes import ARG_TYPES
from .selectors import ReturnArgActionName, Selector


def _arg_type(value: str) -> str:
    if value not in ARG_TYPES:
        raise ValueError(f"type {value!r} is not supported (supported: {', '.join(ARG_TYPES)})")
    return value


ArgType = Annotated[str, AfterValidator(_arg_type)]


class Arg(PolicyModel):
    """One declared arg. For kprobes, LSM hooks, uprobes and USDTs ``index`` is the function
    argument position; for tracepoints it is the field's position in the tracepoint format,
    counting the four ``common_*`` fields (``raw_syscalls:sys_enter`` ``id`` is 4)."""

    index: UInt32
    type: ArgType = "auto"
    # 1-based (!) position of the arg holding the buffer size, 0 for none: char_buf/char_iovec.
    size_arg_index: UInt32 = 0
    # Read the buffer when the function returns (read(2) fills it): char_buf/char_iovec.
    return_copy: bool = False
    # Read up to 327360 bytes instead of 4096: char_buf.
    max_data: bool = False
    label: str | None = None
    # A field path into the struct the arg points to ("mm.owner.real_parent.comm").
    resolve: str | None = None
    btf_type: str | None = None
    source: str | None = None


class ReturnArg(Arg):
    """The return value; Tetragon examples leave out ``index`` (it is 0)."""

    index: UInt32 = 0


class KprobeIgnore(PolicyModel):
    call_not_found: bool = False


class Hook(PolicyModel):
    """What every hook kind has."""

    message: str | None = None
    args: list[Arg] = []
    selectors: list[Selector] = []
    tags: list[str] = []


class KProbeSpec(Hook):
    """A kernel function or a syscall; ``call`` may also be ``list:NAME`` for every function of
    a spec list. Which of them it is: :meth:`.TracingPolicySpec.kprobe_is_syscall`."""

    call: str
    # As written; absent means Tetragon's CRD default, true (for a list: the list's type).
    syscall: bool | None = None
    return_: bool = Field(default=False, alias="return")
    return_arg: ReturnArg | None = None
    return_arg_action: ReturnArgActionName | None = None
    ignore: KprobeIgnore | None = None

    @property
    def list_name(self) -> str | None:
        """The list ``call`` refers to (``list:dups`` -> ``dups``), else None."""
        return self.call[5:] if self.call.startswith("list:") else None


class TracepointSpec(Hook):
    """``subsystem:event`` from tracefs; args are read at their format-field offsets (with
    ``raw: true``, they are the TP_PROTO arguments, by position, as for a kprobe)."""

    subsystem: str
    event: str
    raw: bool = False


class LsmHookSpec(Hook):
    """A BPF-LSM hook (``file_open``, ``bprm_check_security``): a true deny via Override."""

    hook: str


class UProbeSpec(Hook):
    """User-space functions of one binary, by symbol, offset or address."""

    path: str
    symbols: list[str] = []
    offsets: list[Annotated[int, Field(ge=0)]] = []
    ref_ctr_offsets: list[Annotated[int, Field(ge=0)]] = []
    addrs: list[Annotated[int, Field(ge=0)]] = []
    btf_path: str | None = None
    return_: bool = Field(default=False, alias="return")
    return_arg: ReturnArg | None = None


class UsdtSpec(Hook):
    """A USDT probe (``provider:name``) of one binary."""

    path: str
    provider: str
    name: str
    btf_path: str | None = None


AnyHook = KProbeSpec | TracepointSpec | LsmHookSpec | UProbeSpec | UsdtSpec

# Arch prefixes of syscall entry symbols (arch/*/include/asm/syscall_wrapper.h).
_SYSCALL_ARCH_PREFIX = re.compile(r"__(x64|ia32|arm64|s390x|s390|riscv|loongarch|powerpc)_")
_SYSCALL_NAME = re.compile(r"[a-z0-9_]+")


_NATIVE_ARCH_PREFIX = "__x64_"  # the only architecture Ocellus runs on today


def kprobe_syscall_name(call: str) -> str:
    """The syscall a ``syscall: true`` kprobe names: ``sys_openat``, ``__x64_sys_openat`` and
    ``openat`` all give ``openat`` (so the hook can be served by ``syscalls:sys_enter_openat``).

    Raises ``ValueError`` for what names no native syscall: a list reference, a compat entry
    point (``__ia32_compat_sys_*``: those have no ``sys_enter_*`` tracepoint), an internal
    helper (``__sys_setuid``) or a name that is not a C identifier.
    """
    if call.startswith("list:"):
        raise ValueError(f"{call!r} is a list reference; name the list's syscalls one by one")
    name = call
    if m := _SYSCALL_ARCH_PREFIX.match(name):
        name = name[m.end() :]
        if name.startswith("compat_sys_"):
            raise ValueError(
                f"{call!r} is a compat syscall entry; it has no sys_enter_* tracepoint"
            )
        if m.group() != _NATIVE_ARCH_PREFIX:
            # Another architecture's entry (or x86's 32-bit one): serving it with
            # this machine's native syscall would report calls it never named.
            raise ValueError(
                f"{call!r} is a {m.group()} entry point; this machine's syscalls are "
                f"{_NATIVE_ARCH_PREFIX}sys_NAME (or write sys_NAME)"
            )
        if not name.startswith("sys_"):
            raise ValueError(
                f"{call!r} is not a syscall entry point (expected {m.group()}sys_NAME)"
            )
    if name.startswith("sys_"):
        name = name[4:]
    if name.startswith("_") or not _SYSCALL_NAME.fullmatch(name):
        raise ValueError(
            f"{call!r} is not a syscall name (expected sys_NAME, __<arch>_sys_NAME or NAME)"
        )
    return name


def resolve_match_index(hook: AnyHook, match_index: int) -> int:
    """The spec-arg position (into ``hook.args``) a ``matchArgs[].index`` refers to.

    kprobes, LSM hooks, uprobes, USDTs and raw tracepoints: the index is a function-argument
    position and must be the ``index`` of exactly one declared arg.

    Tracepoints (Tetragon's semantics): an index equal to a declared arg's ``index`` (a format
    field, ``common_*`` fields counted) refers to that arg; older policies give the spec-arg
    position instead (``index: 0`` for the first arg), accepted when that reading is the only
    one. When both readings exist and differ, the filter is ambiguous: Tetragon would take the
    field reading and an older policy meant the other. Raises ``ValueError`` saying how to fix
    it (``args: [N]`` names a spec arg explicitly).
    """
    declared = [arg.index for arg in hook.args]
    by_field = [position for position, index in enumerate(declared) if index == match_index]
    if len(by_field) > 1:
        at = " and ".join(f"args[{p}]" for p in by_field)
        raise ValueError(
            f"index {match_index} is ambiguous: {at} all read index {match_index}; "
            "name one with args: [N]"
        )
    if not isinstance(hook, TracepointSpec) or hook.raw:
        if not by_field:
            raise ValueError(
                f"index {match_index} names no declared arg "
                + (
                    f"(declared indexes: {_listing(declared)})"
                    if declared
                    else "(no args declared)"
                )
            )
        return by_field[0]
    positional = match_index if match_index < len(declared) else None
    if by_field and positional is not None and positional != by_field[0]:
        raise ValueError(
            f"index {match_index} is ambiguous: args[{by_field[0]}] reads format field "
            f"{match_index} and args[{positional}] is spec arg {positional}; "
            f"write args: [{by_field[0]}] or args: [{positional}] instead"
        )
    if by_field:
        return by_field[0]
    if positional is not None:
        return positional
    if not declared:
        raise ValueError(f"index {match_index} names no declared arg (no args declared)")
    raise ValueError(
        f"index {match_index} names no declared arg: neither a format-field index of an arg "
        f"({_listing(declared)}) nor a spec-arg position (0..{len(declared) - 1})"
    )


def _listing(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)
