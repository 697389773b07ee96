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


# -- program run-time statistics (kernel.bpf_stats_enabled) ----------------------
_ENABLE_STATS = 32  # BPF_ENABLE_STATS
_STATS_RUN_TIME = 0  # BPF_STATS_RUN_TIME
BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


class _EnableStatsAttr(ct.Structure):
    _fields_ = [("type", ct.c_uint32)]


class _ProgInfo(ct.Structure):  # struct bpf_prog_info, up to its name
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8),
                ("jited_prog_len", ct.c_uint32), ("xlated_prog_len", ct.c_uint32),
                ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
                ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32),
                ("nr_map_ids", ct.c_uint32), ("map_ids", ct.c_uint64),
                ("name", ct.c_char * 16)]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProgStats:
    fd: int
    id: int
    name: str  # the kernel's name: at most 15 characters
    run_time_ns: int
    run_cnt: int


def enable_run_time_stats() -> int:
    """Turn kernel.bpf_stats_enabled on for as long as the returned fd is open
    (BPF_ENABLE_STATS: nothing to undo if the process dies). CAP_SYS_ADMIN."""
    return _bpf(_ENABLE_STATS, _EnableStatsAttr(type=_STATS_RUN_TIME), "enable BPF run-time stats")


def run_time_stats_enabled() -> bool:
    try:
        return BPF_STATS_SYSCTL.read_text().strip() == "1"
    except OSError:
        return False


def own_programs() -> list[ProgStats]:
    """Every BPF program this process holds an fd of, with its run counters
    (zero unless kernel.bpf_stats_enabled is on), from /proc/self/fdinfo."""
    out = []
    fd_dir = Path("/proc/self/fd")
    for entry in fd_dir.iterdir():
        try:
            if str(entry.readlink()) != "anon_inode:bpf-prog":
                continue
            fields = dict(
                line.split(":", 1)
                for line in (Path("/proc/self/fdinfo") / entry.name).read_text().splitlines()
                if ":" in line
            )
        except OSError:
            continue  # closed meanwhile (the listing's own fd among them)
        fd = int(entry.name)
        info = _ProgInfo()
        attr = _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info), info=_ptr(info))
        try:
            _bpf(_OBJ_GET_INFO_BY_FD, attr, f"info of prog fd {fd}")
            name = info.name.decode(errors="replace")
        except BpfError:
            name = ""
        out.append(
            ProgStats(
                fd,
                int(fields.get("prog_id", "0")),
                name,
                int(fields.get("run_time_ns", "0")),
                int(fields.get("run_cnt", "0")),
            )
        )
    return out


# -- what else is loaded (the sensor's guard) --------------------------------------
_OBJ_PIN = 6
_PROG_GET_NEXT_ID, _PROG_GET_FD_BY_ID = 11, 13
_LINK_GET_FD_BY_ID, _LINK_GET_NEXT_ID = 30, 31


class _IdAttr(ct.Structure):
    _fields_ = [("start_id", ct.c_uint32), ("next_id", ct.c_uint32), ("open_flags", ct.c_uint32)]


def _ids(cmd: int) -> list[int]:
    out: list[int] = []
    while True:
        attr = _IdAttr(start_id=out[-1] if out else 0)
        try:
            _bpf(cmd, attr, "next id")
        except BpfError:
            return out
        out.append(attr.next_id)


def prog_ids() -> list[int]:
    return _ids(_PROG_GET_NEXT_ID)


def link_ids() -> list[int]:
    return _ids(_LINK_GET_NEXT_ID)


def _info_by_id(get_fd: int, obj_id: int, buf: Any) -> bool:
    try:
        fd = _bpf(get_fd, _IdAttr(start_id=obj_id), "fd by id")
    except BpfError:
        return False  # gone meanwhile
    try:
        attr = _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(buf), info=_ptr(buf))
        _bpf(_OBJ_GET_INFO_BY_FD, attr, "info")
        return True
    except BpfError:
        return False
    finally:
        os.close(fd)


def prog_info(prog_id: int) -> tuple[str, int, int] | None:
    """(name, type, uid that loaded it) of a program, None if it is gone."""
    info = _ProgInfo()
    if not _info_by_id(_PROG_GET_FD_BY_ID, prog_id, info):
        return None
    return info.name.decode(errors="replace"), info.type, info.created_by_uid


def link_info(link_id: int) -> tuple[int, int, int] | None:
    """(link type, program id, cgroup id for a cgroup link else 0), None if gone.
    A cgroup link detached by hand (bpftool link detach) has cgroup id 0."""
    buf = (ct.c_uint32 * 64)()  # the kernel fills as much of its union as it has
    if not _info_by_id(_LINK_GET_FD_BY_ID, link_id, buf):
        return None
    link_type, prog = buf[0], buf[2]
    cgroup = buf[4] | (buf[5] << 32) if link_type == 3 else 0  # BPF_LINK_TYPE_CGROUP
    return link_type, prog, cgroup


def pinned_map_id(path: Path) -> int | None:
    """The id of the map pinned at ``path``, None if nothing (or no map) is there."""
    try:
        m = PinnedMap(path)
    except OSError:
        return None
    try:
        return m.info.id
    finally:
        m.close()


def obj_pin(fd: int, path: Path) -> None:
    name = ct.create_string_buffer(os.fsencode(path))
    _bpf(_OBJ_PIN, _ObjAttr(pathname=_ptr(name), bpf_fd=fd), f"pin {path}")
