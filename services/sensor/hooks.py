"""The generic hook engine's table: which (hook, selector) slot of which
tracepoint carries what, written into the loaded object's maps.

Adding a hook attaches the one generic program (already loaded and
verified) to its tracepoint if no other hook uses it yet; changing a hook
rewrites map values only; removing the last hook of a tracepoint detaches
it. Nothing here compiles or loads a program.
"""

from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import OcellusError
from services.enforcer.plan import PlannedHook
from services.sensor.hook_records import (
    HOOK_ARGS,
    HOOK_SLOTS,
    ArgLayout,
    HookKey,
    HookStats,
    ReadKind,
    SlotConfig,
    config_value,
    str_keys,
)
from services.sensor.probes import GENERIC_PROGRAM
from services.sensor.tp_link import TracepointLink

_READS = {kind.name.lower(): kind for kind in ReadKind}  # plan.py's read kinds


class HookTableError(OcellusError):
    """A hook that cannot be placed (no free slot, too many args, unknown id)."""


@dataclass
class _Hook:
    tp_id: int
    tracepoint: bytes  # b"syscalls:sys_enter_openat"
    args: tuple[ArgLayout, ...]
    slots: list[int] = field(default_factory=list)  # tracepoint slots used
    configs: list[SlotConfig] = field(default_factory=list)
    gen: int = 0


class HookTable:
    """Hooks in the loaded BPF object ``bpf`` (ProcessProbes.bpf)."""

    def __init__(self, bpf: Any) -> None:
        from bcc import libbcc

        self._lib = libbcc.lib
        self._bpf = bpf
        self._config_fd = int(bpf[b"hook_config"].map_fd)
        self._str_fd = int(bpf[b"str_match"].map_fd)
        self._stats_fd = int(bpf[b"hook_stats"].map_fd)
        self._ncpus = len(_possible_cpus())
        self._hooks: dict[int, _Hook] = {}
        self._links: dict[int, TracepointLink] = {}  # by tracepoint id
        self._prog_fd = int(bpf.funcs[GENERIC_PROGRAM].fd)  # loaded by ProcessProbes.load
        self._next_id = 1  # 0 means "no hook" in the kernel; ids are never reused

    # -- public ------------------------------------------------------------------
    def attach(self, planned: PlannedHook, slots: list[SlotConfig]) -> int:
        """Place a hook's selectors (one slot each) and attach its tracepoint; its id."""
        fmt = planned.tracepoint
        args = _layout(planned)
        free = [s for s in range(HOOK_SLOTS) if s not in self._used(fmt.id)]
        if len(slots) > len(free):
            raise HookTableError(
                f"{fmt.subsystem}:{fmt.event} has {len(free)} free slots of {HOOK_SLOTS}; "
                f"{planned.path} needs {len(slots)} (one per selector)"
            )
        hook_id = self._next_id
        self._next_id += 1
        hook = _Hook(fmt.id, f"{fmt.subsystem}:{fmt.event}".encode(), args)
        self._update(self._stats_fd, ct.c_uint32(hook_id), (HookStats * self._ncpus)())
        self._write(hook_id, hook, free[: len(slots)], slots)
        if fmt.id not in self._links:
            self._links[fmt.id] = TracepointLink(self._prog_fd, fmt.id, cookie=fmt.id)
        self._hooks[hook_id] = hook
        return hook_id

    def update(self, hook_id: int, slots: list[SlotConfig]) -> None:
        """New selectors for a hook: map values only (no attach, no load)."""
        hook = self._get(hook_id)
        free = [s for s in range(HOOK_SLOTS) if s not in self._used(hook.tp_id)]
        usable = hook.slots + free
        if len(slots) > len(usable):
            raise HookTableError(f"hook {hook_id}: {len(slots)} selectors, {len(usable)} slots")
        old_slots, old_configs, old_gen = hook.slots, hook.configs, hook.gen
        # Strings under the other generation first, then each config flips
        # to it in one update, then the old entries go: no moment without.
        self._write(hook_id, hook, usable[: len(slots)], slots, gen=old_gen ^ 1)
        for slot in old_slots:
            if slot not in hook.slots:
                self._delete(self._config_fd, HookKey(hook.tp_id, slot))
        for cfg in old_configs:
            for key in str_keys(hook_id, cfg, old_gen):
                self._delete(self._str_fd, key)

    def detach(self, hook_id: int) -> None:
        """Remove a hook; its tracepoint is detached when no hook uses it."""
        hook = self._get(hook_id)
        for slot in hook.slots:
            self._delete(self._config_fd, HookKey(hook.tp_id, slot))
        for cfg in hook.configs:
            for key in str_keys(hook_id, cfg, hook.gen):
                self._delete(self._str_fd, key)
        del self._hooks[hook_id]
        if not self._hooks_on(hook.tp_id):
            self._links.pop(hook.tp_id).close()
        self._delete(self._stats_fd, ct.c_uint32(hook_id))

    def attached(self) -> set[int]:
        """Ids of the tracepoints the generic program is attached to."""
        return set(self._links)

    def close(self) -> None:
        """Detach every tracepoint (the maps stay until the object goes)."""
        for link in self._links.values():
            link.close()
        self._links.clear()

    def stats(self, hook_id: int) -> dict[str, int]:
        """The hook's counters, summed over CPUs."""
        self._get(hook_id)
        values = (HookStats * self._ncpus)()
        if self._lib.bpf_lookup_elem(self._stats_fd, ct.byref(ct.c_uint32(hook_id)), values):
            return {}
        names = [f[0] for f in HookStats._fields_]
        return {n: sum(getattr(v, n) for v in values) for n in names}

    # -- private -----------------------------------------------------------------
    def _write(
        self, hook_id: int, hook: _Hook, slots: list[int], configs: list[SlotConfig], gen: int = 0
    ) -> None:
        for cfg in configs:
            for key in str_keys(hook_id, cfg, gen):
                self._update(self._str_fd, key, ct.c_uint8(1))
        for slot, cfg in zip(slots, configs, strict=True):
            value = config_value(hook_id, hook.args, cfg, gen)
            self._update(self._config_fd, HookKey(hook.tp_id, slot), value)
        hook.slots, hook.configs, hook.gen = list(slots), list(configs), gen

    def _get(self, hook_id: int) -> _Hook:
        try:
            return self._hooks[hook_id]
        except KeyError:
            raise HookTableError(f"no hook {hook_id}") from None

    def _used(self, tp_id: int) -> set[int]:
        return {s for h in self._hooks.values() if h.tp_id == tp_id for s in h.slots}

    def _hooks_on(self, tp_id: int) -> bool:
        return any(h.tp_id == tp_id for h in self._hooks.values())

    def _update(self, fd: int, key: Any, value: Any) -> None:
        if self._lib.bpf_update_elem(fd, ct.byref(key), ct.byref(value), 0) != 0:
            raise HookTableError(f"map update failed (fd {fd}, {type(key).__name__})")

    def _delete(self, fd: int, key: Any) -> None:
        self._lib.bpf_delete_elem(fd, ct.byref(key))  # absent is fine


def _layout(planned: PlannedHook) -> tuple[ArgLayout, ...]:
    if len(planned.args) > HOOK_ARGS:
        raise HookTableError(f"{planned.path}: at most {HOOK_ARGS} args in the kernel")
    return tuple(ArgLayout(a.field.offset, a.field.size, _READS[a.read]) for a in planned.args)


def _possible_cpus() -> list[int]:
    from bcc.utils import get_possible_cpus

    return list(get_possible_cpus())


__all__ = ["HookTable", "HookTableError"]
