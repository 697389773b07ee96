"""Attach a program to a tracepoint through a BPF link carrying a cookie.

The generic hook program needs to know which tracepoint fired, and cannot
read ``common_type``: the kernel stores the pt_regs pointer over the first
8 bytes of a tracepoint program's context. So each attachment carries the
tracepoint id as its BPF cookie (``bpf_get_attach_cookie``), which BCC's
attach_tracepoint cannot set: perf_event_open + libbpf's bpf_link_create.
"""

from __future__ import annotations

import ctypes as ct
import os

_NR_PERF_EVENT_OPEN = 298  # x86_64
_PERF_TYPE_TRACEPOINT = 2
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_BPF_PERF_EVENT = 41  # enum bpf_attach_type
_ATTR_SIZE = 136  # PERF_ATTR_SIZE_VER8

_libc = ct.CDLL(None, use_errno=True)
_libbpf = ct.CDLL("libbpf.so.1", use_errno=True)


class _LinkOpts(ct.Structure):
    # struct bpf_link_create_opts, as far as perf_event.bpf_cookie (libbpf
    # reads only what `sz` covers)
    _fields_ = [("sz", ct.c_size_t), ("flags", ct.c_uint32), ("iter_info", ct.c_void_p),
                ("iter_info_len", ct.c_uint32), ("target_btf_id", ct.c_uint32),
                ("bpf_cookie", ct.c_uint64)]  # fmt: skip


class TracepointLink:
    """``prog_fd`` attached to tracepoint ``tp_id`` with ``cookie``; close() detaches."""

    def __init__(self, prog_fd: int, tp_id: int, cookie: int) -> None:
        self.prog_fd = prog_fd
        attr = (ct.c_uint8 * _ATTR_SIZE)()
        ct.c_uint32.from_buffer(attr, 0).value = _PERF_TYPE_TRACEPOINT
        ct.c_uint32.from_buffer(attr, 4).value = _ATTR_SIZE
        ct.c_uint64.from_buffer(attr, 8).value = tp_id  # config
        ct.c_uint64.from_buffer(attr, 16).value = 1  # sample_period
        ct.c_uint32.from_buffer(attr, 48).value = 1  # wakeup_events
        self.perf_fd = _libc.syscall(
            _NR_PERF_EVENT_OPEN, attr, -1, 0, -1, _PERF_FLAG_FD_CLOEXEC
        )  # pid -1, cpu 0: a tracepoint program runs on every CPU anyway
        if self.perf_fd < 0:
            err = ct.get_errno()
            raise OSError(err, f"perf_event_open(tracepoint {tp_id}): {os.strerror(err)}")
        opts = _LinkOpts(sz=ct.sizeof(_LinkOpts), bpf_cookie=cookie)
        self.link_fd = _libbpf.bpf_link_create(prog_fd, self.perf_fd, _BPF_PERF_EVENT,
                                               ct.byref(opts))  # fmt: skip
        if self.link_fd < 0:
            os.close(self.perf_fd)
            raise OSError(-self.link_fd, f"bpf_link_create: {os.strerror(-self.link_fd)}")

    def close(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            os.close(self.perf_fd)
            self.link_fd = self.perf_fd = -1
