"""Process selectors (matchBinaries, matchPIDs, matchNamespaces) as the kernel
evaluates them: ctypes mirrors of their part of bpf/lib/policy.h (checked by
tests/sensor/test_layout.py), what a slot is configured with, and the
bin_match entries of a set of binary value sets."""

from __future__ import annotations

import ctypes as ct
import enum
from dataclasses import dataclass

HOOK_PIDS = 8
HOOK_NS_FILTERS = 4
HOOK_NS_VALUES = 4
PROC_ANCESTORS = 8
BIN_SETS = 64
BIN_EPOCHS = 32
BIN_KEY_DATA = 255
HOST_NS = 0  # a namespace value: the host's (the sensor knows its inums)


class NsKind(enum.IntEnum):
    """enum ocellus_ns_kind; names are Tetragon's matchNamespaces kinds."""

    Uts = 0
    Ipc = 1
    Mnt = 2
    Pid = 3
    PidForChildren = 4
    Net = 5
    Time = 6
    TimeForChildren = 7
    Cgroup = 8
    User = 9


class ProcFlag(enum.IntFlag):
    """OCELLUS_PF_*."""

    ON = 1 << 0
    NOT = 1 << 1
    FOLLOW = 1 << 2
    NSPID = 1 << 3


class BinKind(enum.Enum):
    """How a matchBinaries value is matched: the whole path, its start, its end."""

    EXACT = "exact"  # In, NotIn
    PREFIX = "prefix"  # Prefix, NotPrefix
    POSTFIX = "postfix"  # Postfix, NotPostfix


class NsFilter(ct.Structure):
    _fields_ = [
        ("kind", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("nvals", ct.c_uint8),
        ("_pad", ct.c_uint8),
        ("vals", ct.c_uint32 * HOOK_NS_VALUES),
    ]


class ProcFilter(ct.Structure):
    _fields_ = [
        ("bin_bit", ct.c_uint8),
        ("bin_flags", ct.c_uint8),
        ("pid_flags", ct.c_uint8),
        ("npids", ct.c_uint8),
        ("nns", ct.c_uint8),
        ("scope_flags", ct.c_uint8),
        ("scope", ct.c_uint16),
        ("pids", ct.c_uint32 * HOOK_PIDS),
        ("ns", NsFilter * HOOK_NS_FILTERS),
    ]


class BinKey(ct.Structure):
    _fields_ = [("prefixlen", ct.c_uint32), ("dir", ct.c_uint8), ("data", ct.c_char * BIN_KEY_DATA)]


class BinValue(ct.Structure):
    _fields_ = [("bits", ct.c_uint64), ("own", ct.c_uint64)]


class BinState(ct.Structure):
    _fields_ = [("epoch", ct.c_uint32), ("_pad", ct.c_uint32), ("keep", ct.c_uint64 * BIN_EPOCHS)]


@dataclass(frozen=True, slots=True)
class BinaryFilter:
    """A matchBinaries filter: a value set (shared by every slot that names the
    same one: a bit in the kernel) and how the slot tests it."""

    kind: BinKind
    values: frozenset[bytes]
    negate: bool = False
    follow: bool = False  # followChildren

    @property
    def set_key(self) -> tuple[BinKind, frozenset[bytes]]:
        return self.kind, self.values


@dataclass(frozen=True, slots=True)
class PidFilter:
    """A matchPIDs filter."""

    pids: tuple[int, ...]
    negate: bool = False
    follow: bool = False  # followForks: or any of PROC_ANCESTORS ancestors
    namespace: bool = False  # isNamespacePID


@dataclass(frozen=True, slots=True)
class NamespaceFilter:
    """A matchNamespaces filter; HOST_NS (0) among the values means the host's."""

    kind: NsKind
    inums: tuple[int, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class ScopeFilter:
    """A policy's scope (podSelector, containerSelector, ...): its cgroup set in
    scope_cgroups; ``negate``: the policy applies outside the set (the host
    included, the set holding the containers left out)."""

    scope: int  # 1 .. SCOPE_IDS - 1
    negate: bool = False


SCOPE_IDS = 1 << 16  # ocellus_proc_filter.scope is a __u16; 0 is never used


def proc_filter_value(
    binary: BinaryFilter | None,
    pids: PidFilter | None,
    namespaces: tuple[NamespaceFilter, ...],
    bin_bit: int | None,
    scope: ScopeFilter | None = None,
) -> ProcFilter:
    """The hook_config .proc of one slot; ``bin_bit``: the bit of its binary set."""
    pf = ProcFilter()
    if scope is not None:
        pf.scope_flags = _flags(negate=scope.negate, follow=False)
        pf.scope = scope.scope
    if binary is not None:
        if bin_bit is None:
            raise ValueError("a matchBinaries filter needs the bit of its value set")
        pf.bin_bit = bin_bit
        pf.bin_flags = _flags(negate=binary.negate, follow=binary.follow)
    if pids is not None:
        pf.pid_flags = _flags(negate=pids.negate, follow=pids.follow)
        if pids.namespace:
            pf.pid_flags |= ProcFlag.NSPID
        pf.npids = len(pids.pids)
        for i, pid in enumerate(pids.pids):
            pf.pids[i] = pid
    pf.nns = len(namespaces)
    for i, ns in enumerate(namespaces):
        nf = pf.ns[i]
        nf.kind, nf.flags, nf.nvals = ns.kind, ProcFlag.NOT if ns.negate else 0, len(ns.inums)
        for j, inum in enumerate(ns.inums):
            nf.vals[j] = inum
    return pf


def _flags(*, negate: bool, follow: bool) -> int:
    return int(ProcFlag.ON | (ProcFlag.NOT if negate else 0) | (ProcFlag.FOLLOW if follow else 0))


def bin_key(direction: int, data: bytes) -> BinKey:
    key = BinKey()
    key.prefixlen = 8 * (1 + len(data))
    key.dir = direction
    ct.memmove(ct.addressof(key) + BinKey.data.offset, data, len(data))
    return key


def _entry(kind: BinKind, value: bytes) -> tuple[int, bytes]:
    """(dir, data) of one value's bin_match entry."""
    if kind is BinKind.EXACT:
        return 0, value + b"\0"
    if kind is BinKind.PREFIX:
        return 0, value
    return 1, value[::-1]


def bin_entries(
    sets: dict[int, tuple[BinKind, frozenset[bytes]]],
) -> dict[tuple[int, bytes], BinValue]:
    """bin_match's content for value sets by bit: every entry's own bits, and
    in `bits` those of every entry that is a prefix of it (an LPM lookup finds
    only the longest one)."""
    own: dict[tuple[int, bytes], int] = {}
    for bit, (kind, values) in sets.items():
        for value in values:
            key = _entry(kind, value)
            own[key] = own.get(key, 0) | (1 << bit)
    out = {}
    for (direction, data), mine in own.items():
        bits = 0
        for (d2, other), theirs in own.items():
            if d2 == direction and data.startswith(other):
                bits |= theirs
        out[(direction, data)] = BinValue(bits, mine)
    return out


def sets_from_entries(
    entries: dict[tuple[int, bytes], int],
) -> dict[int, tuple[BinKind, frozenset[bytes]]]:
    """The value sets bin_match holds, from each entry's own bits (for an
    enforcer that takes over the maps of an earlier one)."""
    found: dict[int, tuple[BinKind, set[bytes]]] = {}
    for (direction, data), mine in entries.items():
        if direction == 1:
            kind, value = BinKind.POSTFIX, data[::-1]
        elif data.endswith(b"\0"):
            kind, value = BinKind.EXACT, data[:-1]
        else:
            kind, value = BinKind.PREFIX, data
        for bit in range(BIN_SETS):
            if mine >> bit & 1:
                found.setdefault(bit, (kind, set()))[1].add(value)
    return {bit: (kind, frozenset(values)) for bit, (kind, values) in found.items()}
