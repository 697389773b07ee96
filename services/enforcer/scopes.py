"""Scoped policies in the kernel: each scope's cgroup set in the pinned map
scope_cgroups, kept current as containers start and stop.

A scope is one policy's (scope_spec.py). Its set holds the cgroup ids of the
containers it selects, or, when it includes the host (hostSelector: {}), of
the containers it leaves out (the slots then carry OCELLUS_PF_NOT): either
way the kernel does one lookup per slot. Every cgroup of a container is in
the set, its sub-cgroups too (a process of a container may sit in one).

The cgroups come from the container resolver's index (services/common/), kept
current by the sensor's cgroup_mkdir / cgroup_rmdir records on
``ocellus.raw.<node>.cgroup_mkdir|rmdir`` and by a periodic rescan (core NATS
drops what arrives while the enforcer is away). A change of a policy's scope
writes a new scope id's set before the slots name it, then drops the old
set: no moment without one.

What reactions added outlives the enforcer: each entry's value says why it is
there (scope_state.py), and a new enforcer reads the REACTED ones back before
it places any policy (adopt), carries them into the policy's new set, and only
then lets the old set go (purge_unknown).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes as ct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.common import bpfsys
from services.common.cgroups import parse_container_cgroup
from services.common.containers import ContainerInfo, ContainerResolver
from services.common.errors import OcellusError
from services.common.logging import get_logger
from services.enforcer.scope_spec import ScopeSpec
from services.enforcer.scope_state import REACTED, SELECTED, EarlierSets, read_earlier
from services.sensor.hook_records import POLICY_MAPS, HookConfig, ScopeKey
from services.sensor.proc_records import SCOPE_IDS, ScopeFilter

log = get_logger("ocellus.enforcer.scopes")
# Seconds before each attempt to describe a new container's cgroup (the
# resolver remembers "unknown" for its unresolved_ttl: make that shorter).
_RESOLVE_RETRIES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
SCOPE_CGROUPS_MAX = next(m.max_entries for m in POLICY_MAPS if m.name == "scope_cgroups")


class ScopeError(OcellusError):
    """A scope's set could not be written (the map is full, a bpf() error)."""


@dataclass
class _Scope:
    id: int
    spec: ScopeSpec
    reacted: set[str] = field(default_factory=set)  # container ids reactions added
    members: dict[int, int] = field(default_factory=dict)  # cgroup id → its value in the set

    @property
    def filter(self) -> ScopeFilter:
        return ScopeFilter(self.id, negate=self.spec.host)

    def entry(self, info: ContainerInfo | None, container_id: str) -> int:
        """The value of a container's cgroup in the kernel set; 0: not in it."""
        selected = info is not None and self.spec.matches(info)
        reacted = container_id in self.reacted
        if self.spec.host:  # the set holds the containers left out
            return 0 if selected or reacted else SELECTED
        return (SELECTED if selected else 0) | (REACTED if reacted else 0)


class ScopeManager:
    def __init__(self, resolver: ContainerResolver, scope_map: bpfsys.PinnedMap) -> None:
        self._resolver = resolver
        self._map = scope_map
        self._scopes: dict[str, _Scope] = {}  # by policy name: in the slots now
        self._pending: dict[str, _Scope] = {}  # prepared, not yet in the slots
        # An earlier enforcer's sets, until purge_unknown(); the containers its
        # reactions added, by policy, for the policy's first set here
        self._earlier = EarlierSets()
        self._restored: dict[str, set[str]] = {}
        self._next_id = 1
        self._lock = asyncio.Lock()
        self.counters: collections.Counter[str] = collections.Counter()

    # -- start-up -------------------------------------------------------------------
    def adopt(self, slots: Iterable[HookConfig], hook_policies: Mapping[int, str]) -> None:
        """Before any policy is placed: the sets an earlier enforcer left, and
        the containers still here that its reactions added to each adopted
        policy (``slots``: the adopted hooks' enter-side slot configs, as
        HookTable.adopt_existing read them; ``hook_policies``: policy by
        adopted hook id)."""
        try:
            self._earlier = read_earlier(self._map, slots, hook_policies)
        except OSError as e:  # without it, the next sets would drop the reactions
            raise ScopeError(f"reading the scope sets an earlier enforcer left: {e}") from e
        cgroups = self._container_cgroups()
        for policy, cgroup_ids in self._earlier.reacted.items():
            # a cgroup no longer in the tree: its container went while no enforcer ran
            containers = {cgroups[c] for c in cgroup_ids if c in cgroups}
            if containers:
                self._restored[policy] = containers
                log.info("reactions restored", policy=policy, containers=sorted(containers))

    # -- a policy's scope -----------------------------------------------------------
    async def prepare(self, policy: str, spec: ScopeSpec) -> ScopeFilter:
        """A new set for ``policy``'s scope, written before its slots name it;
        reactions already applied to the policy (here, or by the earlier
        enforcer) carry over."""
        async with self._lock:
            current = self._scopes.get(policy)
            reacted = current.reacted if current else self._restored.get(policy, set())
            scope = _Scope(self._new_id(), spec, set(reacted))
            self._pending[policy] = scope
            try:
                for cgroup_id, container_id in self._container_cgroups().items():
                    value = scope.entry(await self._info(cgroup_id), container_id)
                    if value:
                        self._put(scope, cgroup_id, value)
            except ScopeError:
                self._drop(self._pending.pop(policy))
                raise
            return scope.filter

    def commit(self, policy: str) -> None:
        """The slots name the prepared set now: the old one goes."""
        scope = self._pending.pop(policy, None)
        if scope is None:
            return
        old = self._scopes.get(policy)
        self._scopes[policy] = scope
        if old is not None:
            self._drop(old)
        log.info("scope in place", policy=policy, scope=scope.id, cgroups=len(scope.members))

    def abort(self, policy: str) -> None:
        scope = self._pending.pop(policy, None)
        if scope is not None:
            self._drop(scope)

    def release(self, policy: str) -> None:
        """The policy is gone (or no longer scoped)."""
        scope = self._scopes.pop(policy, None)
        if scope is not None:
            self._drop(scope)

    def purge_unknown(self) -> int:
        """Entries of scope ids no policy uses (an earlier enforcer's): removed.
        Called once the policies are placed: what they restored is in their sets."""
        self._earlier = EarlierSets()
        self._restored.clear()
        used = {s.id for s in (*self._scopes.values(), *self._pending.values())}
        stale = [k for k in self._map.keys(ScopeKey) if k.scope not in used]
        for key in stale:
            self._map.delete(key)
        return len(stale)

    def describe(self, policy: str) -> dict[str, object] | None:
        scope = self._scopes.get(policy)
        if scope is None:
            return None
        return {
            "id": scope.id,
            "host": scope.spec.host,
            "cgroups": len(scope.members),
            "reacted": sorted(scope.reacted),
        }

    def is_reactive(self, policy: str) -> bool:
        scope = self._scopes.get(policy)
        return scope is not None and scope.spec.reactive

    # -- reactions ------------------------------------------------------------------
    async def add_container(self, policy: str, container_id: str) -> int | None:
        """Reaction: ``policy`` now applies in the container (all its cgroups).
        CLOCK_MONOTONIC ns when the last entry was written (the kernel's ktime
        clock); None if the policy has no reactive scope here."""
        async with self._lock:
            scope = self._scopes.get(policy)
            if scope is None or not scope.spec.reactive:
                self.counters["reaction_without_scope"] += 1
                return None
            pending = self._pending.get(policy)
            targets = (scope,) if pending is None else (scope, pending)
            for target in targets:
                target.reacted.add(container_id)
            for cgroup_id, cid in self._container_cgroups().items():
                if cid == container_id:
                    for target in targets:  # REACTED: the next enforcer finds it
                        self._put(target, cgroup_id, target.members.get(cgroup_id, 0) | REACTED)
            return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    async def release_container(self, policy: str, container: str) -> str | None:
        """Undo reactions: the container (its id, or a unique prefix of it) is no
        longer in ``policy``'s scope because of them; its selectors may still
        choose it. The full id, or None if no reaction had added it.
        ScopeError for a prefix of several."""
        async with self._lock:
            targets = [t for t in (self._scopes.get(policy), self._pending.get(policy)) if t]
            found = {cid for t in targets for cid in t.reacted if cid.startswith(container)}
            if not container or not found:
                return None
            if len(found) > 1:
                raise ScopeError(f"{container!r} names {len(found)} reacted containers")
            (cid,) = found
            cgroups = [c for c, owner in self._container_cgroups().items() if owner == cid]
            infos = {c: await self._info(c) for c in cgroups}
            for target in targets:
                target.reacted.discard(cid)
            try:
                for cgroup_id in cgroups:
                    for target in targets:
                        value = target.entry(infos[cgroup_id], cid)
                        if value:
                            self._put(target, cgroup_id, value)
                        elif cgroup_id in target.members:
                            self._map.delete(ScopeKey(target.id, 0, cgroup_id))
                            del target.members[cgroup_id]
            except (ScopeError, OSError) as e:
                # Blocked again, as before: a release is whole or not at all.
                for target in targets:
                    target.reacted.add(cid)
                    for cgroup_id in cgroups:
                        with contextlib.suppress(ScopeError, OSError):
                            self._put(target, cgroup_id, target.members.get(cgroup_id, 0) | REACTED)
                raise ScopeError(f"releasing {cid[:12]}: {e}") from e
            return cid

    # -- cgroups come and go --------------------------------------------------------
    async def cgroup_created(self, cgroup_id: int, path: str) -> None:
        self._resolver.cgroup_created(cgroup_id, path)
        container = parse_container_cgroup(path)
        if container is None:
            return  # a host cgroup: in no set (host-including scopes say NOT)
        for delay in _RESOLVE_RETRIES:
            if delay:
                await asyncio.sleep(delay)
            async with self._lock:
                if not self._scopes and not self._pending:
                    return
                if cgroup_id not in self._resolver.cgroups():
                    return  # removed meanwhile
                info = await self._info(cgroup_id)
                for scope in (*self._scopes.values(), *self._pending.values()):
                    value = scope.entry(info, container.container_id)
                    if value:
                        try:
                            self._put(scope, cgroup_id, value)
                        except ScopeError as e:
                            self.counters["scope_write_errors"] += 1
                            log.warning("scope not updated", cgroup=path, reason=str(e))
            if info is not None and info.resolved:
                self.counters["container_cgroups_seen"] += 1
                return
            # The runtime could not say yet (busy, or not told yet): ask again soon.
            self.counters["container_resolve_retries"] += 1
        self.counters["container_unresolved"] += 1

    def cgroup_removed(self, cgroup_id: int, path: str) -> None:
        self._resolver.cgroup_removed(cgroup_id, path)
        for scope in (*self._scopes.values(), *self._pending.values()):
            if cgroup_id in scope.members:
                self._map.delete(ScopeKey(scope.id, 0, cgroup_id))
                del scope.members[cgroup_id]
        container = parse_container_cgroup(path)
        if container is not None and not any(
            cid == container.container_id for cid in self._container_cgroups().values()
        ):
            # the container is gone
            for scope in (*self._scopes.values(), *self._pending.values()):
                scope.reacted.discard(container.container_id)
            for restored in self._restored.values():
                restored.discard(container.container_id)

    async def reconcile(self) -> None:
        """Rescan the cgroup tree and put every set right (missed records)."""
        await self._resolver.rescan()
        async with self._lock:
            cgroups = self._container_cgroups()
            for scope in self._scopes.values():
                want = {}
                for cgroup_id, container_id in cgroups.items():
                    value = scope.entry(await self._info(cgroup_id), container_id)
                    if value:
                        want[cgroup_id] = value
                for cgroup_id in scope.members.keys() - want.keys():
                    self._map.delete(ScopeKey(scope.id, 0, cgroup_id))
                    del scope.members[cgroup_id]
                    self.counters["reconcile_removed"] += 1
                for cgroup_id, value in want.items():
                    if scope.members.get(cgroup_id) != value:
                        added = cgroup_id not in scope.members
                        self._put(scope, cgroup_id, value)
                        self.counters["reconcile_added" if added else "reconcile_changed"] += 1
            self.counters["reconciles"] += 1  # full resyncs done (the status says)

    async def run_reconcile(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except (ScopeError, OSError) as e:
                log.warning("scope reconcile failed", reason=str(e))

    # -- internals ------------------------------------------------------------------
    def _container_cgroups(self) -> dict[int, str]:
        out = {}
        for cgroup_id, path in self._resolver.cgroups().items():
            container = parse_container_cgroup(path)
            if container is not None:
                out[cgroup_id] = container.container_id
        return out

    async def _info(self, cgroup_id: int) -> ContainerInfo | None:
        try:
            return await self._resolver.container_of(cgroup_id)
        except OcellusError as e:
            log.warning("container lookup failed", cgroup_id=cgroup_id, reason=str(e))
            return None

    def _new_id(self) -> int:
        # An earlier enforcer's ids too: their sets stay whole while slots name them.
        used = {s.id for s in (*self._scopes.values(), *self._pending.values())}
        used |= self._earlier.scope_ids
        for _ in range(SCOPE_IDS):
            candidate = self._next_id
            self._next_id = self._next_id % (SCOPE_IDS - 1) + 1  # 1 .. SCOPE_IDS-1
            if candidate not in used:
                return candidate
        raise ScopeError(f"more than {SCOPE_IDS - 1} scoped policies")

    def _put(self, scope: _Scope, cgroup_id: int, value: int) -> None:
        if scope.members.get(cgroup_id) == value:
            return
        try:
            self._map.update(ScopeKey(scope.id, 0, cgroup_id), ct.c_uint8(value))
        except OSError as e:
            limit = f" (limit: {SCOPE_CGROUPS_MAX} entries)" if e.errno in (7, 28) else ""
            raise ScopeError(f"writing scope_cgroups: {e.strerror or e}{limit}") from e
        scope.members[cgroup_id] = value

    def _drop(self, scope: _Scope) -> None:
        for cgroup_id in scope.members:
            self._map.delete(ScopeKey(scope.id, 0, cgroup_id))
        scope.members.clear()
