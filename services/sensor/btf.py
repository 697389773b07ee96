"""Struct member offsets of the running kernel, from its BTF
(/sys/kernel/btf/vmlinux). BCC compiles against Debian's headers, which need
not match this kernel; offsets read here are the kernel's own, so the few
kernel fields a program reads (passed to it as -D macros) are always right."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import OcellusError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
_STRUCT, _UNION = 4, 5
_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG = 8, 9, 10, 11, 18
# Bytes that follow struct btf_type, per kind: (fixed, per vlen item).
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 17: (4, 0), 19: (0, 12)}  # fmt: skip


class BtfError(OcellusError):
    """The kernel's BTF is missing or lacks a field the sensor needs."""


@dataclass(frozen=True, slots=True)
class _Type:
    name: str
    kind: int
    ref: int  # for modifiers and typedefs: the type they refer to
    members: tuple[tuple[str, int, int], ...]  # (name, type id, bit offset)


class Btf:
    """The types of one BTF blob, parsed once."""

    def __init__(self, data: bytes) -> None:
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != _MAGIC:
            raise BtfError("not a BTF blob (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._types: list[_Type | None] = [None]  # type ids start at 1
        self._by_name: dict[tuple[str, int], int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            pos += 12
            members: list[tuple[str, int, int]] = []
            if kind in (_STRUCT, _UNION):
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
                    bit_offset = m_off & 0xFFFFFF if kind_flag else m_off
                    members.append((_str(strings, m_name), m_type, bit_offset))
                    pos += 12
            else:
                fixed, per_item = _EXTRA.get(kind, (0, 0))
                pos += fixed + per_item * vlen
            name = _str(strings, name_off)
            self._types.append(_Type(name, kind, size_or_type, tuple(members)))
            if name and kind in (_STRUCT, _UNION):
                self._by_name.setdefault((name, kind), len(self._types) - 1)

    @classmethod
    def from_kernel(cls, path: Path = VMLINUX_BTF) -> Btf:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BtfError(f"cannot read kernel BTF at {path}: {e.strerror}") from e

    def offset_of(self, struct_name: str, member: str) -> int:
        """Byte offset of ``member`` in ``struct struct_name``, looking through
        anonymous structs and unions (as in mm_struct)."""
        type_id = self._by_name.get((struct_name, _STRUCT))
        if type_id is None:
            raise BtfError(f"kernel BTF has no struct {struct_name}")
        found = self._find(type_id, member)
        if found is None:
            raise BtfError(f"kernel BTF: struct {struct_name} has no member {member}")
        if found % 8:
            raise BtfError(f"struct {struct_name}.{member} is a bitfield")
        return found // 8

    def size_of(self, struct_name: str) -> int:
        """sizeof(struct struct_name)."""
        type_id = self._by_name.get((struct_name, _STRUCT))
        if type_id is None:
            raise BtfError(f"kernel BTF has no struct {struct_name}")
        return self._resolve(type_id).ref  # a struct's size_or_type is its size

    def _find(self, type_id: int, member: str) -> int | None:
        t = self._resolve(type_id)
        for name, m_type, bit_offset in t.members:
            if name == member:
                return bit_offset
            if not name and self._resolve(m_type).kind in (_STRUCT, _UNION):
                inner = self._find(m_type, member)
                if inner is not None:
                    return bit_offset + inner
        return None

    def _resolve(self, type_id: int) -> _Type:
        t = self._types[type_id]
        while t is not None and t.kind in (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG):
            t = self._types[t.ref]
        assert t is not None
        return t


def _str(strings: bytes, offset: int) -> str:
    return strings[offset : strings.index(b"\0", offset)].decode()


# What bpf/process.bpf.c reads from the kernel, as -D macro → (struct, member).
SENSOR_OFFSETS = {
    "OCELLUS_OFF_TASK_MM": ("task_struct", "mm"),
    "OCELLUS_OFF_MM_ARG_START": ("mm_struct", "arg_start"),
    "OCELLUS_OFF_MM_ARG_END": ("mm_struct", "arg_end"),
    # Process selectors (lib/proc_select.h): namespaces and the pid namespace.
    "OCELLUS_OFF_TASK_NSPROXY": ("task_struct", "nsproxy"),
    "OCELLUS_OFF_TASK_CRED": ("task_struct", "cred"),
    "OCELLUS_OFF_TASK_THREAD_PID": ("task_struct", "thread_pid"),
    "OCELLUS_OFF_CRED_USER_NS": ("cred", "user_ns"),
    "OCELLUS_OFF_PID_LEVEL": ("pid", "level"),
    "OCELLUS_OFF_PID_NUMBERS": ("pid", "numbers"),
    "OCELLUS_OFF_UPID_NS": ("upid", "ns"),
    "OCELLUS_OFF_NSPROXY_UTS": ("nsproxy", "uts_ns"),
    "OCELLUS_OFF_NSPROXY_IPC": ("nsproxy", "ipc_ns"),
    "OCELLUS_OFF_NSPROXY_MNT": ("nsproxy", "mnt_ns"),
    "OCELLUS_OFF_NSPROXY_PID_FOR_CHILDREN": ("nsproxy", "pid_ns_for_children"),
    "OCELLUS_OFF_NSPROXY_NET": ("nsproxy", "net_ns"),
    "OCELLUS_OFF_NSPROXY_TIME": ("nsproxy", "time_ns"),
    "OCELLUS_OFF_NSPROXY_TIME_FOR_CHILDREN": ("nsproxy", "time_ns_for_children"),
    "OCELLUS_OFF_NSPROXY_CGROUP": ("nsproxy", "cgroup_ns"),
}
# Where a namespace's inum is: <struct>.ns (a struct ns_common) + ns_common.inum.
NS_INUM_OFFSETS = {
    "OCELLUS_OFF_INUM_UTS": "uts_namespace",
    "OCELLUS_OFF_INUM_IPC": "ipc_namespace",
    "OCELLUS_OFF_INUM_MNT": "mnt_namespace",
    "OCELLUS_OFF_INUM_PID": "pid_namespace",
    "OCELLUS_OFF_INUM_NET": "net",
    "OCELLUS_OFF_INUM_TIME": "time_namespace",
    "OCELLUS_OFF_INUM_CGROUP": "cgroup_namespace",
    "OCELLUS_OFF_INUM_USER": "user_namespace",
}


def sensor_cflags(btf: Btf | None = None) -> list[str]:
    btf = btf or Btf.from_kernel()
    flags = [f"-D{macro}={btf.offset_of(*where)}" for macro, where in SENSOR_OFFSETS.items()]
    inum = btf.offset_of("ns_common", "inum")
    flags += [f"-D{m}={btf.offset_of(s, 'ns') + inum}" for m, s in NS_INUM_OFFSETS.items()]
    flags.append(f"-DOCELLUS_SIZEOF_UPID={btf.size_of('upid')}")
    return flags
