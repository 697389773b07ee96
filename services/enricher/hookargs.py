"""A hook record's args as Tetragon's ``KprobeArgument`` JSON, by the declared type.

The oneof member follows Tetragon's readers (pkg/sensors/tracing/args_linux.go and its
tracepoint handler): int/int8/int16/int32 → ``int_arg`` (int32; the low bits of the
field, as C and Tetragon read them), long/int64 →
``long_arg`` (int64, a JSON string), uint8/uint16/uint32 → ``uint_arg``,
uint64/ulong/size_t → ``size_arg`` (uint64, a JSON string), string/filename/data_loc →
``string_arg``, char_buf → ``bytes_arg`` (base64), sockaddr → ``sockaddr_arg``,
bpf_cmd → ``bpf_cmd_arg``, capability → ``capability_arg``. Where Ocellus reads less than
Tetragon, the value is still exact: ``fd`` is the descriptor number (``int_arg``;
Tetragon's ``file_arg`` path needs FollowFD state Ocellus does not keep), ``syscall64`` the
number (``size_arg``, Tetragon's compatibility form: the ABI is not in the tracepoint),
``address`` (an Ocellus type for ``__u8[4|16]`` fields) the address as ``string_arg``.

An arg that could not be read (None), a value that does not fit the declared type, or a
type with no conversion becomes an argument with no member set: what Tetragon itself sends
for an arg it could not read, so positions stay right and no value is ever made up. The
caller counts why.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from schemas.events import BPF_CMDS, CAPABILITY_NAMES
from schemas.raw import SockAddr

Value = int | str | SockAddr | None
# A converter: the value -> the KprobeArgument member {name: json} (a new dict each call:
# convert_args adds the label to it), or None when it cannot be given exactly.
Convert = Callable[[Any], dict[str, Any] | None]

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)
_U64 = (0, 2**64 - 1)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ranged(member: str, bounds: tuple[int, int], *, as_string: bool = False) -> Convert:
    lo, hi = bounds

    def convert(v: Any) -> dict[str, Any] | None:
        if not _is_int(v) or not lo <= v <= hi:
            return None
        return {member: str(v) if as_string else v}

    return convert


def _narrow(member: str, bits: int, *, signed: bool) -> Convert:
    """A C int of ``bits`` bits: its low bits, as Tetragon reads it (``int32(int16(x))``).
    The sensor reads the whole field (a syscall's ``int dfd`` is 8 bytes in the
    tracepoint, AT_FDCWD arriving as 4294967196); the declared type says what it is."""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)

    lo, hi = _I64[0], _U64[1]

    def convert(v: Any) -> dict[str, Any] | None:
        # _is_int inlined: this is the converter of most args
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            return None
        low = v & mask
        return {member: low - (1 << bits) if signed and low & sign else low}

    return convert


def _string(v: Any) -> dict[str, Any] | None:
    return {"string_arg": v} if isinstance(v, str) else None


def _bytes(v: Any) -> dict[str, Any] | None:
    # The sensor hands buffers over as UTF-8 text; Tetragon's char_buf is bytes.
    if not isinstance(v, str):
        return None
    return {"bytes_arg": base64.b64encode(v.encode("utf-8", "surrogateescape")).decode("ascii")}


def _sockaddr(v: Any) -> dict[str, Any] | None:
    if not isinstance(v, SockAddr):
        return None
    member: dict[str, Any] = {}
    if v.family:
        member["family"] = v.family
    if v.addr:
        member["addr"] = v.addr
    if v.port:
        member["port"] = v.port
    return {"sockaddr_arg": member}


def _bpf_cmd(v: Any) -> dict[str, Any] | None:
    if not _is_int(v) or not 0 <= v < len(BPF_CMDS):
        return None  # a command newer than Tetragon's enum: no name to give
    return {"bpf_cmd_arg": BPF_CMDS[v]}


def _capability(v: Any) -> dict[str, Any] | None:
    if not _is_int(v) or not _I32[0] <= v <= _I32[1]:
        return None
    member: dict[str, Any] = {"value": v}
    if 0 <= v < len(CAPABILITY_NAMES):
        # The proto enum spells 1 "DAC_OVERRIDE"; Tetragon's capability names do not.
        member["name"] = "CAP_DAC_OVERRIDE" if v == 1 else CAPABILITY_NAMES[v]
    return {"capability_arg": member}


_LONG = _ranged("long_arg", _I64, as_string=True)
_SIZE = _ranged("size_arg", _U64, as_string=True)

CONVERTERS: dict[str, Convert] = {
    **dict.fromkeys(("int", "sint32", "int32", "fd"), _narrow("int_arg", 32, signed=True)),
    **dict.fromkeys(("sint16", "int16"), _narrow("int_arg", 16, signed=True)),
    **dict.fromkeys(("sint8", "int8"), _narrow("int_arg", 8, signed=True)),
    "uint32": _narrow("uint_arg", 32, signed=False),
    "uint16": _narrow("uint_arg", 16, signed=False),
    "uint8": _narrow("uint_arg", 8, signed=False),
    **dict.fromkeys(("long", "sint64", "int64"), _LONG),
    **dict.fromkeys(("uint64", "ulong", "size_t", "syscall64"), _SIZE),
    **dict.fromkeys(("string", "filename", "data_loc", "address"), _string),
    "char_buf": _bytes,
    "sockaddr": _sockaddr,
    "bpf_cmd": _bpf_cmd,
    "capability": _capability,
}


def _unconvertible(_v: Any) -> None:
    return None


def converter(arg_type: str) -> Convert:
    """The converter of a declared type (one that never converts, for unknown types)."""
    return CONVERTERS.get(arg_type, _unconvertible)


_UNDECLARED: tuple[Convert, str | None] = (_unconvertible, None)


def convert_args(
    values: list[Value], converters: list[tuple[Convert, str | None]]
) -> tuple[list[dict[str, Any]], int, int]:
    """The args as KprobeArgument JSON, plus how many were unread (None) and how many
    did not fit their declared type (or had no declaration: more values than declared)."""
    out: list[dict[str, Any]] = []
    unread = unfit = 0
    declared = len(converters)
    for i, value in enumerate(values):
        convert, label = converters[i] if i < declared else _UNDECLARED
        arg: dict[str, Any]
        if value is None:
            unread += 1
            arg = {}
        else:
            member = convert(value)  # a new dict each time: the label can go into it
            if member is None:
                unfit += 1
                arg = {}
            else:
                arg = member
        if label:
            arg["label"] = label
        out.append(arg)
    return out, unread, unfit
