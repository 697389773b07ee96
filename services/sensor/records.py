"""The sensor's side of the ring buffer: ctypes mirrors of bpf/lib/events.h
(checked against the C compiler by tests/sensor/test_layout.py) and the
decoding of records into the plain dicts published on the bus."""

from __future__ import annotations

import ctypes as ct
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas import subjects
from schemas.raw import Op, RecordFlag
from services.sensor.hook_records import HK_RETURN, decode_args

RECORD_VERSION = 1  # OCELLUS_RECORD_VERSION
COMM_LEN = 16


class Header(ct.Structure):
    _fields_ = [
        ("op", ct.c_uint8),
        ("version", ct.c_uint8),
        ("flags", ct.c_uint16),
        ("pid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("ppid", ct.c_uint32),
        ("ktime_ns", ct.c_uint64),
        ("cgroup_id", ct.c_uint64),
        ("uid", ct.c_uint32),
        ("gid", ct.c_uint32),
        ("comm", ct.c_char * COMM_LEN),
    ]


class ExecFixed(ct.Structure):
    _fields_ = [
        ("hdr", Header),
        ("args_len", ct.c_uint16),
        ("filename_len", ct.c_uint16),
        ("argc", ct.c_uint16),
        ("_pad", ct.c_uint16),
    ]


class Exit(ct.Structure):
    _fields_ = [
        ("hdr", Header),
        ("exit_code", ct.c_uint32),
        ("signal", ct.c_uint32),
    ]


class Clone(ct.Structure):
    _fields_ = [
        ("hdr", Header),
        ("parent_tid", ct.c_uint32),
        ("_pad", ct.c_uint32),
        ("clone_flags", ct.c_uint64),
    ]


class Cgroup(ct.Structure):
    _fields_ = [
        ("hdr", Header),
        ("id", ct.c_uint64),
        ("level", ct.c_uint32),
        ("path_len", ct.c_uint16),
        ("_pad", ct.c_uint16),
    ]


class HookFixed(ct.Structure):
    """struct ocellus_hook_fixed (bpf/lib/policy.h); arg items follow it."""

    _fields_ = [
        ("hdr", Header),
        ("hook_id", ct.c_uint32),
        ("slot", ct.c_uint8),
        ("selector", ct.c_uint8),
        ("action", ct.c_uint8),
        ("nargs", ct.c_uint8),
        ("args_len", ct.c_uint16),
        ("kflags", ct.c_uint8),
        ("_pad", ct.c_uint8),
        ("_pad2", ct.c_uint32),
    ]


class RecordError(ValueError):
    """A ring-buffer record the sensor cannot decode (a C/Python mismatch)."""


def _text(raw: bytes) -> str:
    # Valid UTF-8 is required downstream (protobuf JSON); undecodable bytes
    # stay visible as \xNN rather than silently replaced.
    return raw.decode("utf-8", "backslashreplace")


_CODES: dict[Any, str] = {ct.c_uint8: "B", ct.c_uint16: "H", ct.c_uint32: "I", ct.c_uint64: "Q"}


def struct_format(cls: type[ct.Structure]) -> str:
    """The struct module format of a ctypes mirror (nested structs flattened):
    decoding with struct.unpack_from is several times cheaper than ctypes
    attribute access, and the layout stays defined once (the ctypes class)."""
    parts = []
    for field in cls._fields_:
        ctype = field[1]
        if isinstance(ctype, type) and issubclass(ctype, ct.Structure):
            parts.append(struct_format(ctype))
        elif isinstance(ctype, type) and issubclass(ctype, ct.Array):
            parts.append(f"{ctype._length_}s")
        else:
            parts.append(_CODES[ctype])
    return "".join(parts)


_EXEC = struct.Struct("<" + struct_format(ExecFixed))
_EXIT = struct.Struct("<" + struct_format(Exit))
_CLONE = struct.Struct("<" + struct_format(Clone))
_CGROUP = struct.Struct("<" + struct_format(Cgroup))
_HOOK = struct.Struct("<" + struct_format(HookFixed))


_COMMS: dict[bytes, str] = {}  # comm as read -> its text: a few distinct values
_COMMS_MAX = 4096


def _comm(raw: bytes) -> str:
    text = _COMMS.get(raw)
    if text is None:
        if len(_COMMS) >= _COMMS_MAX:
            _COMMS.clear()
        text = _COMMS[raw] = _text(raw.split(b"\0", 1)[0])
    return text


def _header(f: tuple[Any, ...]) -> dict[str, Any]:
    # f: op, version, flags, pid, tid, ppid, ktime, cgroup_id, uid, gid, comm, ...
    # (a dict display: the cheapest way to build it, on the hottest path)
    return {
        "ktime": f[6], "pid": f[3], "tid": f[4], "ppid": f[5], "uid": f[8], "gid": f[9],
        "cgroup_id": f[7], "comm": _comm(f[10]), "flags": f[2],
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ArgLimits:
    """Per-argument and argument-count limits, applied here; the kernel side
    limits the total (OCELLUS_ARGS_MAX)."""

    arg_max: int = 1024
    argc_max: int = 128


def decode_exec(data: bytes, limits: ArgLimits) -> dict[str, Any]:
    fields = _EXEC.unpack_from(data)
    args_len, filename_len = fields[11], fields[12]
    args_end = _EXEC.size + args_len
    # NUL-separated; a cut last argument has no NUL of its own.
    args = data[_EXEC.size : args_end].split(b"\0")
    if args and args[-1] == b"":
        args.pop()
    rec = _header(fields)
    if len(args) > limits.argc_max or (args and max(map(len, args)) > limits.arg_max):
        args = [a[: limits.arg_max] for a in args[: limits.argc_max]]
        rec["flags"] |= RecordFlag.ARGS_TRUNCATED
    rec["binary"] = _text(data[args_end : args_end + filename_len])
    rec["argv"] = [_text(a) for a in args]
    return rec


def decode_exit(data: bytes, _limits: ArgLimits) -> dict[str, Any]:
    fields = _EXIT.unpack_from(data)
    rec = _header(fields)
    rec["exit_code"], rec["signal"] = fields[11], fields[12]
    return rec


def decode_clone(data: bytes, _limits: ArgLimits) -> dict[str, Any]:
    fields = _CLONE.unpack_from(data)
    rec = _header(fields)
    rec["parent_tid"], rec["clone_flags"] = fields[11], fields[13]
    return rec


def decode_cgroup(data: bytes, _limits: ArgLimits) -> dict[str, Any]:
    fields = _CGROUP.unpack_from(data)
    rec = _header(fields)
    rec["id"], rec["level"] = fields[11], fields[12]
    rec["path"] = _text(data[_CGROUP.size : _CGROUP.size + fields[13]])
    return rec


def decode_hook(data: bytes, _limits: ArgLimits) -> dict[str, Any]:
    fields = _HOOK.unpack_from(data)
    rec = _header(fields)
    rec["hook_id"], rec["slot"], rec["selector"], rec["action"] = fields[11:15]
    nargs, args_len, kflags = fields[15], fields[16], fields[17]
    returns = bool(kflags & HK_RETURN)  # a return item follows the args
    try:
        items = decode_args(data[_HOOK.size : _HOOK.size + args_len], nargs + returns)
    except struct.error as e:
        raise RecordError(f"process_hook args: {e}") from None
    if returns:
        rec["ret"] = items.pop()
    rec["args"] = items
    return rec


DECODERS: dict[int, tuple[str, int, Callable[[bytes, ArgLimits], dict[str, Any]]]] = {
    Op.EXEC: (subjects.PROCESS_EXEC, _EXEC.size, decode_exec),
    Op.EXIT: (subjects.PROCESS_EXIT, _EXIT.size, decode_exit),
    Op.CLONE: (subjects.PROCESS_CLONE, _CLONE.size, decode_clone),
    Op.CGROUP_MKDIR: (subjects.CGROUP_MKDIR, _CGROUP.size, decode_cgroup),
    Op.CGROUP_RMDIR: (subjects.CGROUP_RMDIR, _CGROUP.size, decode_cgroup),
    Op.HOOK: (subjects.PROCESS_HOOK, _HOOK.size, decode_hook),
}


def decode(data: bytes, limits: ArgLimits = ArgLimits()) -> tuple[str, dict[str, Any]]:
    """(event type, record dict) of one ring-buffer record."""
    if len(data) < 2:
        raise RecordError(f"record of {len(data)} bytes")
    try:
        event_type, min_size, decoder = DECODERS[data[0]]
    except KeyError:
        raise RecordError(f"unknown op {data[0]}") from None
    if data[1] != RECORD_VERSION:
        raise RecordError(f"record version {data[1]}, expected {RECORD_VERSION}")
    if len(data) < min_size:
        raise RecordError(f"{event_type} record of {len(data)} bytes, need {min_size}")
    return event_type, decoder(data, limits)
