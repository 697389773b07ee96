"""Selector operators: their names (with the aliases Tetragon accepts), what they compare, and
the values each one takes.

Semantics the BPF side must honour (Tetragon's): values of one operator are ORed for the
positive operators (Equal, Prefix, SPort, ...) and ANDed for the negated ones (NotEqual,
NotPrefix, NotSPort, ...); the filters of one selector are ANDed; selectors are ORed and the
first one that matches decides the actions. Mask matches when ``arg & value != 0`` for any value.
InRange/NotInRange include both ends. *PortPriv means a port below 1024 and takes no values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from .argtypes import (
    CAPABILITY_SET_TYPES,
    FILE_OBJECT_TYPES,
    INTEGER_TYPES,
    SOCKET_TYPES,
    STRING_TYPES,
    SUBSTRING_TYPES,
)
from .limits import LIMITS
from .values import (
    FILE_TYPES,
    INT_TYPE_BOUNDS,
    check_bounds,
    parse_address,
    parse_capability_mask,
    parse_decimal_range,
    parse_family,
    parse_int,
    parse_ports,
    parse_protocol,
    parse_range,
    parse_tcp_state,
)


class OperatorKind(Enum):
    """What an operator compares; decides the arg types and the values it accepts."""

    EQUALITY = "equality"  # Equal, NotEqual: strings, numbers or capability masks
    PATTERN = "pattern"  # Prefix, Postfix and their negations: strings
    SUBSTRING = "substring"
    COMPARE = "compare"  # GT, LT, Mask: numbers
    RANGE = "range"  # InRange, NotInRange: "min:max"
    MAP = "map"  # InMap, NotInMap: numbers, ranges, "list:NAME"
    PORT = "port"
    PORT_PRIV = "port_priv"
    ADDRESS = "address"
    PROTOCOL = "protocol"
    FAMILY = "family"
    STATE = "state"
    FILE_TYPE = "file_type"
    CAPS_GAINED = "caps_gained"


@dataclass(frozen=True, slots=True)
class ArgOperator:
    name: str
    kind: OperatorKind
    aliases: tuple[str, ...] = ()
    # Operators sockaddr args do not carry (a sockaddr has one address: the source side).
    # A sockaddr carries one address: Protocol and State never apply. DAddr/DPort
    # name it where the call gives a destination (connect); the enforcer, which
    # knows the hook, refuses them elsewhere.
    not_for_sockaddr: bool = False


_K = OperatorKind
# Canonical names in the order error messages list them; aliases are Tetragon's SelectorOp.
ARG_OPERATORS: tuple[ArgOperator, ...] = (
    ArgOperator("Equal", _K.EQUALITY, ("eq",)),
    ArgOperator("NotEqual", _K.EQUALITY, ("neq",)),
    ArgOperator("Prefix", _K.PATTERN, ("prefix",)),
    ArgOperator("NotPrefix", _K.PATTERN, ("notprefix",)),
    ArgOperator("Postfix", _K.PATTERN, ("postfix",)),
    ArgOperator("NotPostfix", _K.PATTERN, ("notpostfix",)),
    ArgOperator("Mask", _K.COMPARE, ("mask",)),
    ArgOperator("GT", _K.COMPARE, ("gt", "GreaterThan")),
    ArgOperator("LT", _K.COMPARE, ("lt", "LessThan")),
    ArgOperator("InRange", _K.RANGE),
    ArgOperator("NotInRange", _K.RANGE),
    ArgOperator("SPort", _K.PORT, ("sport", "Sport")),
    ArgOperator("NotSPort", _K.PORT, ("notsport", "NotSport")),
    ArgOperator("SPortPriv", _K.PORT_PRIV, ("sportpriv", "SportPriv")),
    ArgOperator("NotSPortPriv", _K.PORT_PRIV, ("notsportpriv", "NotSportPriv")),
    ArgOperator("DPort", _K.PORT, ("dport", "Dport")),
    ArgOperator("NotDPort", _K.PORT, ("notdport", "NotDport")),
    ArgOperator("DPortPriv", _K.PORT_PRIV, ("dportpriv", "DportPriv")),
    ArgOperator("NotDPortPriv", _K.PORT_PRIV, ("notdportpriv", "NotDportPriv")),
    ArgOperator("SAddr", _K.ADDRESS, ("saddr", "Saddr")),
    ArgOperator("NotSAddr", _K.ADDRESS, ("notsaddr", "NotSaddr")),
    ArgOperator("DAddr", _K.ADDRESS, ("daddr", "Daddr")),
    ArgOperator("NotDAddr", _K.ADDRESS, ("notdaddr", "NotDaddr")),
    ArgOperator("Protocol", _K.PROTOCOL, ("protocol",), not_for_sockaddr=True),
    ArgOperator("Family", _K.FAMILY, ("family",)),
    ArgOperator("State", _K.STATE, ("state",), not_for_sockaddr=True),
    ArgOperator("InMap", _K.MAP),
    ArgOperator("NotInMap", _K.MAP),
    ArgOperator("CapabilitiesGained", _K.CAPS_GAINED),
    ArgOperator("SubString", _K.SUBSTRING),
    ArgOperator("SubStringIgnCase", _K.SUBSTRING),
    ArgOperator("FileType", _K.FILE_TYPE),
    ArgOperator("NotFileType", _K.FILE_TYPE),
)
ARG_OPERATOR_BY_NAME = {op.name: op for op in ARG_OPERATORS}
_ARG_OPERATOR_ALIASES = {alias: op.name for op in ARG_OPERATORS for alias in op.aliases}

BINARY_OPERATORS: tuple[str, ...] = ("In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix")
_BINARY_OPERATOR_ALIASES = {
    "prefix": "Prefix", "notprefix": "NotPrefix", "postfix": "Postfix", "notpostfix": "NotPostfix"
}  # fmt: skip
# matchPIDs, matchNamespaces, matchNamespaceChanges, matchCapabilities(Changes).
SET_OPERATORS: tuple[str, ...] = ("In", "NotIn")


def canonical_arg_operator(name: object) -> object:
    """Tetragon's alias -> canonical name (``gt`` -> ``GT``); anything else unchanged, so the
    semantic check can report it with the list of supported operators."""
    return _ARG_OPERATOR_ALIASES.get(name, name) if isinstance(name, str) else name


def canonical_binary_operator(name: object) -> object:
    return _BINARY_OPERATOR_ALIASES.get(name, name) if isinstance(name, str) else name


def unsupported_operator(name: str, supported: Sequence[str]) -> str:
    return f"operator {name!r} is not supported (supported: {', '.join(supported)})"


# (relative path: "" for the filter itself, "values" or "values[i]"; message)
Finding = tuple[str, str]


def _needs(op: ArgOperator, what: str, arg_label: str, arg_type: str) -> Finding:
    return "", f"operator {op.name} needs {what}, but {arg_label} is {arg_type}"


def _type_findings(op: ArgOperator, arg_type: str, arg_label: str) -> Iterator[Finding]:
    """Whether the operator can filter an arg of this type; "auto" is settled by the enforcer
    once it has read the tracepoint format."""
    if arg_type == "auto":
        return
    kind = op.kind
    if kind is _K.EQUALITY:
        if arg_type in SOCKET_TYPES:
            need = "a string, number or capability arg (sockets take SAddr, DAddr, SPort, ...)"
            yield _needs(op, need, arg_label, arg_type)
        elif arg_type not in STRING_TYPES | INTEGER_TYPES | CAPABILITY_SET_TYPES:
            yield _needs(op, "a string, number or capability arg", arg_label, arg_type)
    elif kind is _K.PATTERN and arg_type not in STRING_TYPES:
        yield _needs(op, f"a string arg ({', '.join(sorted(STRING_TYPES))})", arg_label, arg_type)
    elif kind is _K.SUBSTRING and arg_type not in SUBSTRING_TYPES:
        yield _needs(op, "a string or char_buf arg", arg_label, arg_type)
    elif kind in (_K.COMPARE, _K.RANGE, _K.MAP) and arg_type not in INTEGER_TYPES:
        yield _needs(op, "an integer arg", arg_label, arg_type)
    elif kind in (_K.PORT, _K.PORT_PRIV, _K.ADDRESS, _K.PROTOCOL, _K.FAMILY, _K.STATE):
        if arg_type not in SOCKET_TYPES:
            yield _needs(op, "a sock, skb, sockaddr or socket arg", arg_label, arg_type)
        elif arg_type == "sockaddr" and op.not_for_sockaddr:
            one_address = (
                "a sockaddr carries one address, filtered with SAddr, SPort, SPortPriv and Family "
                "(DAddr and DPort where it is a destination)"
            )
            yield (
                "",
                f"operator {op.name} does not apply to sockaddr args ({arg_label}): {one_address}",
            )
    elif kind is _K.FILE_TYPE and arg_type not in FILE_OBJECT_TYPES:
        yield _needs(op, "a file or path arg", arg_label, arg_type)


def _value_parser(
    op: ArgOperator, arg_type: str, list_names: Collection[str]
) -> Callable[[str], object] | None:
    """The parser that checks one value, or None when any string is fine."""
    bounds = INT_TYPE_BOUNDS.get(arg_type, (-(2**63), 2**64 - 1))
    number_what = f"type {arg_type}" if arg_type in INT_TYPE_BOUNDS else "a 64-bit value"

    def number(text: str) -> int:
        return check_bounds(parse_int(text), bounds, number_what)

    def number_range(text: str) -> tuple[int, int]:
        low, high = parse_range(text)
        return check_bounds(low, bounds, number_what), check_bounds(high, bounds, number_what)

    def map_value(text: str) -> object:
        if text.startswith("list:"):
            if text[5:] not in list_names:
                raise ValueError(f"{text!r} names no list in spec.lists")
            return text
        # Tetragon reads map keys in base 10 only.
        low, high = parse_decimal_range(text, (-(2**63), 2**64 - 1), "a decimal number")
        return check_bounds(low, bounds, number_what), check_bounds(high, bounds, number_what)

    def file_type(text: str) -> int:
        if text not in FILE_TYPES:
            raise ValueError(f"{text!r} is not a file type ({', '.join(FILE_TYPES)})")
        return FILE_TYPES[text]

    def string(limit: int, name: str) -> Callable[[str], object]:
        def check(text: str) -> str:
            size = len(text.encode())
            if size > limit:
                raise ValueError(f"{size} bytes; at most {limit} bytes per value (limit {name})")
            return text

        return check

    value_string = string(LIMITS.string_value_bytes, "string_value_bytes")

    kind = op.kind
    if kind is _K.EQUALITY:
        if arg_type in INTEGER_TYPES:
            return number
        if arg_type in CAPABILITY_SET_TYPES:
            return parse_capability_mask
        return value_string
    parsers: dict[OperatorKind, Callable[[str], object]] = {
        _K.PATTERN: value_string,
        _K.SUBSTRING: string(LIMITS.substring_bytes, "substring_bytes"),
        _K.COMPARE: number,
        _K.RANGE: number_range,
        _K.MAP: map_value,
        _K.PORT: parse_ports,
        _K.ADDRESS: parse_address,
        _K.PROTOCOL: parse_protocol,
        _K.FAMILY: parse_family,
        _K.STATE: parse_tcp_state,
        _K.FILE_TYPE: file_type,
    }
    return parsers.get(kind)


def check_values(
    op: ArgOperator,
    arg_type: str,
    arg_label: str,
    values: Sequence[str],
    list_names: Collection[str],
) -> Iterator[Finding]:
    """Everything wrong with filtering an arg of ``arg_type`` by ``op`` with ``values``."""
    type_problems = list(_type_findings(op, arg_type, arg_label))
    yield from type_problems
    if op.kind in (_K.PORT_PRIV, _K.CAPS_GAINED):
        if values:
            yield "values", f"operator {op.name} takes no values"
        return
    if not values:
        yield "values", f"operator {op.name} needs at least one value"
        return
    compare = op.kind in (_K.COMPARE, _K.RANGE)
    limit = LIMITS.compare_values_per_match if compare else LIMITS.values_per_match
    if len(values) > limit:
        name = "compare_values_per_match" if compare else "values_per_match"
        too_many = f"more than {limit} values for operator {op.name}"
        yield "values", f"{too_many} (limit {name}; got {len(values)})"
    if type_problems:
        return  # values of a type that does not fit would only repeat the same problem
    parse = _value_parser(op, arg_type, list_names)
    if parse is None:
        return
    for i, value in enumerate(values):
        try:
            parse(value)
        except ValueError as e:
            yield f"values[{i}]", str(e)
