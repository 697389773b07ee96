"""What a scope set in the kernel says about itself, for the next enforcer.

The kernel only asks scope_cgroups whether a (scope, cgroup) key is there
(bpf/process.bpf.c scope_has); the one-byte value is the enforcer's own. It
records why the entry is there, so an enforcer that starts after another one
stopped, crashed or was SIGKILLed reads back from the pinned map what
reactions added. The map is the source of truth because it is the
enforcement itself: what is restored cannot disagree with what the kernel was
doing meanwhile, it lives exactly as long as the maps do (a reboot or a new
map layout clears both), and every write is one bpf() update, done whole or
not at all, so a crash at any point leaves nothing half-recorded.

Which policy a set belongs to is read from the slots of the hooks being
adopted (hook_config .proc.scope, as HookTable.adopt_existing read them),
whose policy the hook registry names.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.common import bpfsys
from services.sensor.hook_records import HookConfig, ScopeKey
from services.sensor.proc_records import ProcFlag

# Bits of a scope_cgroups value.
SELECTED = 1  # the policy's selectors place the container (or leave it out: host scopes)
REACTED = 2  # a reaction added the container (reactive scopes never include the host)


@dataclass
class EarlierSets:
    """The sets an earlier enforcer left in scope_cgroups."""

    # every scope id with an entry: not given to a new set until these are purged,
    # so the old set stays whole while the adopted slots still name it
    scope_ids: set[int] = field(default_factory=set)
    # by policy: cgroup ids with REACTED in a set the policy's adopted slots name
    reacted: dict[str, set[int]] = field(default_factory=dict)


def read_earlier(
    scope_map: bpfsys.PinnedMap, slots: Iterable[HookConfig], hook_policies: Mapping[int, str]
) -> EarlierSets:
    """The scope sets in ``scope_map`` and whose they are; ``slots``: the
    configs of the adopted hooks' enter-side slots, ``hook_policies``: their
    policies by hook id. Raises OSError (bpf())."""
    owners = _scope_owners(slots, hook_policies)
    earlier = EarlierSets()
    value = ct.c_uint8()
    for key in scope_map.keys(ScopeKey):
        earlier.scope_ids.add(key.scope)
        policy = owners.get(key.scope)
        if policy is None or not scope_map.lookup(key, value):
            continue  # a set no adopted hook names (it goes), or an entry gone meanwhile
        if value.value & REACTED:
            earlier.reacted.setdefault(policy, set()).add(key.cgroup_id)
    return earlier


def _scope_owners(slots: Iterable[HookConfig], hook_policies: Mapping[int, str]) -> dict[int, str]:
    """scope id → policy, from the enter-side slots of the adopted hooks (the
    sys_exit_* side carries no scope). A policy crashed mid-change may name two
    ids (some hooks switched, some not): both are its."""
    owners: dict[int, str] = {}
    for cfg in slots:
        policy = hook_policies.get(cfg.hook_id)
        if policy is not None and cfg.proc.scope_flags & ProcFlag.ON:
            owners[cfg.proc.scope] = policy
    return owners
