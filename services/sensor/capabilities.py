"""What this kernel lets the sensor do, probed at start with tiny bpf()
calls (no compiler): ring buffers, cgroup sock_addr programs,
bpf_send_signal, kprobes, uprobes, BPF-LSM."""

from __future__ import annotations

import ctypes as ct
import errno
import os
from pathlib import Path

_SYS_BPF = 321  # x86_64
_BPF_MAP_CREATE = 0
_BPF_PROG_LOAD = 5
_MAP_TYPE_RINGBUF = 27
_PROG_TYPE_TRACEPOINT = 5
_PROG_TYPE_CGROUP_SOCK_ADDR = 18
_ATTACH_CGROUP_INET4_CONNECT = 10
_HELPER_SEND_SIGNAL = 109

_libc = ct.CDLL(None, use_errno=True)


class _MapCreate(ct.Structure):
    _fields_ = [
        ("map_type", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("_rest", ct.c_uint8 * 108),
    ]


class _ProgLoad(ct.Structure):
    _fields_ = [
        ("prog_type", ct.c_uint32),
        ("insn_cnt", ct.c_uint32),
        ("insns", ct.c_uint64),
        ("license", ct.c_uint64),
        ("log_level", ct.c_uint32),
        ("log_size", ct.c_uint32),
        ("log_buf", ct.c_uint64),
        ("kern_version", ct.c_uint32),
        ("prog_flags", ct.c_uint32),
        ("prog_name", ct.c_char * 16),
        ("prog_ifindex", ct.c_uint32),
        ("expected_attach_type", ct.c_uint32),
        ("_rest", ct.c_uint8 * 64),
    ]


def _bpf(cmd: int, attr: ct.Structure) -> str:
    fd = _libc.syscall(_SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if fd < 0:
        return errno.errorcode.get(ct.get_errno(), "error")
    os.close(fd)
    return "yes"


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> int:
    return code | (dst << 8) | (src << 12) | ((off & 0xFFFF) << 16) | ((imm & 0xFFFFFFFF) << 32)


_MOV64_IMM, _CALL, _EXIT = 0xB7, 0x85, 0x95


def _load(prog_type: int, insns: list[int], attach_type: int = 0) -> str:
    code = (ct.c_uint64 * len(insns))(*insns)
    license_ = ct.create_string_buffer(b"GPL")
    attr = _ProgLoad(
        prog_type=prog_type,
        insn_cnt=len(insns),
        insns=ct.addressof(code),
        license=ct.addressof(license_),
        expected_attach_type=attach_type,
    )
    return _bpf(_BPF_PROG_LOAD, attr)


def probe() -> dict[str, str]:
    """Capability → "yes" or the reason it is missing (an errno name or "absent")."""
    ringbuf = _bpf(_BPF_MAP_CREATE, _MapCreate(map_type=_MAP_TYPE_RINGBUF, max_entries=4096))
    cgroup_connect = _load(
        _PROG_TYPE_CGROUP_SOCK_ADDR,
        [_insn(_MOV64_IMM, 0, imm=1), _insn(_EXIT)],
        _ATTACH_CGROUP_INET4_CONNECT,
    )
    send_signal = _load(
        _PROG_TYPE_TRACEPOINT,
        [
            _insn(_MOV64_IMM, 1, imm=0),  # signal 0: probes the helper, signals nobody
            _insn(_CALL, imm=_HELPER_SEND_SIGNAL),
            _insn(_MOV64_IMM, 0, imm=0),
            _insn(_EXIT),
        ],
    )
    kprobes = "yes" if Path("/sys/bus/event_source/devices/kprobe").exists() else "absent"
    uprobes = "yes" if Path("/sys/bus/event_source/devices/uprobe").exists() else "absent"
    lsm_path = Path("/sys/kernel/security/lsm")
    try:
        lsm = "yes" if "bpf" in lsm_path.read_text().split(",") else "not in the LSM list"
    except OSError:
        lsm = "absent"
    lockdown = _read_lockdown()
    if lsm == "yes" and lockdown not in ("none", "unknown"):
        lsm = f"lockdown={lockdown}"
    return {
        "ringbuf": ringbuf,
        "cgroup_connect": cgroup_connect,
        "send_signal": send_signal,
        "kprobes": kprobes,
        "uprobes": uprobes,
        "bpf_lsm": lsm,
        "btf": "yes" if Path("/sys/kernel/btf/vmlinux").exists() else "absent",
        "lockdown": lockdown,
    }


def _read_lockdown() -> str:
    try:
        text = Path("/sys/kernel/security/lockdown").read_text()
    except OSError:
        return "unknown"
    # "none [integrity] confidentiality": the bracketed one is in force.
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return "unknown"
