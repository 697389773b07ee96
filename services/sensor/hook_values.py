"""The val_match entries of a slot (bpf/lib/policy.h ``struct ocellus_val_key``):
integer sets with ranges (ports, protocols, families, InMap, large Equal sets) and
CIDRs, answered in the kernel by one LPM-trie lookup whatever their number.

An integer is keyed as 64 bits big-endian; a signed arg's values have their sign
bit flipped first, so that signed order is unsigned order and a range such as
``-5:5`` stays one contiguous stretch of keys. A range is written as the fewest
prefixes that cover it exactly (at most 2 * 64 - 2).
"""

from __future__ import annotations

import ctypes as ct
import ipaddress

from services.sensor.hook_records import (
    FILTER_RETURN,
    VAL_KEY_FIXED_BITS,
    FilterConfig,
    FilterFlag,
    FilterOp,
    SlotConfig,
    ValKey,
    ValKind,
)

_U64 = 2**64
_SIGN = 2**63


def int_key(value: int, *, signed: bool) -> int:
    """The 64-bit key of an arg value (what the kernel computes from the arg)."""
    value %= _U64  # negative values as their two's complement
    return value ^ _SIGN if signed else value


def range_prefixes(lo: int, hi: int, bits: int = 64) -> list[tuple[int, int]]:
    """(value, prefix length) pairs covering exactly the keys lo..hi (inclusive)."""
    if not 0 <= lo <= hi < 2**bits:
        raise ValueError(f"range {lo}..{hi} is not within 0..2**{bits}-1")
    out = []
    while lo <= hi:
        # the largest aligned block starting at lo that does not pass hi
        size = lo & -lo if lo else 2**bits
        while size > hi - lo + 1:
            size //= 2
        out.append((lo, bits - size.bit_length() + 1))
        lo += size
    return out


def key_ranges(f: FilterConfig) -> list[tuple[int, int]]:
    """A VAL_SET filter's ranges as key ranges: a signed range that crosses zero is
    contiguous in key space (sign bit flipped), so each value range is one key range."""
    signed = not f.flags & FilterFlag.UNSIGNED
    out = []
    for lo, hi in f.ranges:
        klo, khi = int_key(lo, signed=signed), int_key(hi, signed=signed)
        if klo > khi:
            raise ValueError(
                f"range {lo}:{hi} is empty for a {'signed' if signed else 'unsigned'} arg"
            )
        out.append((klo, khi))
    return out


def _key(
    hook_id: int, selector: int, fi: int, gen: int, kind: ValKind, data: bytes, bits: int
) -> ValKey:
    key = ValKey()
    key.prefixlen = VAL_KEY_FIXED_BITS + bits
    key.hook_id, key.selector, key.filter, key.gen, key.kind = hook_id, selector, fi, gen, kind
    ct.memmove(ct.addressof(key) + ValKey.data.offset, data, len(data))
    return key


def _net_key(
    hook_id: int, selector: int, fi: int, gen: int,
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ValKey:  # fmt: skip
    # The kernel looks up an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as IPv4: a CIDR
    # inside ::ffff:0:0/96 is written as the IPv4 CIDR it maps.
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    kind = ValKind.IP4 if net.version == 4 else ValKind.IP6
    return _key(hook_id, selector, fi, gen, kind, net.network_address.packed, net.prefixlen)


def _filter_keys(hook_id: int, selector: int, fi: int, f: FilterConfig, gen: int) -> list[ValKey]:
    if f.op == FilterOp.ADDR:
        return [_net_key(hook_id, selector, fi, gen, net) for net in f.nets]
    if f.op != FilterOp.VAL_SET:
        return []
    keys = []
    for klo, khi in key_ranges(f):
        for value, bits in range_prefixes(klo, khi):
            keys.append(
                _key(hook_id, selector, fi, gen, ValKind.INT, value.to_bytes(8, "big"), bits)
            )
    return keys


def val_keys(hook_id: int, slot: SlotConfig, gen: int) -> list[ValKey]:
    """The val_match entries of a slot's set and CIDR filters, matchArgs and
    matchReturnArgs (whose keys carry FILTER_RETURN)."""
    keys = []
    for fi, f in enumerate(slot.filters):
        keys += _filter_keys(hook_id, slot.selector, fi, f, gen)
    for fi, f in enumerate(slot.return_filters):
        keys += _filter_keys(hook_id, slot.selector, fi | FILTER_RETURN, f, gen)
    return keys


def val_key_count(f: FilterConfig) -> int:
    """How many val_match entries a filter takes (for limits checked before writing)."""
    if f.op == FilterOp.ADDR:
        return len(f.nets)
    if f.op == FilterOp.VAL_SET:
        return sum(len(range_prefixes(lo, hi)) for lo, hi in key_ranges(f))
    return 0
