"""Parsers for the strings a policy carries: numbers, ranges, ports, addresses, names.

Validation and compilation use the same functions, so the enforcer never reads a value
differently from how it was checked. Each raises ``ValueError`` with a message that can follow
the value's path.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from collections.abc import Callable

from schemas.capabilities import CAPABILITY_NAMES

from .limits import LIMITS

# Width and signedness of the integer arg types, for the range of a value compared to them.
# size_t and the 64-bit types are u64/s64 (Tetragon parses size_t as s32: it truncates).
INT_TYPE_BOUNDS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("int8", "sint8"), (-(2**7), 2**7 - 1)),
    "uint8": (0, 2**8 - 1),
    **dict.fromkeys(("int16", "sint16"), (-(2**15), 2**15 - 1)),
    "uint16": (0, 2**16 - 1),
    **dict.fromkeys(("int", "int32", "sint32", "capability", "bpf_cmd"), (-(2**31), 2**31 - 1)),
    "uint32": (0, 2**32 - 1),
    **dict.fromkeys(("int64", "sint64", "long", "syscall64"), (-(2**63), 2**63 - 1)),
    **dict.fromkeys(("uint64", "ulong", "size_t"), (0, 2**64 - 1)),
}

_PREFIXED = re.compile(r"([+-]?)0([xXoObB])([0-9a-fA-F]+)")
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_BASES = {"x": 16, "o": 8, "b": 2}


def parse_int(text: str) -> int:
    """An integer as Go's ``strconv.ParseInt(s, 0, ...)`` reads it (Tetragon's parser):
    decimal, ``0x`` hex, ``0o`` or leading-``0`` octal, ``0b`` binary, optional sign."""
    if m := _PREFIXED.fullmatch(text):
        sign, base, digits = m.groups()
        try:
            value = int(digits, _BASES[base.lower()])
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        return -value if sign == "-" else value
    if _DECIMAL.fullmatch(text):
        unsigned = text.lstrip("+-")
        if len(unsigned) > 1 and unsigned.startswith("0"):
            try:
                value = int(unsigned, 8)
            except ValueError:
                raise ValueError(f"{text!r} is not a number (a leading 0 means octal)") from None
            return -value if text.startswith("-") else value
        return int(text)
    raise ValueError(f"{text!r} is not a number (decimal, 0x hex, 0o octal or 0b binary)")


def parse_decimal(text: str) -> int:
    """A base-10 integer: Tetragon reads map keys (InMap, ports) in base 10 only."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{text!r} is not a decimal number")
    return int(text)


def check_bounds(value: int, bounds: tuple[int, int], what: str) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}..{high} for {what}")
    return value


def parse_range(text: str) -> tuple[int, int]:
    """``min:max`` (both included) -> (min, max); each end as :func:`parse_int` reads it."""
    low_text, sep, high_text = text.partition(":")
    if not sep or ":" in high_text:
        raise ValueError(f"{text!r} is not a range 'min:max'")
    low, high = parse_int(low_text), parse_int(high_text)
    if low > high:
        raise ValueError(f"range {text!r} is empty (min > max)")
    return low, high


def parse_decimal_range(text: str, bounds: tuple[int, int], what: str) -> tuple[int, int]:
    """A number or a ``min:max`` range, base 10 (Tetragon's map ranges), within ``bounds``."""
    low_text, sep, high_text = text.partition(":")
    try:
        if ":" in high_text:
            raise ValueError
        low = parse_decimal(low_text)
        high = parse_decimal(high_text) if sep else low
    except ValueError:
        raise ValueError(f"{text!r} is not {what} or a range 'min:max' of them") from None
    for number in (low, high):
        check_bounds(number, bounds, what)
    if low > high:
        raise ValueError(f"range {text!r} is empty (min > max)")
    return low, high


def parse_ports(text: str) -> tuple[int, int]:
    """A port or a ``min:max`` port range, base 10, within 0..65535 -> (min, max)."""
    return parse_decimal_range(text, (0, 65535), "a port")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPNetwork:
    """An IPv4/IPv6 address (a /32 or /128) or CIDR. Host bits after the prefix are allowed
    and ignored, as Go's ``netip.ParsePrefix`` (Tetragon) and an LPM trie treat them."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4/IPv6 address or CIDR") from None


# <linux/in.h>, <linux/in6.h>: the values of sk_protocol (a u16 since Linux 5.6).
PROTOCOLS: dict[str, int] = {
    "IPPROTO_IP": 0, "IPPROTO_ICMP": 1, "IPPROTO_IGMP": 2, "IPPROTO_IPIP": 4,
    "IPPROTO_TCP": 6, "IPPROTO_EGP": 8, "IPPROTO_PUP": 12, "IPPROTO_UDP": 17,
    "IPPROTO_IDP": 22, "IPPROTO_TP": 29, "IPPROTO_DCCP": 33, "IPPROTO_IPV6": 41,
    "IPPROTO_RSVP": 46, "IPPROTO_GRE": 47, "IPPROTO_ESP": 50, "IPPROTO_AH": 51,
    "IPPROTO_ICMPV6": 58, "IPPROTO_MTP": 92, "IPPROTO_BEETPH": 94, "IPPROTO_ENCAP": 98,
    "IPPROTO_PIM": 103, "IPPROTO_COMP": 108, "IPPROTO_L2TP": 115, "IPPROTO_SCTP": 132,
    "IPPROTO_UDPLITE": 136, "IPPROTO_MPLS": 137, "IPPROTO_ETHERNET": 143,
    "IPPROTO_RAW": 255, "IPPROTO_MPTCP": 262,
}  # fmt: skip
# <linux/socket.h>: sa_family_t values.
FAMILIES: dict[str, int] = {
    "AF_UNSPEC": 0, "AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_AX25": 3, "AF_IPX": 4,
    "AF_APPLETALK": 5, "AF_NETROM": 6, "AF_BRIDGE": 7, "AF_ATMPVC": 8, "AF_X25": 9,
    "AF_INET6": 10, "AF_ROSE": 11, "AF_DECnet": 12, "AF_NETBEUI": 13, "AF_SECURITY": 14,
    "AF_KEY": 15, "AF_NETLINK": 16, "AF_ROUTE": 16, "AF_PACKET": 17, "AF_ASH": 18,
    "AF_ECONET": 19, "AF_ATMSVC": 20, "AF_RDS": 21, "AF_SNA": 22, "AF_IRDA": 23,
    "AF_PPPOX": 24, "AF_WANPIPE": 25, "AF_LLC": 26, "AF_IB": 27, "AF_MPLS": 28, "AF_CAN": 29,
    "AF_TIPC": 30, "AF_BLUETOOTH": 31, "AF_IUCV": 32, "AF_RXRPC": 33, "AF_ISDN": 34,
    "AF_PHONET": 35, "AF_IEEE802154": 36, "AF_CAIF": 37, "AF_ALG": 38, "AF_NFC": 39,
    "AF_VSOCK": 40, "AF_KCM": 41, "AF_QIPCRTR": 42, "AF_SMC": 43, "AF_XDP": 44, "AF_MCTP": 45,
}  # fmt: skip
# <net/tcp_states.h>.
TCP_STATES: dict[str, int] = {
    "TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4,
    "TCP_FIN_WAIT2": 5, "TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8,
    "TCP_LAST_ACK": 9, "TCP_LISTEN": 10, "TCP_CLOSING": 11, "TCP_NEW_SYN_RECV": 12,
    "TCP_BOUND_INACTIVE": 13,
}  # fmt: skip
# FileType / NotFileType names (Tetragon's spelling) -> S_IFMT bits.
FILE_TYPES: dict[str, int] = {
    "sock": stat.S_IFSOCK, "socket": stat.S_IFSOCK, "lnk": stat.S_IFLNK, "link": stat.S_IFLNK,
    "reg": stat.S_IFREG, "regular": stat.S_IFREG, "blk": stat.S_IFBLK, "block": stat.S_IFBLK,
    "dir": stat.S_IFDIR, "chr": stat.S_IFCHR, "char": stat.S_IFCHR, "fifo": stat.S_IFIFO,
    "pipe": stat.S_IFIFO,
}  # fmt: skip


def _named_or_number(
    table: dict[str, int], what: str, prefix: str, high: int
) -> Callable[[str], tuple[int, int]]:
    def parse(text: str) -> tuple[int, int]:
        if text in table:
            return table[text], table[text]
        if text.isascii() and (text[:1].isalpha() or text[:1] == "_"):
            raise ValueError(f"{text!r} is not a known {what} ({prefix}* name or a number)")
        return parse_decimal_range(text, (0, high), f"a {what} number")

    return parse


parse_protocol = _named_or_number(PROTOCOLS, "protocol", "IPPROTO_", 65535)
parse_family = _named_or_number(FAMILIES, "address family", "AF_", 65535)
parse_tcp_state = _named_or_number(TCP_STATES, "TCP state", "TCP_", 255)

# Capability name -> number. Tetragon's enum spells number 1 "DAC_OVERRIDE"; both spellings
# are accepted and CAP_DAC_OVERRIDE is the canonical one.
CAPABILITIES: dict[str, int] = {
    (name if name.startswith("CAP_") else f"CAP_{name}"): number
    for number, name in enumerate(CAPABILITY_NAMES)
}


def canonical_capability(text: str) -> str:
    """``cap_sys_admin`` / ``CAP_SYS_ADMIN`` / ``DAC_OVERRIDE`` -> ``CAP_...``."""
    name = text.strip().upper()
    if not name.startswith("CAP_"):
        name = f"CAP_{name}"
    if name not in CAPABILITIES:
        raise ValueError(
            f"{text!r} is not a Linux capability (CAP_CHOWN ... CAP_CHECKPOINT_RESTORE)"
        )
    return name


def parse_capability_mask(text: str) -> int:
    """A capability set for Equal on kernel_cap_t args: a number, or names joined by commas."""
    try:
        mask = parse_int(text)
    except ValueError:
        mask = 0
        for name in text.split(","):
            mask |= 1 << CAPABILITIES[canonical_capability(name)]
        return mask
    return check_bounds(mask, (0, 2**64 - 1), "a capability mask")


_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_rate_limit(text: str) -> int:
    """``rateLimit`` -> seconds: ``10`` or ``10s``, ``1m``, ``2h`` (unit in either case)."""
    digits, unit = (text[:-1], text[-1].lower()) if text[-1:].isalpha() else (text, "s")
    if unit not in _RATE_UNITS or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"rateLimit {text!r} is not a duration like 30, 30s, 5m or 1h")
    seconds = int(digits) * _RATE_UNITS[unit]
    if seconds < 1:
        raise ValueError(f"rateLimit {text!r} is zero; remove rateLimit to post every event")
    if seconds > LIMITS.rate_limit_max_seconds:
        raise ValueError(
            f"rateLimit {text!r} is more than {LIMITS.rate_limit_max_seconds} seconds "
            "(limit rate_limit_max_seconds)"
        )
    return seconds


# Kubernetes object names and label keys (k8s.io/apimachinery/pkg/util/validation).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL = re.compile(_LABEL)
_DNS_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def dns_subdomain(value: str) -> str:
    """A Kubernetes object name (metadata.name)."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters)"
        )
    return value


def dns_label(value: str) -> str:
    """A Kubernetes namespace name."""
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label (lowercase letters, digits and '-', starting "
            "and ending with a letter or digit, at most 63 characters)"
        )
    return value


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label/annotation key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"key {key!r}: prefix {prefix!r} is not a DNS-1123 subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"key {key!r}: name {name!r} must be 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value, or None."""
    if value and (len(value) > 63 or not _QUALIFIED_NAME.fullmatch(value)):
        return (
            f"value {value!r} must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None
