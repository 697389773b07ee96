"""The sensor's side of the ring buffer: ctypes mirrors of bpf/lib/events.h
(checked against the C compiler by tests/sensor/test_layout.py) and the
decoding of records into the plain dicts published on the bus."""

from __future__ import annotations

import ctypes as ct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas import subjects
from schemas.raw import Op, RecordFlag

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


class RecordError(ValueError):
    """A ring-buffer record the sensor cannot decode (a C/Python mismatch)."""


def _text(raw: bytes) -> str:
    # Valid UTF-8 is required downstream (protobuf JSON); undecodable bytes
    # stay visible as \xNN rather than silently replaced.
    return raw.decode("utf-8", "backslashreplace")


def _header(h: Header) -> dict[str, Any]:
    return {
        "ktime": h.ktime_ns,
        "pid": h.pid,
        "tid": h.tid,
        "ppid": h.ppid,
        "uid": h.uid,
        "gid": h.gid,
        "cgroup_id": h.cgroup_id,
        "comm": _text(h.comm),
        "flags": h.flags,
    }


_EXEC_FIXED = ct.sizeof(ExecFixed)


@dataclass(frozen=True, slots=True)
class ArgLimits:
    """Per-argument and argument-count limits, applied here; the kernel side
    limits the total (OCELLUS_ARGS_MAX)."""

    arg_max: int = 1024
    argc_max: int = 128


def decode_exec(data: bytes, limits: ArgLimits) -> dict[str, Any]:
    fixed = ExecFixed.from_buffer_copy(data, 0)
    args_end = _EXEC_FIXED + fixed.args_len
    blob = data[_EXEC_FIXED:args_end]
    # NUL-separated; a cut last argument has no NUL of its own.
    args = blob.split(b"\0")
    if args and args[-1] == b"":
        args.pop()
    rec = _header(fixed.hdr)
    if len(args) > limits.argc_max or any(len(a) > limits.arg_max for a in args):
        args = [a[: limits.arg_max] for a in args[: limits.argc_max]]
        rec["flags"] |= RecordFlag.ARGS_TRUNCATED
    rec["binary"] = _text(data[args_end : args_end + fixed.filename_len])
    rec["argv"] = [_text(a) for a in args]
    return rec


def decode_exit(data: bytes, _limits: ArgLimits) -> dict[str, Any]:
    ev = Exit.from_buffer_copy(data, 0)
    rec = _header(ev.hdr)
    rec["exit_code"] = ev.exit_code
    rec["signal"] = ev.signal
    return rec


def decode_clone(data: bytes, _limits: ArgLimits) -> dict[str, Any]:
    ev = Clone.from_buffer_copy(data, 0)
    rec = _header(ev.hdr)
    rec["parent_tid"] = ev.parent_tid
    rec["clone_flags"] = ev.clone_flags
    return rec


_CGROUP_FIXED = ct.sizeof(Cgroup)


def decode_cgroup(data: bytes, _limits: ArgLimits) -> dict[str, Any]:
    ev = Cgroup.from_buffer_copy(data, 0)
    rec = _header(ev.hdr)
    rec["id"] = ev.id
    rec["level"] = ev.level
    rec["path"] = _text(data[_CGROUP_FIXED : _CGROUP_FIXED + ev.path_len])
    return rec


DECODERS: dict[int, tuple[str, int, Callable[[bytes, ArgLimits], dict[str, Any]]]] = {
    Op.EXEC: (subjects.PROCESS_EXEC, _EXEC_FIXED, decode_exec),
    Op.EXIT: (subjects.PROCESS_EXIT, ct.sizeof(Exit), decode_exit),
    Op.CLONE: (subjects.PROCESS_CLONE, ct.sizeof(Clone), decode_clone),
    Op.CGROUP_MKDIR: (subjects.CGROUP_MKDIR, _CGROUP_FIXED, decode_cgroup),
    Op.CGROUP_RMDIR: (subjects.CGROUP_RMDIR, _CGROUP_FIXED, decode_cgroup),
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
