"""The generic hook engine's side of bpf/lib/policy.h: its enums, ctypes
mirrors of the map keys and values (checked against the C compiler by
tests/sensor/test_layout.py), what a slot is configured with, and the
decoding of OCELLUS_OP_HOOK records."""

from __future__ import annotations

import ctypes as ct
import enum
import hashlib
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.subjects import node_token
from services.sensor.connect_records import CONNECT_RULES, ConnectRule
from services.sensor.proc_records import (
    BinaryFilter,
    BinKey,
    BinState,
    BinValue,
    NamespaceFilter,
    PidFilter,
    ProcFilter,
    ScopeFilter,
    proc_filter_value,
)

HOOK_SLOTS = 5
HOOK_ARGS = 6
HOOK_FILTERS = 5
HOOK_VALUES = 8
HOOK_STR_MAX = 256
HOOK_SOCKADDR_MAX = 28
STR_KEY_DATA = 248
STR_KEY_FIXED_BITS = 64
VAL_KEY_DATA = 16
VAL_KEY_FIXED_BITS = 64
FILTER_RETURN = 0x80  # key .filter of a matchReturnArgs filter
SLOT_RETURN = 1 << 16  # hook_config key .slot of a return hook's sys_exit_* side


class ReadKind(enum.IntEnum):
    """enum ocellus_read; names are services/enforcer/plan.py's read kinds."""

    INT = 1
    UINT = 2
    USER_STRING = 3
    KERNEL_STRING = 4
    SOCKADDR = 5
    ADDRESS = 6


class FilterOp(enum.IntEnum):
    """enum ocellus_filter_op."""

    EQUAL = 1
    MASK = 2
    GT = 3
    LT = 4
    RANGE = 5
    STR_EQUAL = 6
    STR_PREFIX = 7
    STR_POSTFIX = 8
    VAL_SET = 9
    ADDR = 10


class ArgPart(enum.IntEnum):
    """enum ocellus_arg_part: what of an arg a filter looks at."""

    VALUE = 0
    FAMILY = 1  # a sockaddr's family
    PORT = 2  # a sockaddr's port
    ADDR = 3  # a sockaddr's address


class ValKind(enum.IntEnum):
    """enum ocellus_val_kind."""

    INT = 1
    IP4 = 4
    IP6 = 6


class FilterFlag(enum.IntFlag):
    NOT = 1 << 0
    UNSIGNED = 1 << 1


class Action(enum.IntEnum):
    """enum ocellus_action."""

    POST = 1
    NOPOST = 2
    SIGKILL = 3
    SIGNAL = 4
    OVERRIDE = 5  # a connect or datagram denied (services/enforcer/connect_rules.py)


HF_POST = 1 << 0
HF_RETURN = 1 << 1
HF_EXIT = 1 << 2
HF_MONITORED = 1 << 3  # monitor mode: enforce mode would signal or deny; counts `monitored`


class RateScope(enum.IntEnum):
    """enum ocellus_rate_scope: Post rateLimitScope (Tetragon's default: thread)."""

    THREAD = 0
    PROCESS = 1
    GLOBAL = 2


HK_RETURN = 1 << 0  # ocellus_hook_fixed.kflags: a return item follows the args
AF_TRUNCATED = 1 << 0
AF_FAULT = 1 << 1


class HookKey(ct.Structure):
    _fields_ = [("tp_id", ct.c_uint32), ("slot", ct.c_uint32)]


class HookArg(ct.Structure):
    _fields_ = [("offset", ct.c_uint16), ("size", ct.c_uint8), ("read", ct.c_uint8)]


class HookFilter(ct.Structure):
    _fields_ = [
        ("arg", ct.c_uint8),
        ("op", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("nvals", ct.c_uint8),
        ("part", ct.c_uint8),
        ("_pad", ct.c_uint8 * 3),
        ("vals", ct.c_int64 * HOOK_VALUES),
    ]


class HookConfig(ct.Structure):
    _fields_ = [
        ("hook_id", ct.c_uint32),
        ("selector", ct.c_uint8),
        ("nargs", ct.c_uint8),
        ("nfilters", ct.c_uint8),
        ("action", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("gen", ct.c_uint8),
        ("rate_scope", ct.c_uint8),
        ("_pad", ct.c_uint8),
        ("signal", ct.c_uint32),
        ("rate_ns", ct.c_uint64),
        ("args", HookArg * HOOK_ARGS),
        ("filters", HookFilter * HOOK_FILTERS),
        ("proc", ProcFilter),  # process selectors (proc_records.py)
    ]


TP_IDS = 65536  # tracepoint ids are below 2^16: hook_slots' index


class TpSlots(ct.Structure):
    """struct ocellus_tp_slots: a tracepoint's slots in use, those with process
    filters, and the hooks that hold them."""

    _fields_ = [
        ("used", ct.c_uint8),
        ("proc", ct.c_uint8),
        ("_pad", ct.c_uint16),
        ("hooks", ct.c_uint32 * HOOK_SLOTS),  # each hook id once, then 0s
    ]


class Prefilter(ct.Structure):
    """struct ocellus_prefilter: a tracepoint's string prefilter, one 8-byte
    word in hook_prefilter (``word()``; 0 is off)."""

    _fields_ = [
        ("offset", ct.c_uint16),
        ("size", ct.c_uint8),
        ("read", ct.c_uint8),
        ("on", ct.c_uint8),
        ("gen", ct.c_uint8),
        ("arg", ct.c_uint8),
        ("seq", ct.c_uint8),
    ]

    def word(self) -> int:
        """As the kernel reads it: one native u64."""
        return int(ct.c_uint64.from_buffer_copy(bytes(self)).value)


class StrKey(ct.Structure):
    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("hook_id", ct.c_uint32),
        ("selector", ct.c_uint8),
        ("filter", ct.c_uint8),
        ("reverse", ct.c_uint8),
        ("gen", ct.c_uint8),
        ("data", ct.c_char * STR_KEY_DATA),
    ]


class ValKey(ct.Structure):
    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("hook_id", ct.c_uint32),
        ("selector", ct.c_uint8),
        ("filter", ct.c_uint8),
        ("gen", ct.c_uint8),
        ("kind", ct.c_uint8),
        ("data", ct.c_uint8 * VAL_KEY_DATA),
    ]


class ScopeKey(ct.Structure):
    """struct ocellus_scope_key: (scope id, cgroup id) in scope_cgroups."""

    _fields_ = [("scope", ct.c_uint32), ("_pad", ct.c_uint32), ("cgroup_id", ct.c_uint64)]


BPF_F_MMAPABLE = 1 << 10
HOOKS_MAX = 1024  # live hooks per node: hook_stats entries (a power of two)


def stats_index(hook_id: int) -> int:
    """A hook's entry in hook_stats (as hook_stats_get() in C)."""
    return hook_id & (HOOKS_MAX - 1)


class HookStats(ct.Structure):
    _fields_ = [
        ("matched", ct.c_uint64),
        ("posted", ct.c_uint64),
        ("signalled", ct.c_uint64),
        ("filtered", ct.c_uint64),
        ("denied", ct.c_uint64),
        ("ratelimited", ct.c_uint64),
        ("monitored", ct.c_uint64),
    ]


@dataclass(frozen=True, slots=True)
class MapSpec:
    """A pinned policy map: what the C declares, sized from here (-D)."""

    name: str
    type: int  # enum bpf_map_type
    key: Any  # ctypes type
    value: Any  # ctypes type (per CPU for per-CPU maps)
    max_entries: int
    define: str  # the C macro that takes max_entries
    flags: int | None = None  # map flags user space relies on (None: not checked)


POLICY_MAPS = (
    MapSpec("hook_config", 1, HookKey, HookConfig, 1024, "OCELLUS_HOOK_CONFIGS_MAX"),
    # Per tracepoint id: which hook_config slots exist (an event looks up only those).
    MapSpec("hook_slots", 2, ct.c_uint32, TpSlots, TP_IDS, "OCELLUS_HOOK_TPS_MAX"),
    MapSpec("str_match", 11, StrKey, ct.c_uint8, 16384, "OCELLUS_STR_MATCH_MAX"),
    # Per tracepoint id: its string prefilter word (mmapable: stored whole), and its values.
    MapSpec(
        "hook_prefilter",
        2,
        ct.c_uint32,
        ct.c_uint64,
        TP_IDS,
        "OCELLUS_HOOK_PREFILTER_MAX",
        flags=BPF_F_MMAPABLE,
    ),
    MapSpec("str_prefilter", 11, StrKey, ct.c_uint8, 16384, "OCELLUS_STR_PREFILTER_MAX"),
    # Ports, protocols, InMap values (ranges as prefixes: up to 126 per range) and CIDRs.
    MapSpec("val_match", 11, ValKey, ct.c_uint8, 65536, "OCELLUS_VAL_MATCH_MAX"),
    # Per CPU, at index stats_index(hook id): no two live hooks share one (hooktable.py).
    MapSpec("hook_stats", 6, ct.c_uint32, HookStats, HOOKS_MAX, "OCELLUS_HOOKS_MAX"),
    # matchBinaries value sets, global (bits of BinValue): paths, prefixes, reversed postfixes.
    MapSpec("bin_match", 11, BinKey, BinValue, 16384, "OCELLUS_BIN_MATCH_MAX"),
    MapSpec("bin_state", 2, ct.c_uint32, BinState, 1, "OCELLUS_BIN_STATE_MAX"),
    # Network deny: Override selectors of sys_connect and sys_sendto hooks (connect_records.py).
    MapSpec(
        "connect_rules", 2, ct.c_uint32, ConnectRule, CONNECT_RULES, "OCELLUS_CONNECT_RULES_MAX"
    ),
    # Scoped policies: (scope, cgroup id) of every cgroup in a scope's set (scopes.py).
    MapSpec("scope_cgroups", 1, ScopeKey, ct.c_uint8, 65536, "OCELLUS_SCOPE_CGROUPS_MAX"),
)
POLICY_HEADER = Path(__file__).resolve().parents[2] / "bpf" / "lib" / "policy.h"


def layout_id(header: Path = POLICY_HEADER) -> str:
    """Names the map layout: any change to lib/policy.h gives new pins, so a
    sensor and an enforcer of different versions never share maps they would
    read differently."""
    return hashlib.sha256(header.read_bytes()).hexdigest()[:12]


def policy_pin_dir(base: Path, node: str) -> Path:
    """Where a node's policy maps are pinned: <base>/<node>/<layout>."""
    return base / node_token(node) / layout_id()


class HookItem(ct.Structure):
    _fields_ = [("read", ct.c_uint8), ("flags", ct.c_uint8), ("len", ct.c_uint16)]


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """One matchArgs filter, as the kernel evaluates it."""

    arg: int  # position in the hook's args
    op: FilterOp
    flags: FilterFlag = FilterFlag(0)  # noqa: RUF009 - an immutable enum value
    ints: tuple[int, ...] = ()  # integer ops (RANGE: lo, hi pairs)
    strings: tuple[bytes, ...] = ()  # string ops: str_match entries
    part: ArgPart = ArgPart.VALUE
    # VAL_SET: (lo, hi) inclusive, as the arg's values (signed unless UNSIGNED): val_match
    ranges: tuple[tuple[int, int], ...] = ()
    # ADDR: CIDRs: val_match
    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class SlotConfig:
    """One (hook, selector) pair: its filters (ANDed) and what a match does."""

    selector: int
    filters: tuple[FilterConfig, ...] = ()
    action: Action = Action.POST
    post: bool = True
    signal: int = 0
    # matchReturnArgs: filters on the return value (arg 0 of the exit side)
    return_filters: tuple[FilterConfig, ...] = ()
    # Process selectors, evaluated before the args are read (proc_records.py).
    binary: BinaryFilter | None = None
    pids: PidFilter | None = None
    namespaces: tuple[NamespaceFilter, ...] = ()
    # The policy's scope (set by the enforcer when it places the policy).
    scope: ScopeFilter | None = None
    # Post rateLimit: at most one record per rate_ns per (selector, rate_scope, args); 0: off.
    rate_ns: int = 0
    rate_scope: RateScope = RateScope.THREAD
    # Monitor mode: enforce mode would signal or deny here (counted as `monitored`).
    monitored: bool = False


@dataclass(frozen=True, slots=True)
class ArgLayout:
    """Where one arg is in the tracepoint record and how to read it."""

    offset: int
    size: int
    read: ReadKind


def config_value(
    hook_id: int,
    args: tuple[ArgLayout, ...],
    slot: SlotConfig,
    gen: int,
    *,
    returns: bool = False,
    bin_bit: int | None = None,
) -> HookConfig:
    """The hook_config value of one slot; ``returns``: the hook has ``return: true``
    (its record waits for the exit side, exit_config_value); ``bin_bit``: the bit
    of its matchBinaries value set."""
    cfg = HookConfig()
    cfg.hook_id = hook_id
    cfg.selector = slot.selector
    cfg.nargs = len(args)
    cfg.action = slot.action
    cfg.flags = (
        (HF_POST if slot.post else 0)
        | (HF_RETURN if returns else 0)
        | (HF_MONITORED if slot.monitored else 0)
    )
    cfg.gen = gen
    cfg.signal = slot.signal
    cfg.rate_ns, cfg.rate_scope = slot.rate_ns, slot.rate_scope
    for i, arg in enumerate(args):
        cfg.args[i] = HookArg(arg.offset, arg.size, arg.read)
    _fill_filters(cfg, slot.filters)
    cfg.proc = proc_filter_value(slot.binary, slot.pids, slot.namespaces, bin_bit, slot.scope)
    return cfg


def exit_config_value(hook_id: int, ret: ArgLayout, slot: SlotConfig, gen: int) -> HookConfig:
    """The hook_config value of a return hook's selector on sys_exit_* (key slot:
    SLOT_RETURN | the selector's enter slot): the return value is its one arg, the
    selector's matchReturnArgs its filters."""
    cfg = HookConfig()
    cfg.hook_id = hook_id
    cfg.selector = slot.selector
    cfg.nargs = 1
    cfg.action = slot.action
    cfg.flags = HF_EXIT
    cfg.gen = gen
    cfg.args[0] = HookArg(ret.offset, ret.size, ret.read)
    _fill_filters(cfg, slot.return_filters)
    return cfg


def _fill_filters(cfg: HookConfig, filters: tuple[FilterConfig, ...]) -> None:
    cfg.nfilters = len(filters)
    for i, f in enumerate(filters):
        hf = cfg.filters[i]
        hf.arg, hf.op, hf.flags, hf.nvals, hf.part = f.arg, f.op, f.flags, len(f.ints), f.part
        for j, v in enumerate(f.ints):
            # u64 values above 2**63 travel as their two's complement
            hf.vals[j] = v - 2**64 if v >= 2**63 else v


def str_keys(hook_id: int, slot: SlotConfig, gen: int) -> list[StrKey]:
    """The str_match entries of a slot's string filters."""
    return [
        str_key(f.op, value, hook_id, slot.selector, fi, gen)
        for fi, f in enumerate(slot.filters)
        for value in f.strings
    ]


def str_key(op: FilterOp, value: bytes, hook_id: int, selector: int, fi: int, gen: int) -> StrKey:
    """One value of a string filter as a str_match (or str_prefilter) key."""
    data = value + b"\0" if op == FilterOp.STR_EQUAL else value
    key = StrKey()
    key.prefixlen = STR_KEY_FIXED_BITS + 8 * len(data)
    key.hook_id, key.selector, key.filter = hook_id, selector, fi
    # Postfix: the kernel looks up the arg's last len(value) bytes under
    # reverse = len(value), for each length in the filter's vals
    key.reverse = len(value) if op == FilterOp.STR_POSTFIX else 0
    key.gen = gen
    ct.memmove(ct.addressof(key) + StrKey.data.offset, data, len(data))
    return key


# -- decoding OCELLUS_OP_HOOK records -------------------------------------------

_ITEM = struct.Struct("<BBH")
_FAMILIES: dict[int, str] = {
    int(socket.AF_INET): "AF_INET",
    int(socket.AF_INET6): "AF_INET6",
    int(socket.AF_UNIX): "AF_UNIX",
}


def ip_text(raw: bytes) -> str:
    """An address as Tetragon (Go's net.IP) prints it: an IPv4-mapped IPv6
    address as its dotted quad."""
    addr = ipaddress.ip_address(raw)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def decode_sockaddr(raw: bytes) -> dict[str, Any]:
    """{"family", "addr", "port"} of a struct sockaddr as read from user memory."""
    if len(raw) < 2:
        return {"family": "AF_UNSPEC", "addr": "", "port": 0}
    family = int.from_bytes(raw[:2], "little")
    name = _FAMILIES.get(family, str(family))
    if family == socket.AF_INET and len(raw) >= 8:
        addr = str(ipaddress.IPv4Address(raw[4:8]))
        return {"family": name, "addr": addr, "port": int.from_bytes(raw[2:4], "big")}
    if family == socket.AF_INET6 and len(raw) >= 24:
        addr = ip_text(raw[8:24])
        return {"family": name, "addr": addr, "port": int.from_bytes(raw[2:4], "big")}
    if family == socket.AF_UNIX:
        path = raw[2:].split(b"\0", 1)[0]
        return {"family": name, "addr": path.decode("utf-8", "backslashreplace"), "port": 0}
    return {"family": name, "addr": "", "port": 0}


# Plain ints for the per-record dispatch: comparing with an IntEnum member
# looks it up on the class every time (~85 ns a comparison on CPython 3.11,
# a third of decode_args on a three-arg openat record).
_INT, _UINT = int(ReadKind.INT), int(ReadKind.UINT)
_STRINGS = frozenset((int(ReadKind.USER_STRING), int(ReadKind.KERNEL_STRING)))
_SOCKADDR, _ADDRESS = int(ReadKind.SOCKADDR), int(ReadKind.ADDRESS)
_AF_FAULT = int(AF_FAULT)


def decode_args(data: bytes, nargs: int) -> list[Any]:
    """The typed values of a record's arg items: int, str, sockaddr dict, or None
    for an arg that could not be read (hdr.flags has ARGS_FAULT)."""
    out: list[Any] = []
    append, item = out.append, _ITEM.unpack_from
    pos = 0
    for _ in range(nargs):
        read, flags, length = item(data, pos)
        start = pos + 4  # _ITEM.size
        pos = start + length
        if flags & _AF_FAULT:
            append(None)
        elif read in _STRINGS:
            append(data[start:pos].decode("utf-8", "backslashreplace"))
        elif read == _INT:
            append(int.from_bytes(data[start:pos], "little", signed=True))
        elif read == _UINT:
            append(int.from_bytes(data[start:pos], "little"))
        elif read == _SOCKADDR:
            append(decode_sockaddr(data[start:pos]))
        elif read == _ADDRESS:
            raw = data[start:pos]
            append(ip_text(raw) if len(raw) in (4, 16) else None)
        else:
            append(None)
    return out
