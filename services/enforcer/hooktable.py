"""The generic hook engine's table: which (hook, selector) slot of which
tracepoint carries what, written into the sensor's pinned policy maps.

Adding a hook writes its slots; the sensor then attaches the generic
program (already loaded and verified; or its entry for records that hold a
syscall's first args) to any tracepoint the map names that it is not
attached to yet (services/sensor/attachments.py). Changing a hook rewrites
map values only; removing the last hook of a tracepoint lets the sensor
detach it. Nothing here compiles or loads a program: the pinned maps are
written with bpf(), and the prefilter words through mmap (prefilter.py).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.common import bpfsys
from services.common.errors import OcellusError
from services.enforcer.binsets import BinarySets, BinSetError
from services.enforcer.plan import PlannedHook
from services.enforcer.prefilter import Prefilters, plan_prefilter
from services.sensor.hook_records import (
    HOOK_ARGS,
    HOOK_SLOTS,
    HOOKS_MAX,
    POLICY_MAPS,
    SLOT_RETURN,
    TP_IDS,
    ArgLayout,
    HookConfig,
    HookKey,
    HookStats,
    ReadKind,
    SlotConfig,
    StrKey,
    TpSlots,
    ValKey,
    config_value,
    exit_config_value,
    stats_index,
    str_keys,
)
from services.sensor.hook_values import val_keys
from services.sensor.proc_records import ProcFlag

_READS = {kind.name.lower(): kind for kind in ReadKind}  # plan.py's read kinds


class HookTableError(OcellusError):
    """A hook that cannot be placed (no free slot, too many args, unknown id, a map error)."""


@dataclass
class _Hook:
    tp_id: int
    args: tuple[ArgLayout, ...]
    slots: list[int] = field(default_factory=list)  # tracepoint slots used
    proc_slots: set[int] = field(default_factory=set)  # those with process filters or a scope
    configs: list[SlotConfig] = field(default_factory=list)
    gen: int = 0
    known_strings: bool = True  # False for a hook found in the maps at start
    # return: true: the sys_exit_* tracepoint, the return value's layout, and the
    # enter slots whose exit config is written there (key slot SLOT_RETURN | slot)
    exit_tp_id: int | None = None
    ret: ArgLayout | None = None
    exit_slots: list[int] = field(default_factory=list)


class HookTable:
    """Hooks in the policy maps pinned in ``pin_dir`` (the sensor creates them).

    Hook ids start at ``first_id`` and are never reused by this table: a
    record of a removed hook still in flight never names a newer one. No two
    hooks placed or reserved share a hook_stats index (``stats_index``).
    """

    def __init__(self, pin_dir: Path, first_id: int = 1) -> None:
        maps = {}
        try:
            for spec in POLICY_MAPS:
                maps[spec.name] = bpfsys.PinnedMap(pin_dir / spec.name)
        except OSError as e:
            for m in maps.values():
                m.close()
            raise HookTableError(
                f"the sensor's policy maps are not in {pin_dir} ({e}); is the sensor running "
                "on this node, with the same bpffs directory and version?"
            ) from e
        self._config, self._str, self._stats = (
            maps["hook_config"],
            maps["str_match"],
            maps["hook_stats"],
        )
        self._val = maps["val_match"]
        self._tp_slots = maps["hook_slots"]
        self._prefilter_maps = (maps["hook_prefilter"], maps["str_prefilter"])
        try:
            self.prefilters = Prefilters(*self._prefilter_maps)
        except OSError as e:
            for m in maps.values():
                m.close()
            raise HookTableError(f"mapping hook_prefilter: {e.strerror or e}") from e
        self.scope_map = maps["scope_cgroups"]  # written by scopes.py
        self._bin_maps = (maps["bin_match"], maps["bin_state"])
        self.bin_match = maps["bin_match"]  # read by reacted_binaries.py at adoption
        self._bins = BinarySets(*self._bin_maps)  # matchBinaries value sets (global)
        self._ncpus = bpfsys.possible_cpus()
        self._hooks: dict[int, _Hook] = {}
        self._reserved: set[int] = set()  # ids given out and not placed yet
        self._next_id = max(1, first_id)  # 0 means "no hook" in the kernel

    # -- public ------------------------------------------------------------------
    def reserve(self) -> int:
        """A new hook id, to publish before the hook is placed under it (or
        given back with ``release``), whose counters no other hook shares."""
        taken = {stats_index(i) for i in (*self._hooks, *self._reserved)}
        if len(taken) >= HOOKS_MAX:
            raise HookTableError(f"{HOOKS_MAX} hooks placed or being placed on this node")
        while stats_index(self._next_id) in taken or self._next_id == 0:
            self._next_id += 1
        hook_id = self._next_id
        self._next_id += 1
        self._reserved.add(hook_id)
        return hook_id

    def release(self, hook_ids: Iterable[int]) -> None:
        """Give back reserved ids that were not placed (a failed apply)."""
        self._reserved.difference_update(hook_ids)

    def attach(
        self, planned: PlannedHook, slots: list[SlotConfig], hook_id: int | None = None
    ) -> int:
        """Place a hook's selectors (one slot each) under ``hook_id`` (reserved)
        or a new id; the id."""
        fmt = planned.tracepoint
        if not 0 <= fmt.id < TP_IDS:
            raise HookTableError(f"{fmt.subsystem}:{fmt.event} has id {fmt.id}, beyond {TP_IDS}")
        args = arg_layouts(planned)
        free = self._free(fmt.id)
        if len(slots) > len(free):
            raise HookTableError(
                f"{fmt.subsystem}:{fmt.event} has {len(free)} free slots of {HOOK_SLOTS}; "
                f"{planned.path} needs {len(slots)} (one per selector)"
            )
        if hook_id is None:
            hook_id = self.reserve()
        elif hook_id not in self._reserved:
            raise HookTableError(f"hook id {hook_id} was not reserved")
        hook = _Hook(fmt.id, args)
        _set_return(hook, planned)
        try:  # the index may hold an earlier hook's counts
            self._update(
                self._stats, ct.c_uint32(stats_index(hook_id)), (HookStats * self._ncpus)()
            )
        except HookTableError:
            self.release([hook_id])
            raise
        self._reserved.discard(hook_id)
        self._hooks[hook_id] = hook
        with self._prefilter_paused(fmt.id):
            try:
                self._write(hook_id, hook, free[: len(slots)], slots)
            except HookTableError:
                self.detach(hook_id)
                raise
        return hook_id

    def update(self, hook_id: int, slots: list[SlotConfig]) -> None:
        """New selectors for a hook: map values only."""
        hook = self._get(hook_id)
        usable = hook.slots + self._free(hook.tp_id)
        if len(slots) > len(usable):
            raise HookTableError(f"hook {hook_id}: {len(slots)} selectors, {len(usable)} slots")
        old_slots, old_configs, old_gen = hook.slots, hook.configs, hook.gen
        old_exit = (hook.exit_tp_id, list(hook.exit_slots))
        # Strings under the other generation first, then each config flips
        # to it in one update, then the old entries go: no moment without.
        with self._prefilter_paused(hook.tp_id):
            self._write(hook_id, hook, usable[: len(slots)], slots, gen=old_gen ^ 1)
            for slot in old_slots:
                if slot not in hook.slots:
                    self._config.delete(HookKey(hook.tp_id, slot))  # unpublished by _write
        self._delete_exit(old_exit[0], old_exit[1], keep=(hook.exit_tp_id, hook.exit_slots))
        self._bins.retain(hook_id, {c.binary.set_key for c in slots if c.binary})
        if hook.known_strings:
            self._delete_strings(hook_id, old_configs, old_gen)
        else:
            self._scan_delete_strings(hook_id, keep_gen=hook.gen)
        hook.known_strings = True

    def detach(self, hook_id: int) -> None:
        """Remove a hook from the maps."""
        hook = self._get(hook_id)
        with self._prefilter_paused(hook.tp_id):
            slots, hook.slots, hook.proc_slots = hook.slots, [], set()
            self._publish_slots(hook.tp_id)  # the program stops looking first
            for slot in slots:
                self._config.delete(HookKey(hook.tp_id, slot))
        self._delete_exit(hook.exit_tp_id, hook.exit_slots)
        self._bins.retain(hook_id, set())
        if hook.known_strings:
            self._delete_strings(hook_id, hook.configs, hook.gen)
        else:
            self._scan_delete_strings(hook_id, keep_gen=None)
        del self._hooks[hook_id]  # its counters stay until the index is reused

    def adopt_existing(self) -> dict[int, list[HookConfig]]:
        """Take over the hooks an earlier enforcer left in the maps (they kept
        enforcing meanwhile): {hook id: the configs of its enter-side slots}.
        The caller updates the ones it still wants (same id, no gap) and
        detaches the rest. This is the one read of hook_config at start-up:
        what the slots say of scopes and binary sets comes from these configs
        (scope_state.py, reacted_binaries.py)."""
        found: dict[int, _Hook] = {}
        configs: dict[int, list[HookConfig]] = {}
        bin_owners: dict[int, set[int]] = {}
        # Off until update() gives each hook its strings back (slower meanwhile).
        self.prefilters.clear()
        for key in self._config.keys(HookKey):
            value = HookConfig()
            if not self._config.lookup(key, value):
                continue
            if value.proc.bin_flags & ProcFlag.ON:
                bin_owners.setdefault(value.hook_id, set()).add(value.proc.bin_bit)
            hook = found.setdefault(
                value.hook_id, _Hook(key.tp_id, (), gen=value.gen, known_strings=False)
            )
            enter = configs.setdefault(value.hook_id, [])
            if key.slot & SLOT_RETURN:  # the exit side of a return: true hook
                hook.exit_tp_id = key.tp_id
                hook.exit_slots.append(key.slot & ~SLOT_RETURN)
                continue
            hook.tp_id = key.tp_id
            hook.slots.append(key.slot)
            enter.append(value)
            if proc_filtered(value):
                hook.proc_slots.add(key.slot)
        self._hooks.update(found)
        for tp_id in {hook.tp_id for hook in found.values()}:
            self._publish_slots(tp_id)  # as the maps say, whatever the last writer left
        self._bins.adopt(bin_owners)
        if found:
            self._next_id = max(self._next_id, max(found) + 1)
        return configs

    def relayout(self, hook_id: int, planned: PlannedHook) -> bool:
        """An adopted hook takes ``planned``'s args if it is on the same
        tracepoint (then update() rewrites its values); False otherwise."""
        hook = self._get(hook_id)
        if hook.tp_id != planned.tracepoint.id:
            return False
        hook.args = arg_layouts(planned)
        old_exit = (hook.exit_tp_id, list(hook.exit_slots))
        _set_return(hook, planned)
        if hook.exit_tp_id != old_exit[0]:  # update() writes the new side
            self._delete_exit(*old_exit)
            hook.exit_slots = []
        return True

    def hook_ids(self) -> set[int]:
        return set(self._hooks)

    def tracepoints(self) -> set[int]:
        """Tracepoint ids the maps name (what the sensor should be attached to)."""
        return {h.tp_id for h in self._hooks.values()} | {
            h.exit_tp_id for h in self._hooks.values() if h.exit_tp_id is not None
        }

    def prefiltered(self, hook_id: int) -> bool:
        """Whether the hook's tracepoint rules events out by its string
        prefilter (prefilter.py): the cheap path for what matches nothing."""
        return self.prefilters.is_on(self._get(hook_id).tp_id)

    def stats(self, hook_id: int) -> dict[str, int]:
        """The hook's counters, summed over CPUs."""
        self._get(hook_id)
        values = (HookStats * self._ncpus)()
        if not self._stats.lookup(ct.c_uint32(stats_index(hook_id)), values):
            return {}
        names = [f[0] for f in HookStats._fields_]
        return {n: sum(getattr(v, n) for v in values) for n in names}

    def close(self) -> None:
        self.prefilters.close()
        maps = (self._config, self._tp_slots, self._str, self._stats, self._val, self.scope_map)
        for m in (*maps, *self._bin_maps, *self._prefilter_maps):
            m.close()

    # -- private -----------------------------------------------------------------
    def _write(
        self, hook_id: int, hook: _Hook, slots: list[int], configs: list[SlotConfig], gen: int = 0
    ) -> None:
        for cfg in configs:
            for key in str_keys(hook_id, cfg, gen):
                self._update(self._str, key, ct.c_uint8(1))
            for vkey in val_keys(hook_id, cfg, gen):
                self._update(self._val, vkey, ct.c_uint8(1))
        # The exit side before the enter side: a record kept on sys_enter_*
        # always finds its exit config on sys_exit_*.
        if hook.exit_tp_id is not None and hook.ret is not None:
            for slot, cfg in zip(slots, configs, strict=True):
                value = exit_config_value(hook_id, hook.ret, cfg, gen)
                self._update(self._config, HookKey(hook.exit_tp_id, SLOT_RETURN | slot), value)
            hook.exit_slots = list(slots)
        returns = hook.ret is not None
        try:  # before the configs that name them
            bits = self._bins.acquire(hook_id, [c.binary for c in configs if c.binary])
        except BinSetError as e:
            raise HookTableError(str(e)) from e
        values = [
            config_value(
                hook_id, hook.args, cfg, gen, returns=returns,
                bin_bit=bits[cfg.binary.set_key] if cfg.binary else None,
            )
            for cfg in configs
        ]  # fmt: skip
        proc = {slot for slot, v in zip(slots, values, strict=True) if proc_filtered(v)}
        # A slot that gains process filters is marked before its config says
        # so (the program skips a slot whose filters the mark does not show).
        self._publish_slots(hook.tp_id, more_proc=proc)
        # Slots the hook did not hold yet first, and published, then the
        # ones it held: selectors [A] -> [B, A] puts A in slot 1 before B
        # takes slot 0, so A is never unenforced in between.
        old = set(hook.slots)
        fresh = [(slot, v) for slot, v in zip(slots, values, strict=True) if slot not in old]
        for slot, value in fresh:
            self._update(self._config, HookKey(hook.tp_id, slot), value)
        if fresh and old:
            hook.slots = sorted(old | {slot for slot, _ in fresh})
            self._publish_slots(hook.tp_id, more_proc=proc)
        for slot, value in zip(slots, values, strict=True):
            if slot in old:
                self._update(self._config, HookKey(hook.tp_id, slot), value)
        hook.slots, hook.configs, hook.gen = list(slots), list(configs), gen
        hook.proc_slots = proc
        self._publish_slots(hook.tp_id)  # the new slots, once their configs are there

    def _publish_slots(self, tp_id: int, more_proc: Iterable[int] = ()) -> None:
        """hook_slots[tp_id]: the slots the hooks on it hold, their hooks, and
        those with process filters (plus ``more_proc``, about to gain them)."""
        value = TpSlots()
        holders = [
            (hook_id, h) for hook_id, h in self._hooks.items() if h.tp_id == tp_id and h.slots
        ]
        for i, (hook_id, h) in enumerate(holders):  # at most HOOK_SLOTS: a slot each at least
            value.used |= sum(1 << s for s in h.slots)
            value.proc |= sum(1 << s for s in h.proc_slots)
            value.hooks[i] = hook_id
        value.proc |= sum(1 << s for s in more_proc)
        self._update(self._tp_slots, ct.c_uint32(tp_id), value)

    @contextlib.contextmanager
    def _prefilter_paused(self, tp_id: int) -> Iterator[None]:
        """The tracepoint's prefilter off while its configs change, then as
        they say (off after a failed change)."""
        self.prefilters.off(tp_id)
        try:
            yield
        except BaseException:
            # The maps may hold configs the table's model does not: off.
            self.prefilters.publish(tp_id, None)
            raise
        hooks = [h for h in self._hooks.values() if h.tp_id == tp_id and h.slots]
        # An adopted hook's configs are known once update() wrote them.
        known = all(len(h.configs) == len(h.slots) for h in hooks)
        planned = plan_prefilter((h.args, h.configs) for h in hooks) if known else None
        self.prefilters.publish(tp_id, planned)

    def _delete_exit(
        self,
        tp_id: int | None,
        slots: list[int],
        keep: tuple[int | None, list[int]] = (None, []),
    ) -> None:
        if tp_id is None:
            return
        for slot in slots:
            if tp_id != keep[0] or slot not in keep[1]:
                self._config.delete(HookKey(tp_id, SLOT_RETURN | slot))

    def _delete_strings(self, hook_id: int, configs: list[SlotConfig], gen: int) -> None:
        for cfg in configs:
            for key in str_keys(hook_id, cfg, gen):
                self._str.delete(key)
            for vkey in val_keys(hook_id, cfg, gen):
                self._val.delete(vkey)

    def _scan_delete_strings(self, hook_id: int, keep_gen: int | None) -> None:
        """A hook adopted from an earlier enforcer: its strings are known only
        to the map (and a crash mid-update may have left both generations)."""
        for key in self._str.keys(StrKey):
            if key.hook_id == hook_id and key.gen != keep_gen:
                self._str.delete(key)
        for vkey in self._val.keys(ValKey):
            if vkey.hook_id == hook_id and vkey.gen != keep_gen:
                self._val.delete(vkey)

    def _get(self, hook_id: int) -> _Hook:
        try:
            return self._hooks[hook_id]
        except KeyError:
            raise HookTableError(f"no hook {hook_id}") from None

    def _free(self, tp_id: int) -> list[int]:
        used = {s for h in self._hooks.values() if h.tp_id == tp_id for s in h.slots}
        return [s for s in range(HOOK_SLOTS) if s not in used]

    def _update(self, m: bpfsys.PinnedMap, key: object, value: object) -> None:
        try:
            m.update(key, value)
        except OSError as e:
            raise HookTableError(f"writing {m.path.name}: {e.strerror or e}") from e


def proc_filtered(value: HookConfig) -> bool:
    """Whether a slot's config has process filters or a scope (as proc_filtered() in C)."""
    p = value.proc
    return bool(p.bin_flags | p.pid_flags | p.nns | p.scope_flags)


def _set_return(hook: _Hook, planned: PlannedHook) -> None:
    """A return: true hook's exit tracepoint and return value layout."""
    ret, exit_fmt = planned.return_arg, planned.exit_tracepoint
    if ret is None or exit_fmt is None:
        hook.exit_tp_id, hook.ret = None, None
        return
    hook.exit_tp_id = exit_fmt.id
    hook.ret = ArgLayout(ret.field.offset, ret.read_size, _READS[ret.read])


def arg_layouts(planned: PlannedHook) -> tuple[ArgLayout, ...]:
    """Where each of the hook's args is in its tracepoint record, and how it is read."""
    if len(planned.args) > HOOK_ARGS:
        raise HookTableError(f"{planned.path}: at most {HOOK_ARGS} args in the kernel")
    return tuple(ArgLayout(a.field.offset, a.read_size, _READS[a.read]) for a in planned.args)


__all__ = ["HookTable", "HookTableError"]
