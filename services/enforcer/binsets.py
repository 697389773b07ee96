"""matchBinaries value sets in the global bin_match trie (bpf/lib/policy.h).

Each distinct (kind, values) set gets a bit, shared by every slot that names
it; a process's bits are computed at exec against the trie. A bit given to a
new set bumps bin_state.epoch (after the trie has the set's entries), so
processes seen under an older epoch compute theirs again, and bin_state.keep
says which inherited followChildren bits they may keep (not a reused one).
"""

from __future__ import annotations

import contextlib
import ctypes as ct

from services.common import bpfsys
from services.common.errors import OcellusError
from services.sensor.proc_records import (
    BIN_EPOCHS,
    BIN_SETS,
    BinaryFilter,
    BinKey,
    BinKind,
    BinState,
    BinValue,
    bin_entries,
    bin_key,
    sets_from_entries,
)

SetKey = tuple[BinKind, frozenset[bytes]]
_ALL = 2**64 - 1


class BinSetError(OcellusError):
    """No free bit, or bin_match/bin_state could not be written."""


class BinarySets:
    def __init__(self, trie: bpfsys.PinnedMap, state: bpfsys.PinnedMap) -> None:
        self._trie, self._state = trie, state
        self._bits: dict[SetKey, int] = {}
        self._owners: dict[int, set[SetKey]] = {}  # hook id -> sets its slots name
        self._written: dict[tuple[int, bytes], tuple[int, int]] = {}

    def acquire(self, owner: int, filters: list[BinaryFilter]) -> dict[SetKey, int]:
        """Bits for ``filters``' sets, added to ``owner``'s (retain() drops the old
        ones); new sets are in the trie and the epoch bumped when this returns.
        On failure nothing is left behind."""
        wanted = {f.set_key for f in filters}
        new = [k for k in wanted if k not in self._bits]
        free = [b for b in range(BIN_SETS) if b not in self._bits.values()]
        if len(new) > len(free):
            raise BinSetError(
                f"matchBinaries: {len(new)} new value sets, {len(free)} of {BIN_SETS} free"
            )
        for key, bit in zip(new, free, strict=False):
            self._bits[key] = bit
        had = self._owners.get(owner, set())
        self._owners[owner] = had | wanted
        try:
            self._sync()
            if new:
                self._bump(sum(1 << self._bits[k] for k in new))
        except BinSetError:
            self._owners[owner] = had
            for key in new:
                del self._bits[key]
            self._sync_quietly()
            raise
        return {k: self._bits[k] for k in wanted}

    def retain(self, owner: int, keep: set[SetKey]) -> None:
        """``owner`` now names only ``keep``: sets no one names leave the trie (after
        the configs that named them are gone)."""
        if keep:
            self._owners[owner] = set(keep)
        else:
            self._owners.pop(owner, None)
        named = set().union(*self._owners.values()) if self._owners else set()
        for key in [k for k in self._bits if k not in named]:
            del self._bits[key]
        self._sync_quietly()

    def adopt(self, owners: dict[int, set[int]]) -> None:
        """Take over the sets an earlier enforcer left: ``owners`` maps hook ids to
        the bits their configs name."""
        found: dict[tuple[int, bytes], int] = {}
        for entry, value in read_entries(self._trie).items():
            found[entry] = value.own
            self._written[entry] = (value.bits, value.own)
        by_bit = sets_from_entries(found)
        self._bits = {s: bit for bit, s in by_bit.items()}
        for owner, bits in owners.items():
            self._owners[owner] = {by_bit[b] for b in bits if b in by_bit}

    # -- private -----------------------------------------------------------------
    def _sync(self) -> None:
        """Write the trie the current sets make: new and changed entries, then
        removed ones (a process never sees a set without its entries)."""
        want = {
            k: (v.bits, v.own)
            for k, v in bin_entries({b: s for s, b in self._bits.items()}).items()
        }
        try:
            for (direction, data), (bits, own) in want.items():
                if self._written.get((direction, data)) != (bits, own):
                    self._trie.update(bin_key(direction, data), BinValue(bits, own))
                    self._written[(direction, data)] = (bits, own)
            for direction, data in [k for k in self._written if k not in want]:
                self._trie.delete(bin_key(direction, data))
                del self._written[(direction, data)]
        except OSError as e:
            raise BinSetError(f"writing bin_match: {e.strerror or e}") from e

    def _sync_quietly(self) -> None:
        # What is left names bits no config uses: harmless, and retried next time.
        with contextlib.suppress(BinSetError):
            self._sync()

    def _bump(self, new_bits: int) -> None:
        state = BinState()
        try:
            self._state.lookup(ct.c_uint32(0), state)
            for k in range(BIN_EPOCHS):
                state.keep[k] &= ~new_bits & _ALL
            self._state.update(ct.c_uint32(0), state)  # keep first, under the old epoch
            state.epoch = (state.epoch + 1) & 0xFFFF_FFFF
            state.keep[state.epoch % BIN_EPOCHS] = _ALL
            self._state.update(ct.c_uint32(0), state)
        except OSError as e:
            raise BinSetError(f"writing bin_state: {e.strerror or e}") from e


def read_entries(trie: bpfsys.PinnedMap) -> dict[tuple[int, bytes], BinValue]:
    """bin_match as it is: (dir, data) of each entry → its value. Raises OSError (bpf())."""
    found = {}
    for key in trie.keys(BinKey):
        value = BinValue()
        if trie.lookup(key, value):
            # not key.data: ctypes cuts a char array at its first NUL
            data = ct.string_at(ct.addressof(key) + BinKey.data.offset, key.prefixlen // 8 - 1)
            found[(key.dir, data)] = value
    return found
