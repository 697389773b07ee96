"""matchArgs filters answered by the val_match LPM trie (bpf/lib/policy.h): socket
operators, InMap/NotInMap, and integer Equal/NotEqual with more values than a
filter holds inline. One lookup in the kernel, whatever the number of values.

Socket operators work where Tetragon's would, on what a hook's declared args
carry (the tracepoints here carry no ``struct sock``):

- a ``sockaddr`` arg (connect's, bind's, accept's user ``struct sockaddr *``,
  read at the call): its family, address and port. It is one address, so it takes
  Family, SAddr/NotSAddr and SPort/NotSPort/SPortPriv/NotSPortPriv only, as in
  Tetragon; Protocol and State are refused. Where the call names a destination
  (connect, sendto, sendmsg: ``destination=True``) DAddr/DPort say so and mean
  that same address and port (``DAddr: [127.0.0.0/8]`` matches a connect to
  127.0.0.1, as does Tetragon's ``SAddr``); elsewhere (bind, accept) they are
  refused.
- tracepoint fields that are parts of a socket (``sock:inet_sock_set_state``):
  ``saddr``/``saddr_v6`` take SAddr, ``daddr``/``daddr_v6`` DAddr, ``sport``
  SPort, ``dport`` DPort, ``protocol`` Protocol, ``family`` Family,
  ``oldstate``/``newstate`` State — the field's name says which part it is.

Addresses: IPv4 and IPv6 CIDRs; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``,
what an IPv6 socket or a ``*_v6`` field holds for an IPv4 peer) matches IPv4 CIDRs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from schemas.policy import ArgSelector
from schemas.policy.values import (
    INT_TYPE_BOUNDS,
    IPNetwork,
    parse_address,
    parse_decimal_range,
    parse_family,
    parse_int,
    parse_ports,
    parse_protocol,
    parse_tcp_state,
)
from services.enforcer.plan import ADDRESS, INT, SOCKADDR, UINT, PlannedArg
from services.sensor.hook_records import HOOK_VALUES, ArgPart, FilterConfig, FilterFlag, FilterOp
from services.sensor.hook_values import val_key_count

# val_match entries one filter may take (a 64-bit range takes up to 126 prefixes).
MAX_ENTRIES_PER_FILTER = 4096

_ADDRESS_OPS = {"SAddr": "S", "NotSAddr": "S", "DAddr": "D", "NotDAddr": "D"}
_PORT_OPS = {
    "SPort": "S", "NotSPort": "S", "SPortPriv": "S", "NotSPortPriv": "S",
    "DPort": "D", "NotDPort": "D", "DPortPriv": "D", "NotDPortPriv": "D",
}  # fmt: skip
_SET_OPS = {"Protocol": parse_protocol, "Family": parse_family, "State": parse_tcp_state}
SOCKET_OPERATORS = frozenset(_ADDRESS_OPS) | frozenset(_PORT_OPS) | frozenset(_SET_OPS)
_MAP_OPS = {"InMap", "NotInMap"}
# What a tracepoint field is, by its name.
_FIELD_ROLES: tuple[tuple[str, str], ...] = (
    (r"s(rc_?)?addr(_v6)?|src", "SAddr"),
    (r"d(st_?)?addr(_v6)?|dst", "DAddr"),
    (r"s(rc_?)?port", "SPort"),
    (r"d(st_?)?port", "DPort"),
    (r"protocol|proto", "Protocol"),
    (r"(sa_|sin_)?family", "Family"),
    (r"(old|new)?state", "State"),
)


class FilterProblem(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def value_filter(
    path: str, f: ArgSelector, arg: PlannedArg, *, destination: bool = False
) -> FilterConfig | None:
    """The val_match filter for ``f`` on ``arg``, or None when the filter is not one
    (the caller compiles it inline). ``destination``: the hook's sockaddr arg names
    where the call goes (connect). FilterProblem names what does not fit."""
    op = f.operator
    if op in SOCKET_OPERATORS:
        cfg = _socket_filter(path, f, arg, destination)
    elif op in _MAP_OPS:
        cfg = _map_filter(path, f, arg)
    elif op in ("Equal", "NotEqual") and arg.read in (INT, UINT) and len(f.values) > HOOK_VALUES:
        cfg = _int_set(path, f, arg, lambda v: (parse_int(v),) * 2)
    else:
        return None
    entries = val_key_count(cfg)
    if entries > MAX_ENTRIES_PER_FILTER:
        raise FilterProblem(
            f"{path}.values",
            f"the values take {entries} map entries (ranges are stored as prefixes): "
            f"at most {MAX_ENTRIES_PER_FILTER} per filter; use fewer or aligned ranges",
        )
    return cfg


def _flags(op: str, unsigned: bool) -> FilterFlag:
    flags = FilterFlag.NOT if op.startswith("Not") else FilterFlag(0)
    return flags | FilterFlag.UNSIGNED if unsigned else flags


def _role(arg: PlannedArg) -> str | None:
    name = arg.field.name.lower()
    return next((role for pattern, role in _FIELD_ROLES if re.fullmatch(pattern, name)), None)


def _socket_filter(
    path: str, f: ArgSelector, arg: PlannedArg, destination: bool = False
) -> FilterConfig:
    op = f.operator
    if arg.read == SOCKADDR:
        return _sockaddr_filter(path, f, arg, destination)
    role = _role(arg)
    if arg.read == ADDRESS and op in _ADDRESS_OPS:
        side = _ADDRESS_OPS[op]
        if role in ("SAddr", "DAddr") and role[0] != side:
            raise FilterProblem(
                f"{path}.operator",
                f"field '{arg.field.name}' is the {_SIDES[role[0]]} address: "
                f"use {role}/Not{role}, not {op}",
            )
        return FilterConfig(arg.position, FilterOp.ADDR, _flags(op, False), nets=_nets(path, f))
    if arg.read in (INT, UINT):
        want = "SPort" if _PORT_OPS.get(op) == "S" else "DPort" if op in _PORT_OPS else op
        if role == want:
            if op in _PORT_OPS:
                return _port_filter(path, f, arg.position, ArgPart.VALUE)
            return _int_set(path, f, arg, _SET_OPS[op])
    raise FilterProblem(
        f"{path}.operator",
        f"operator {op} needs a socket arg: a sockaddr, or a tracepoint field that is a "
        f"socket's {_what(op)}; '{arg.field.name}' ({arg.field.c_type}) is "
        + (f"its {role}" if role else "none of these"),
    )


_SIDES = {"S": "source", "D": "destination"}
# A destination sockaddr (connect's) is the one address it carries.
_DEST_ALIASES = {
    "DAddr": "SAddr", "NotDAddr": "NotSAddr", "DPort": "SPort", "NotDPort": "NotSPort",
    "DPortPriv": "SPortPriv", "NotDPortPriv": "NotSPortPriv",
}  # fmt: skip


def _what(op: str) -> str:
    if op in _ADDRESS_OPS:
        return f"{_SIDES[_ADDRESS_OPS[op]]} address (a __u8[4] or __u8[16] field)"
    if op in _PORT_OPS:
        return f"{_SIDES[_PORT_OPS[op]]} port (an integer field named sport/dport)"
    return f"{op.lower()} (an integer field named so)"


def _sockaddr_filter(
    path: str, f: ArgSelector, arg: PlannedArg, destination: bool = False
) -> FilterConfig:
    op = f.operator
    if destination and op in _DEST_ALIASES:
        f = f.model_copy(update={"operator": _DEST_ALIASES[op]})
        op = f.operator
    if op in ("SAddr", "NotSAddr"):
        return FilterConfig(
            arg.position, FilterOp.ADDR, _flags(op, False), part=ArgPart.ADDR, nets=_nets(path, f)
        )
    if _PORT_OPS.get(op) == "S":
        return _port_filter(path, f, arg.position, ArgPart.PORT)
    if op == "Family":
        ranges = _parse_all(path, f, parse_family)
        return FilterConfig(
            arg.position, FilterOp.VAL_SET, _flags(op, True), part=ArgPart.FAMILY, ranges=ranges
        )
    raise FilterProblem(
        f"{path}.operator",
        f"operator {op} does not apply to a sockaddr arg: it carries one address (family, "
        "address, port), filtered with Family, SAddr and SPort (as in Tetragon; DAddr and "
        "DPort too where it is the destination: connect, sendto, sendmsg)",
    )


def _port_filter(path: str, f: ArgSelector, position: int, part: ArgPart) -> FilterConfig:
    op = f.operator
    if op.endswith("Priv"):
        if f.values:
            raise FilterProblem(f"{path}.values", f"operator {op} takes no values")
        ranges: tuple[tuple[int, int], ...] = ((0, 1023),)
    else:
        ranges = _parse_all(path, f, parse_ports)
    return FilterConfig(position, FilterOp.VAL_SET, _flags(op, True), part=part, ranges=ranges)


def _int_set(
    path: str, f: ArgSelector, arg: PlannedArg, parse: Callable[[str], tuple[int, int]]
) -> FilterConfig:
    unsigned = arg.read == UINT
    low, high = _bounds(arg)
    ranges = _parse_all(path, f, parse)
    for i, (lo, hi) in enumerate(ranges):
        if lo < low or hi > high:
            raise FilterProblem(
                f"{path}.values[{i}]",
                f"{f.values[i]!r} is out of range {low}..{high} of {arg.type} '{arg.field.name}'",
            )
    return FilterConfig(arg.position, FilterOp.VAL_SET, _flags(f.operator, unsigned), ranges=ranges)


def _bounds(arg: PlannedArg) -> tuple[int, int]:
    if arg.type in INT_TYPE_BOUNDS:
        return INT_TYPE_BOUNDS[arg.type]
    bits = 8 * arg.read_size
    return (0, 2**bits - 1) if arg.read == UINT else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _map_filter(path: str, f: ArgSelector, arg: PlannedArg) -> FilterConfig:
    if arg.read not in (INT, UINT):
        raise FilterProblem(
            f"{path}.operator", f"operator {f.operator} takes an integer arg (as in Tetragon)"
        )
    for i, v in enumerate(f.values):
        if v.startswith("list:"):
            raise FilterProblem(
                f"{path}.values[{i}]",
                f"{v!r} names no syscall list of this policy (spec.lists, type syscalls)",
            )
    low, high = _bounds(arg)
    return _int_set(path, f, arg, lambda v: parse_decimal_range(v, (low, high), "a number"))


def _parse_all(
    path: str, f: ArgSelector, parse: Callable[[str], tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    if not f.values:
        raise FilterProblem(f"{path}.values", f"operator {f.operator} needs at least one value")
    out = []
    for i, v in enumerate(f.values):
        try:
            out.append(parse(v))
        except ValueError as e:
            raise FilterProblem(f"{path}.values[{i}]", str(e)) from None
    return tuple(out)


def _nets(path: str, f: ArgSelector) -> tuple[IPNetwork, ...]:
    if not f.values:
        raise FilterProblem(f"{path}.values", f"operator {f.operator} needs at least one value")
    out = []
    for i, v in enumerate(f.values):
        try:
            out.append(parse_address(v))
        except ValueError as e:
            raise FilterProblem(f"{path}.values[{i}]", str(e)) from None
    return tuple(out)
