"""Pinned BPF maps through the bpf() system call, without BCC.

The enforcer writes the sensor's policy maps from another process (DESIGN
§1): it opens them by their bpffs path and needs neither clang nor kernel
headers, only CAP_BPF. The sensor uses the same calls to check, before it
loads, that pins left by an earlier run still have the layout it expects
(BCC silently reuses a pinned map whatever its key and value sizes).
"""

from __future__ import annotations

import ctypes as ct
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NR_BPF = 321  # x86_64
_MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM, _MAP_DELETE_ELEM, _MAP_GET_NEXT_KEY = 1, 2, 3, 4
_OBJ_GET = 7
_OBJ_GET_INFO_BY_FD = 15
PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH

_libc = ct.CDLL(None, use_errno=True)


class BpfError(OSError):
    """A bpf() call failed; errno and what was being done."""


class _ElemAttr(ct.Structure):
    _fields_ = [("map_fd", ct.c_uint32), ("_pad", ct.c_uint32), ("key", ct.c_uint64),
                ("value", ct.c_uint64), ("flags", ct.c_uint64)]  # fmt: skip


class _ObjAttr(ct.Structure):
    _fields_ = [("pathname", ct.c_uint64), ("bpf_fd", ct.c_uint32), ("file_flags", ct.c_uint32)]


class _InfoAttr(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class _MapInfo(ct.Structure):  # struct bpf_map_info, as far as we read it
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16)]  # fmt: skip


def _bpf(cmd: int, attr: ct.Structure, what: str) -> int:
    ret = int(_libc.syscall(_NR_BPF, cmd, ct.byref(attr), ct.sizeof(attr)))
    if ret < 0:
        err = ct.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return ret


@dataclass(frozen=True, slots=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def _ptr(obj: Any) -> int:
    return ct.addressof(obj)


class PinnedMap:
    """A map opened by its bpffs path; values are ctypes objects (per-CPU
    maps: an array of one value per possible CPU)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        name = ct.create_string_buffer(os.fsencode(path))
        self.fd = _bpf(_OBJ_GET, _ObjAttr(pathname=_ptr(name)), f"open pinned map {path}")
        try:
            self.info = map_info(self.fd)
        except BpfError:
            os.close(self.fd)
            raise

    def update(self, key: Any, value: Any, flags: int = 0) -> None:
        attr = _ElemAttr(map_fd=self.fd, key=_ptr(key), value=_ptr(value), flags=flags)
        _bpf(_MAP_UPDATE_ELEM, attr, f"update {self.path.name}")

    def lookup(self, key: Any, value: Any) -> bool:
        """Fill ``value``; False when the key is absent."""
        attr = _ElemAttr(map_fd=self.fd, key=_ptr(key), value=_ptr(value))
        try:
            _bpf(_MAP_LOOKUP_ELEM, attr, f"lookup {self.path.name}")
        except BpfError as e:
            if e.errno == 2:  # ENOENT
                return False
            raise
        return True

    def delete(self, key: Any) -> bool:
        """False when the key was absent."""
        try:
            _bpf(_MAP_DELETE_ELEM, _ElemAttr(map_fd=self.fd, key=_ptr(key)), "delete")
        except BpfError as e:
            if e.errno == 2:
                return False
            raise
        return True

    def keys(self, key_type: type[ct.Structure] | type[ct._SimpleCData]) -> list[Any]:
        """Every key, as ``key_type`` instances (a snapshot: the map may change)."""
        out: list[Any] = []
        prev: Any = None
        while True:
            nxt = key_type()
            attr = _ElemAttr(map_fd=self.fd, key=_ptr(prev) if prev is not None else 0,
                             value=_ptr(nxt))  # fmt: skip
            try:
                _bpf(_MAP_GET_NEXT_KEY, attr, f"keys of {self.path.name}")
            except BpfError as e:
                if e.errno == 2:
                    return out
                raise
            out.append(nxt)
            prev = nxt

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info), info=_ptr(info))
    _bpf(_OBJ_GET_INFO_BY_FD, attr, f"info of map fd {fd}")
    return MapInfo(
        info.type,
        info.id,
        info.key_size,
        info.value_size,
        info.max_entries,
        info.map_flags,
        info.name.decode(errors="replace"),
    )


def possible_cpus() -> int:
    """How many per-CPU slots a per-CPU map value has (/sys's possible mask)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def prog_id(fd: int) -> int:
    """The kernel's id of the program behind ``fd`` (what bpftool shows)."""
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            return int(line.split()[1])
    raise BpfError(0, f"fd {fd} is not a BPF program")
