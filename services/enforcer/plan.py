"""From a TracingPolicy to the tracepoints that serve it, and where each
declared arg is in the tracepoint's record.

Tetragon's hooks map onto what this kernel can do (DESIGN §2, §3):
``tracepoints`` natively; ``kprobes`` on syscalls become
``syscalls:sys_enter_<name>`` (and ``sys_exit_<name>`` for ``return: true``),
their args the syscall's arguments (format fields after ``__syscall_nr``);
other kprobes, LSM hooks, uprobes and USDTs need kernel features this host
may lack, and are refused by name when it does — never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.policy import Arg, KProbeSpec, PolicyError, Problem, TracepointSpec
from schemas.policy import kprobe_syscall_name as syscall_name
from schemas.policy.model import TracingPolicySpec
from services.enforcer.tracefs import TRACEFS, Field, TracepointFormat, TracepointUnavailableError
from services.enforcer.tracefs import read_format as read_tracefs_format

# How a BPF program reads an arg out of the tracepoint record.
INT, UINT, USER_STRING, KERNEL_STRING, SOCKADDR, ADDRESS = (
    "int",
    "uint",
    "user_string",
    "kernel_string",
    "sockaddr",
    "address",
)
_INT_TYPES = {
    "int",
    "fd",  # AT_FDCWD is -100
    "sint8",
    "int8",
    "sint16",
    "int16",
    "sint32",
    "int32",
    "long",
    "sint64",
    "int64",
    "syscall64",
}
_UINT_TYPES = {
    "uint8",
    "uint16",
    "uint32",
    "ulong",
    "uint64",
    "size_t",
    "bpf_cmd",
    "capability",
}
_TYPE_WIDTHS = {
    **dict.fromkeys(("sint8", "int8", "uint8"), 1),
    **dict.fromkeys(("sint16", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "sint32", "int32", "uint32", "fd", "bpf_cmd", "capability"), 4),
}
_TEXT_TYPES = {"string", "char_buf", "filename", "data_loc"}
_SYSCALL_FIRST_ARG = 5  # 4 common_* fields, then __syscall_nr
_ARCH_PREFIX = "__x64_sys_"


@dataclass(frozen=True, slots=True)
class PlannedArg:
    position: int  # in the hook's args list
    field: Field
    read: str  # INT, UINT, USER_STRING, KERNEL_STRING, SOCKADDR, ADDRESS
    type: str  # the policy's type (or what "auto" became)
    label: str | None
    # Bytes read: the declared type's width where it is narrower than the
    # field (a syscall's `int` travels in an 8-byte field, zero-extended by
    # the caller: read as 8 bytes, AT_FDCWD would be 4294967196, not -100).
    size: int = 0

    @property
    def read_size(self) -> int:
        return self.size or self.field.size


@dataclass(frozen=True, slots=True)
class PlannedHook:
    path: str  # "spec.kprobes[0]", for messages
    event_kind: str  # "process_kprobe" or "process_tracepoint"
    tracepoint: TracepointFormat
    args: tuple[PlannedArg, ...]
    function_name: str | None = None  # kprobes: as Tetragon names it (__x64_sys_openat)
    exit_tracepoint: TracepointFormat | None = None  # return: true
    # return: true: the sys_exit_* `ret` field, read as the returnArg's type
    return_arg: PlannedArg | None = None


FormatReader = Callable[[str, str], TracepointFormat]


def plan_hooks(
    policy_name: str,
    spec: TracingPolicySpec,
    capabilities: Mapping[str, str],
    formats: FormatReader | None = None,
) -> list[PlannedHook]:
    """Every hook of the policy, planned; a PolicyError lists every hook that cannot be."""
    read = formats or (lambda sub, evt: read_tracefs_format(sub, evt, TRACEFS))
    planned: list[PlannedHook] = []
    problems: list[Problem] = []
    for path, hook in spec.hooks():
        try:
            if isinstance(hook, TracepointSpec):
                planned.append(_tracepoint(path, hook, read))
            elif isinstance(hook, KProbeSpec) and spec.kprobe_is_syscall(hook):
                planned += _syscall_kprobe(path, hook, spec, read)
            else:
                raise _Refused(_unsupported(path, hook, capabilities))
        except _Refused as e:
            problems.append(Problem(e.path or path, e.message))
        except TracepointUnavailableError as e:
            problems.append(Problem(path, str(e)))
    if problems:
        raise PolicyError(policy_name, problems)
    return planned


class _Refused(Exception):
    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def _unsupported(path: str, hook: object, capabilities: Mapping[str, str]) -> str:
    section = path.split("[")[0].removeprefix("spec.")
    need = {"kprobes": "kprobes", "lsmhooks": "bpf_lsm", "uprobes": "uprobes", "usdts": "uprobes"}
    feature = need.get(section, section)
    state = capabilities.get(feature, "not probed")
    if section == "kprobes":
        return (
            f"kprobe on a kernel function needs kprobes, which this kernel does not offer "
            f"(kprobes: {state}); hook a syscall (syscall: true) or a tracepoint instead"
        )
    return f"{section} hooks need {feature}, which this kernel does not offer ({feature}: {state})"


def _tracepoint(path: str, hook: TracepointSpec, read: FormatReader) -> PlannedHook:
    if hook.raw:
        raise _Refused(
            "raw tracepoints are not supported yet: drop `raw: true` and use the format fields"
        )
    fmt = read(hook.subsystem, hook.event)
    args = tuple(
        _arg(f"{path}.args[{i}]", i, a, fmt.field(a.index)) for i, a in enumerate(hook.args)
    )
    return PlannedHook(path, "process_tracepoint", fmt, args)


def _syscall_kprobe(
    path: str, hook: KProbeSpec, spec: TracingPolicySpec, read: FormatReader
) -> list[PlannedHook]:
    calls = [hook.call]
    if hook.list_name is not None:
        listed = next(item for item in spec.lists if item.name == hook.list_name)
        calls = list(listed.values)
    planned = []
    for call in calls:
        try:
            name = syscall_name(call)
        except ValueError as e:
            raise _Refused(str(e), f"{path}.call") from None
        fmt = read("syscalls", f"sys_enter_{name}")
        args = tuple(
            _arg(f"{path}.args[{i}]", i, a, fmt.field(_SYSCALL_FIRST_ARG + a.index))
            for i, a in enumerate(hook.args)
        )
        exit_fmt, ret = _return_side(path, hook, name, read) if hook.return_ else (None, None)
        planned.append(
            PlannedHook(path, "process_kprobe", fmt, args, _ARCH_PREFIX + name, exit_fmt, ret)
        )
    return planned


# exit and exit_group never return: their sys_exit_* never fires.
_NO_RETURN = {"exit", "exit_group"}


def _return_side(
    path: str, hook: KProbeSpec, name: str, read: FormatReader
) -> tuple[TracepointFormat, PlannedArg]:
    """``return: true``: sys_exit_<name> and its ``ret`` field, read as the returnArg's
    type (an integer: a syscall returns a long; "auto" reads it signed)."""
    if name in _NO_RETURN:
        raise _Refused(f"{name} never returns: return: true cannot be served", f"{path}.return")
    fmt = read("syscalls", f"sys_exit_{name}")
    field = next((f for f in fmt.fields if f.name == "ret"), None)
    if field is None:
        raise _Refused(f"sys_exit_{name} has no ret field", f"{path}.return")
    declared = hook.return_arg.type if hook.return_arg is not None else "auto"
    kind = "int" if declared == "auto" else declared
    read_kind = _read_for(kind, field)
    if read_kind not in (INT, UINT):
        raise _Refused(
            f"returnArg type '{declared}' cannot be read from a syscall's return value (a long): "
            "declare an integer type (int, long, size_t, uint64, ...)",
            f"{path}.returnArg.type",
        )
    label = hook.return_arg.label if hook.return_arg is not None else None
    # A syscall's long, read whole: a narrower declared type would cut an error code.
    return fmt, PlannedArg(0, field, read_kind, kind, label)


def _arg(path: str, position: int, arg: Arg, field: Field | None) -> PlannedArg:
    if field is None or field.name.startswith("common_") or field.name == "__syscall_nr":
        raise _Refused(f"index {arg.index} names no argument of this hook", f"{path}.index")
    kind = arg.type if arg.type != "auto" else _auto_type(field)
    read = _read_for(kind, field)
    if read is None:
        raise _Refused(
            f"type '{arg.type}' cannot be read from field '{field.name}' ({field.c_type}) "
            f"of a tracepoint: {_hint(kind, field)}",
            f"{path}.type",
        )
    width = _TYPE_WIDTHS.get(kind, field.size) if read in (INT, UINT) else field.size
    return PlannedArg(position, field, read, kind, arg.label, min(width, field.size))


def _auto_type(field: Field) -> str:
    if field.is_data_loc or re.search(r"\bchar\s*\*$", field.c_type):
        return "string"
    if "sockaddr" in field.c_type and field.is_pointer:
        return "sockaddr"
    if re.fullmatch(r"__u8\[(4|16)\]", field.c_type):
        return "address"
    return "int" if field.signed else "uint64"


def _read_for(kind: str, field: Field) -> str | None:
    if kind in _TEXT_TYPES:
        if field.is_data_loc:
            return KERNEL_STRING
        return USER_STRING if re.search(r"\bchar\s*\*$", field.c_type) else None
    if kind == "sockaddr":
        return SOCKADDR if field.is_pointer and "sockaddr" in field.c_type else None
    if kind == "address":
        return ADDRESS if re.fullmatch(r"__u8\[(4|16)\]", field.c_type) else None
    if kind in _INT_TYPES | _UINT_TYPES and not field.is_data_loc and "[" not in field.c_type:
        return INT if kind in _INT_TYPES else UINT
    return None


def _hint(kind: str, field: Field) -> str:
    if kind in {"file", "path", "dentry", "linux_binprm", "sock", "skb", "cred"}:
        return f"'{kind}' is a kernel object a tracepoint does not carry" + (
            "; this field is a user pointer: use 'string'" if field.is_pointer else ""
        )
    return "declare a type that matches the field (or leave it out: 'auto')"


def default_formats(tracefs: Path = TRACEFS) -> FormatReader:
    return lambda sub, evt: read_tracefs_format(sub, evt, tracefs)
