"""Reacted binaries: paths that reactions add to a policy's kill set.

A policy annotated ``ocellus.io/binaries: reactive`` takes them (compile_policy
checks the annotation once, with opted_in: CompiledPolicy.reactive_binaries). Its
selectors with ``matchBinaries`` operator ``In`` are the kill set. A
reaction's ``addBinaryTo`` appends the matched exec's binary to each of their
values (the static values stay), and the engine applies the policy again. The
shape does not change, so the update writes map values only: same hook ids,
same program. The In set gets a new bit in bin_match (binsets.py), and from
then on a process of that binary is matched like one the policy names (in the
policy's scope, if it has one).

What reactions added outlives the enforcer the same way reacted containers
do (scope_state.py): the pinned maps are the record. An adopted hook's
enter-side slots name their In set's bit (hook_config .proc.bin_bit,
bin_flags ON without NOT), and bin_match holds that set's paths. At its first
apply, a policy takes back the paths of its adopted In sets that its static
values do not name. Until then the adopted sets stay in the kernel, whole, so
the kill set never lapses. The new sets are the same as the adopted ones, so
they keep their bits.

One ambiguity follows from that: a path that the policy named statically before
the restart, and that was removed from its text while no enforcer ran, is
taken for a reacted one and stays in the kill set. That errs towards blocking.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from schemas.policy import PolicyError, Problem
from services.common import bpfsys
from services.common.errors import OcellusError
from services.common.logging import get_logger
from services.enforcer.binsets import read_entries
from services.sensor.hook_records import HookConfig, SlotConfig
from services.sensor.proc_records import (
    BIN_KEY_DATA,
    BinaryFilter,
    BinKind,
    ProcFlag,
    sets_from_entries,
)

if TYPE_CHECKING:  # compiled.py imports opted_in from here
    from services.enforcer.compiled import CompiledHook, CompiledPolicy

log = get_logger("ocellus.enforcer.binaries")

BINARIES_ANNOTATION = "ocellus.io/binaries"
REACTIVE = "reactive"
MAX_REACTED = 256  # per policy: each one is a bin_match entry (16384 for every policy)
_MAX_PATH = BIN_KEY_DATA - 1  # an In value is stored with its NUL


class ReactedBinariesError(OcellusError):
    """The binary sets an earlier enforcer left could not be read."""


class ReactionRefused(OcellusError):
    """A reaction that could not add its binary; ``counter`` names why (the
    reactions status counts it)."""

    def __init__(self, counter: str, message: str) -> None:
        super().__init__(message)
        self.counter = counter


def opted_in(name: str, annotations: Mapping[str, str], hooks: Iterable[CompiledHook]) -> bool:
    """Whether the policy ``name`` (its metadata.annotations, its compiled
    hooks) takes reacted binaries. PolicyError naming the annotation for a
    value other than ``reactive``, or when no selector has matchBinaries In
    (a reaction would have no set to add to)."""
    value = annotations.get(BINARIES_ANNOTATION)
    if value is None:
        return False
    where = f"metadata.annotations.{BINARIES_ANNOTATION}"
    if value != REACTIVE:
        raise PolicyError(name, [Problem(where, f"must be {REACTIVE!r}, not {value!r}")])
    if not any(_kill_set(s.binary) for h in hooks for s in h.slots):
        why = "no selector has matchBinaries with operator In: reactions have no set to add to"
        raise PolicyError(name, [Problem(where, why)])
    return True


def widened(compiled: CompiledPolicy, binaries: Iterable[str]) -> CompiledPolicy:
    """``compiled`` with ``binaries`` added to every matchBinaries In set."""
    extra = frozenset(os.fsencode(b) for b in binaries)
    return _kill_sets(compiled, lambda _h, _s, values: values | extra) if extra else compiled


def narrowed(compiled: CompiledPolicy, own: CompiledPolicy, binary: str) -> CompiledPolicy:
    """``compiled`` with ``binary`` taken out of every matchBinaries In set
    whose selector does not name it itself in ``own`` (the same text compiled
    alone, without reactions: its hooks and slots line up with compiled's)."""
    gone = os.fsencode(binary)

    def keep(h: int, s: int) -> bool:
        mine = own.hooks[h].slots[s].binary
        return mine is not None and gone in mine.values

    return _kill_sets(compiled, lambda h, s, values: values if keep(h, s) else values - {gone})


def _kill_sets(
    compiled: CompiledPolicy,
    change: Callable[[int, int, frozenset[bytes]], frozenset[bytes]],
) -> CompiledPolicy:
    """``change(hook index, slot index, values)`` applied to every In set."""

    def changed(h: int, s: int, slot: SlotConfig) -> SlotConfig:
        if slot.binary is None or not _kill_set(slot.binary):
            return slot
        values = change(h, s, slot.binary.values)
        return dataclasses.replace(slot, binary=dataclasses.replace(slot.binary, values=values))

    hooks = tuple(
        dataclasses.replace(hook, slots=tuple(changed(h, s, x) for s, x in enumerate(hook.slots)))
        for h, hook in enumerate(compiled.hooks)
    )
    return dataclasses.replace(compiled, hooks=hooks)


def _kill_set(binary: BinaryFilter | None) -> bool:
    return binary is not None and binary.kind is BinKind.EXACT and not binary.negate


def _static(compiled: CompiledPolicy) -> set[bytes]:
    """The paths of the policy's own In sets (compiled from its text alone)."""
    out: set[bytes] = set()
    for hook in compiled.hooks:
        for slot in hook.slots:
            if slot.binary is not None and _kill_set(slot.binary):
                out |= slot.binary.values
    return out


def _reacted_in(
    earlier: Mapping[tuple[str, int], set[bytes]], compiled: CompiledPolicy
) -> set[bytes]:
    """What reactions had added to the adopted sets ``earlier`` (by hook path and
    selector): each set less its own selector's values in ``compiled``, so that a
    path one selector names itself is still a reaction's in another. A set whose
    selector the text no longer has: less every value the text names."""
    found: set[bytes] = set()
    matched: set[tuple[str, int]] = set()
    for hook in compiled.hooks:
        for slot in hook.slots:
            where = (hook.planned.path, slot.selector)
            if where not in earlier:
                continue
            matched.add(where)
            own = slot.binary.values if slot.binary is not None and _kill_set(slot.binary) else ()
            found |= earlier[where] - set(own)
    rest = [paths for where, paths in earlier.items() if where not in matched]
    return found | (set().union(*rest) - _static(compiled))


class ReactedBinaries:
    """The reacted binaries of each applied policy that takes them."""

    def __init__(self) -> None:
        self._reacted: dict[str, set[str]] = {}  # by policy: in its In sets in the kernel
        # Until finish(): the paths in each adopted policy's In sets (an earlier
        # enforcer's), by (hook path, selector) of the slot that named the set
        self._earlier: dict[str, dict[tuple[str, int], set[bytes]]] = {}

    # -- start-up -------------------------------------------------------------------
    def adopt(
        self,
        slots: Iterable[HookConfig],
        hook_policies: Mapping[int, str],
        trie: bpfsys.PinnedMap,
        hook_paths: Mapping[int, str] | None = None,
    ) -> None:
        """Before any policy is placed: the paths of the In sets that the adopted
        hooks' slots name, by policy and slot. ``slots``: the configs of their
        enter-side slots (the sys_exit_* side names no set), as
        HookTable.adopt_existing read them; ``hook_policies``: policy by hook
        id; ``trie``: bin_match, open (the hook table's); ``hook_paths``: where
        each hook is in its policy ("spec.kprobes[0]")."""
        bits: dict[str, dict[tuple[str, int], int]] = {}
        for cfg in slots:
            policy = hook_policies.get(cfg.hook_id)
            flags = cfg.proc.bin_flags
            if policy is not None and flags & ProcFlag.ON and not flags & ProcFlag.NOT:
                where = ((hook_paths or {}).get(cfg.hook_id, ""), cfg.selector)
                bits.setdefault(policy, {})[where] = cfg.proc.bin_bit
        try:
            entries = read_entries(trie)
        except OSError as e:  # without it, the policies' next sets would drop the reactions
            raise ReactedBinariesError(
                f"reading {trie.path.name}, the binary sets an earlier enforcer left: {e}"
            ) from e
        sets = sets_from_entries({k: v.own for k, v in entries.items()})
        for policy, by_slot in bits.items():
            kept = {
                where: set(sets[bit][1])
                for where, bit in by_slot.items()
                if bit in sets and sets[bit][0] is BinKind.EXACT and sets[bit][1]
            }
            if kept:
                self._earlier[policy] = kept

    def finish(self) -> None:
        """The policies are placed: what they took back is in their sets."""
        self._earlier.clear()

    # -- a policy's revision --------------------------------------------------------
    def carried(self, compiled: CompiledPolicy) -> set[str] | None:
        """What a new revision of the policy carries (None: it takes none):
        the reacted binaries it has, or at its first apply after a restart
        those the earlier enforcer's sets held that its static values do not."""
        if not compiled.reactive_binaries:
            return None
        current = self._reacted.get(compiled.name)
        if current is not None:
            return set(current)
        restored = {
            os.fsdecode(p) for p in _reacted_in(self._earlier.get(compiled.name, {}), compiled)
        }
        if restored:
            log.info("reacted binaries restored", policy=compiled.name, binaries=sorted(restored))
        return restored

    def placed(self, policy: str, carried: set[str] | None) -> None:
        """The revision is in the kernel, with ``carried``."""
        if carried is None:
            self._reacted.pop(policy, None)
        else:
            self._reacted[policy] = carried

    def release(self, policy: str) -> None:
        self._reacted.pop(policy, None)

    # -- reactions ------------------------------------------------------------------
    def admit(self, policy: str, binary: str) -> set[str] | None:
        """The policy's reacted binaries with ``binary`` (None: it has it
        already). ReactionRefused if the policy takes none here or the path
        cannot be matched in the kernel."""
        current = self._reacted.get(policy)
        if current is None:
            raise ReactionRefused(
                "reaction_without_binaries",
                f"policy {policy!r} is not applied here with {BINARIES_ANNOTATION}: {REACTIVE}",
            )
        if binary in current:
            return None
        size = len(os.fsencode(binary))
        if not binary.startswith("/") or not 0 < size <= _MAX_PATH:
            raise ReactionRefused(
                "reacted_binary_unmatchable",
                f"{binary!r}: an absolute path of at most {_MAX_PATH} bytes is matched",
            )
        if len(current) >= MAX_REACTED:
            raise ReactionRefused(
                "reacted_binaries_full", f"policy {policy!r} has {MAX_REACTED} reacted binaries"
            )
        return current | {binary}

    def without(self, policy: str, binary: str) -> set[str] | None:
        """The policy's reacted binaries without ``binary`` (None: not one of them)."""
        current = self._reacted.get(policy)
        if current is None or binary not in current:
            return None
        return current - {binary}

    def describe(self, policy: str) -> dict[str, object] | None:
        current = self._reacted.get(policy)
        return None if current is None else {"reacted": sorted(current)}
