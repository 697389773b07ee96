"""The policy lifecycle on one node: apply, change, remove — each as a whole
or not at all.

A policy is compiled first (nothing written); then its hook ids go into
the registry, its slots into the maps, and the sensor is asked to attach;
any failure undoes what this step wrote and leaves the previous revision
running. A change that keeps every hook's tracepoint and args rewrites map
values in place (same hook ids, same program, no gap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.hooks import HookInfo
from schemas.policy import PolicyError, Problem, load_policy
from services.common import signing
from services.common.errors import OcellusError
from services.common.logging import get_logger
from services.common.signing import SignatureError
from services.enforcer.compiled import CompiledPolicy, Mode, compile_policy
from services.enforcer.connect_rules import ConnectRules
from services.enforcer.hooktable import HookTable, HookTableError
from services.enforcer.plan import FormatReader
from services.enforcer.reacted_binaries import (
    ReactedBinaries,
    ReactionRefused,
    narrowed,
    widened,
)
from services.enforcer.registry import Registry
from services.enforcer.revision import revision_of
from services.enforcer.scopes import ScopeError, ScopeManager

log = get_logger("ocellus.enforcer")

# The sensor's answer to a sync request ({"attached": [...], "failed": {...}}),
# or None when no sensor answered.
SyncHooks = Callable[[], Awaitable[dict[str, Any] | None]]
_COUNTERS = ("matched", "posted", "signalled", "filtered", "denied", "ratelimited", "monitored")


class ApplyError(OcellusError):
    """A compiled policy could not be placed; nothing of it stays."""


@dataclass
class PolicyStatus:
    name: str
    source: str  # "file:/etc/ocellus/policies/x.yaml", "kv", ...
    state: str  # applied | error | stale (an older revision still applied)
    revision: str = ""
    applied_revision: str = ""
    mode: str = "enforce"
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    changed: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Applied:
    compiled: CompiledPolicy
    hook_ids: list[int]
    source: str
    text: str | bytes


class PolicyEngine:
    def __init__(
        self,
        table: HookTable,
        registry: Registry,
        sync: SyncHooks,
        capabilities: Mapping[str, str],
        formats: FormatReader | None = None,
        connect: ConnectRules | None = None,
        signatures: SignatureCheck | None = None,
        scopes: ScopeManager | None = None,
    ) -> None:
        self._table = table
        # podSelector, containerSelector, ...: the cgroup sets (None: scoped policies refused)
        self.scopes = scopes
        # Required signatures: the check, and where refusals are reported.
        self._signatures = signatures
        # Override on connect and sendto: rules for the sensor's programs (connect_rules.py)
        self._connect = connect or ConnectRules(None)
        self._registry = registry
        self._sync = sync
        self._caps = capabilities
        self._formats = formats
        self._applied: dict[str, _Applied] = {}
        self._status: dict[str, PolicyStatus] = {}  # by name (or source, when unnamed)
        self._adopted: dict[int, HookInfo] = {}  # ids an earlier enforcer left, unclaimed
        self._modes: dict[str, Mode] = {}  # runtime overrides (`ocellus policy mode`)
        self._lock = asyncio.Lock()
        self.sensor_answered: bool | None = None
        # ocellus.io/binaries: reactive: the paths reactions added to In sets
        self.binaries = ReactedBinaries()

    # -- start-up -------------------------------------------------------------------
    async def adopt(self) -> int:
        """Take over what an earlier enforcer left in the maps (still enforcing);
        the hooks policies claim again stay in place, the rest go at finish_adoption()."""
        known = await self._registry.load()
        found = self._table.adopt_existing()  # the one read of hook_config
        for hook_id in found:
            info = known.get(hook_id)
            if info is None:  # nothing says what it is: it cannot be claimed
                self._table.detach(hook_id)
            else:
                self._adopted[hook_id] = info
        self._registry.add(self._adopted.items())
        policies = {i: info.policy for i, info in self._adopted.items()}
        slots = [cfg for hook_id in self._adopted for cfg in found[hook_id]]
        if self.scopes is not None:  # the reactions in their sets, before any is rewritten
            self.scopes.adopt(slots, policies)
        paths = {i: info.hook for i, info in self._adopted.items()}
        self.binaries.adopt(slots, policies, self._table.bin_match, paths)
        return len(self._adopted)

    async def finish_adoption(self) -> None:
        async with self._lock:
            left = list(self._adopted)
            for hook_id in left:
                self._table.detach(hook_id)
            self._adopted.clear()
            self._connect.retain(self._table.hook_ids())
            self.binaries.finish()
            if self.scopes is not None:
                stale = self.scopes.purge_unknown()
                if stale:
                    log.info("removed scope entries of an earlier enforcer", entries=stale)
            if left:
                log.info("removed hooks of policies no longer defined", hooks=len(left))
                self._registry.retire(left)
                await self._registry.publish()
                await self._sync_sensor()

    # -- changes --------------------------------------------------------------------
    def check(self, text: str | bytes, source: str, name: str | None = None) -> CompiledPolicy:
        """Compile only (raises PolicyError): what `ocellus policy apply` asks first."""
        if self._signatures is not None:
            try:
                self._signatures.verify(text)
            except SignatureError as e:
                raise PolicyError(_name_in(text, source), [Problem("", str(e))]) from None
        mode = self._modes.get(name) if name else None
        compiled = compile_policy(text, self._caps, self._formats, source=source, mode=mode)
        if name is None and compiled.name in self._modes:
            return self.check(text, source, compiled.name)
        return compiled

    async def set_mode(self, name: str, mode: Mode | None) -> PolicyStatus | None:
        """A runtime mode (None: the policy's own), applied in place when the
        policy runs: map values only, same hook ids."""
        if mode is None:
            self._modes.pop(name, None)
        else:
            self._modes[name] = mode
        current = self._applied.get(name)
        if current is None:
            return None
        return await self.apply(current.source, current.text, force=True)

    async def apply(
        self,
        source: str,
        text: str | bytes,
        expected_name: str | None = None,
        *,
        force: bool = False,
    ) -> PolicyStatus:
        """``expected_name``: what the source files it under (a KV key);
        ``force``: apply even when the text is the one applied (a new mode)."""
        async with self._lock:
            if self._signatures is not None:
                try:
                    self._signatures.verify(text)
                except SignatureError as e:
                    name = expected_name or _name_in(text, source)
                    await self._signatures.refused(name, source, str(e))
                    return self._refused(name, source, revision_of(text), f"refused: {e}")
            try:
                compiled = self.check(text, source)
            except PolicyError as e:
                name = e.policy if e.policy not in ("<unnamed>", source) else source
                return self._refused(expected_name or name, source, revision_of(text), str(e))
            if expected_name is not None and compiled.name != expected_name:
                why = f"stored under {expected_name!r} but named {compiled.name!r}"
                return self._refused(expected_name, source, compiled.revision, why)
            current = self._applied.get(compiled.name)
            if current is not None and current.source != source:
                why = f"policy {compiled.name!r} is already defined by {current.source}"
                return self._refused(source, source, compiled.revision, why, keep=False)
            if (
                current is not None
                and not force
                and current.compiled.revision == compiled.revision
                and current.compiled.mode == compiled.mode
            ):
                return self._status[compiled.name]
            carried = self.binaries.carried(compiled)
            compiled = widened(compiled, carried or ())
            try:
                compiled = await self._scoped(compiled)
            except (ApplyError, ScopeError) as e:
                return self._refused(compiled.name, source, compiled.revision, str(e))
            try:
                ids = await self._place(compiled, current)
            except (ApplyError, HookTableError, OSError) as e:
                if self.scopes is not None:
                    self.scopes.abort(compiled.name)
                return self._refused(compiled.name, source, compiled.revision, str(e))
            if self.scopes is not None:
                if compiled.scope is not None:
                    self.scopes.commit(compiled.name)
                else:
                    self.scopes.release(compiled.name)
            self.binaries.placed(compiled.name, carried)
            self._applied[compiled.name] = _Applied(compiled, ids, source, text)
            self._status.pop(source, None)  # an unnamed error of this source is over
            status = self._status[compiled.name] = PolicyStatus(
                compiled.name,
                source,
                "applied",
                compiled.revision,
                compiled.revision,
                mode=compiled.mode if compiled.enforces else "monitor_only",
                notes=list(compiled.notes),
                hooks=_hook_rows(compiled, ids),
            )
            log.info(
                "policy applied",
                policy=compiled.name,
                source=source,
                revision=compiled.revision,
                mode=compiled.mode,
                hooks=len(ids),
            )
            return status

    async def remove(self, name: str, source: str) -> bool:
        """Remove ``name`` if ``source`` defines it; True if something changed."""
        async with self._lock:
            if self._status.get(name) is not None and self._status[name].source != source:
                return False
            current = self._applied.pop(name, None)
            self._status.pop(name, None)
            if current is None:
                return False
            for hook_id in current.hook_ids:
                self._table.detach(hook_id)
            self._connect.drop(current.hook_ids)
            if self.scopes is not None:
                self.scopes.release(name)
            self.binaries.release(name)
            self._registry.retire(current.hook_ids)
            await self._publish_registry()
            await self._sync_sensor()
            log.info("policy removed", policy=name, source=source)
            return True

    async def add_binary(self, policy: str, binary: str) -> int | None:
        """Reaction: ``binary`` joins the matchBinaries In sets of ``policy``
        (ocellus.io/binaries: reactive), a values-only change of the applied
        revision. CLOCK_MONOTONIC ns when the maps have it (the kernel's ktime
        clock); None if they had it already (nothing written); ReactionRefused,
        and nothing changed, otherwise."""
        async with self._lock:
            current = self._applied.get(policy)
            reacted = self.binaries.admit(policy, binary)
            if reacted is None:
                return None
            if current is not None:
                compiled = widened(current.compiled, (binary,))
                try:
                    ids = await self._place(compiled, current)
                except (ApplyError, HookTableError, OSError) as e:
                    raise ReactionRefused("reaction_apply_failed", f"{policy}: {e}") from e
                current.compiled, current.hook_ids = compiled, ids
                self.binaries.placed(policy, reacted)
            return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    async def release_binary(self, policy: str, binary: str) -> bool:
        """Undo reactions: ``binary`` leaves the policy's In sets (unless the
        policy names it itself), a values-only change as when it joined. False
        if no reaction had added it; ApplyError (nothing changed) if the maps
        refuse the change."""
        async with self._lock:
            current = self._applied.get(policy)
            remaining = self.binaries.without(policy, binary)
            if current is None or remaining is None:
                return False
            own = self.check(current.text, current.source)
            compiled = narrowed(current.compiled, own, binary)
            try:
                ids = await self._place(compiled, current)
            except (HookTableError, OSError) as e:
                raise ApplyError(f"{policy}: {e}") from e
            current.compiled, current.hook_ids = compiled, ids
            self.binaries.placed(policy, remaining)
            log.info("reacted binary released", policy=policy, binary=binary)
            return True

    def forget_error(self, key: str) -> None:
        """A source whose unnamed, refused text is gone (a deleted file)."""
        status = self._status.get(key)
        if status is not None and status.state == "error" and key not in self._applied:
            del self._status[key]

    # -- reporting ------------------------------------------------------------------
    def statuses(self) -> list[dict[str, Any]]:
        rows = []
        for key in sorted(self._status):
            row = self._status[key].as_dict()
            applied = self._applied.get(key)
            totals = dict.fromkeys(_COUNTERS, 0)
            if applied is not None:
                for hook_id, hook_row in zip(applied.hook_ids, row["hooks"], strict=True):
                    stats = self._table.stats(hook_id)
                    hook_row.update(stats, prefiltered=self._table.prefiltered(hook_id))
                    for c in _COUNTERS:
                        totals[c] += stats.get(c, 0)
            row["counters"] = totals
            if applied is not None and applied.compiled.scope is not None and self.scopes:
                row["scope"] = self.scopes.describe(key)
            if applied is not None and (binaries := self.binaries.describe(key)) is not None:
                row["binaries"] = binaries
            rows.append(row)
        return rows

    def names(self, source: str) -> set[str]:
        return {n for n, s in self._status.items() if s.source == source}

    # -- internals ------------------------------------------------------------------
    async def _scoped(self, compiled: CompiledPolicy) -> CompiledPolicy:
        """A scoped policy's slots with its scope's new set (written first)."""
        if compiled.scope is None:
            return compiled
        if self.scopes is None:
            raise ApplyError("scoped policies need the container resolver (cgroup2 and runtime)")
        scope = await self.scopes.prepare(compiled.name, compiled.scope)
        hooks = tuple(
            dataclasses.replace(
                h, slots=tuple(dataclasses.replace(slot, scope=scope) for slot in h.slots)
            )
            for h in compiled.hooks
        )
        return dataclasses.replace(compiled, hooks=hooks)

    def _refused(
        self, name: str, source: str, revision: str, error: str, keep: bool = True
    ) -> PolicyStatus:
        current = self._applied.get(name) if keep else None
        log.warning("policy refused", policy=name, source=source, reason=error)
        if current is not None and current.source == source:
            # The previous revision keeps running; its row says the change failed.
            status = self._status[name]
            status.state, status.revision, status.error = "stale", revision, error
            status.changed = time.time()
            return status
        status = PolicyStatus(name, source, "error", revision, error=error)
        self._status[name] = status
        return status

    async def _place(self, compiled: CompiledPolicy, current: _Applied | None) -> list[int]:
        if current is not None and current.compiled.shape == compiled.shape:
            return await self._update_in_place(compiled, current.hook_ids, current.compiled)
        adopted = self._claim_adopted(compiled) if current is None else None
        if adopted is not None:
            return await self._update_in_place(compiled, adopted, None)
        ids = [self._table.reserve() for _ in compiled.hooks]
        self._registry.add((i, h.info) for i, h in zip(ids, compiled.hooks, strict=True))
        placed: list[int] = []
        try:
            await self._publish_registry()
            self._connect.put(ids, compiled.hooks)  # before the slots that they name
            for hook_id, hook in zip(ids, compiled.hooks, strict=True):
                self._table.attach(hook.planned, list(hook.slots), hook_id=hook_id)
                placed.append(hook_id)
            self._check_attached(compiled, await self._sync_sensor())
        except (ApplyError, HookTableError, OSError):
            self._table.release(ids)
            try:
                for hook_id in placed:
                    self._table.detach(hook_id)
            finally:
                self._connect.drop(ids)
                self._registry.retire(ids)
            await self._sync_sensor()
            raise
        if current is not None:
            for hook_id in current.hook_ids:
                self._table.detach(hook_id)
            self._connect.drop(current.hook_ids)
            self._registry.retire(current.hook_ids)
            await self._sync_sensor()
        await self._publish_registry(best_effort=True)
        return ids

    async def _update_in_place(
        self, compiled: CompiledPolicy, ids: list[int], previous: CompiledPolicy | None
    ) -> list[int]:
        self._registry.add((i, h.info) for i, h in zip(ids, compiled.hooks, strict=True))
        await self._publish_registry()
        done: list[int] = []
        try:
            self._connect.put(ids, compiled.hooks)
            for hook_id, hook in zip(ids, compiled.hooks, strict=True):
                self._table.update(hook_id, list(hook.slots))
                done.append(hook_id)
        except (HookTableError, OSError):
            if previous is not None:  # put back what was changed
                for hook_id, hook in zip(done, previous.hooks, strict=False):
                    self._table.update(hook_id, list(hook.slots))
                self._connect.put(ids, previous.hooks)
                self._registry.add((i, h.info) for i, h in zip(ids, previous.hooks, strict=True))
            await self._publish_registry(best_effort=True)
            raise
        return ids

    def _claim_adopted(self, compiled: CompiledPolicy) -> list[int] | None:
        """The ids an earlier enforcer used for exactly these hooks, if all are there."""
        ids = []
        for hook in compiled.hooks:
            hook_id = next(
                (
                    i
                    for i, info in self._adopted.items()
                    if info.policy == compiled.name
                    and info.hook == hook.info.hook
                    and i not in ids
                    and info.event == hook.info.event
                ),
                None,
            )
            if hook_id is None or not self._table.relayout(hook_id, hook.planned):
                return None
            ids.append(hook_id)
        for hook_id in ids:
            del self._adopted[hook_id]
        return ids

    def _check_attached(self, compiled: CompiledPolicy, state: dict[str, Any] | None) -> None:
        if state is None:
            return  # no sensor now: it attaches from the maps when it starts
        guard = state.get("connect_guard", "not reported")
        calls = {spec.call for h in compiled.hooks for spec in h.connect}
        if calls and guard != "attached":
            raise ApplyError(f"Override on {' and '.join(sorted(calls))}: the sensor's "
                             f"network deny programs are {guard}")  # fmt: skip
        # A sensor from before sendto rules would read them as connect rules.
        missing = calls - set(state.get("connect_guard_serves", ["connect"]))
        if missing:
            raise ApplyError(f"Override on {' and '.join(sorted(missing))}: this sensor does not "
                             "serve it (older than this enforcer): upgrade the sensor")  # fmt: skip
        failed = state.get("failed", {})
        for hook in compiled.hooks:
            why = failed.get(str(hook.planned.tracepoint.id))
            if why:
                tp = hook.planned.tracepoint
                where = f"{tp.subsystem}:{tp.event}"
                raise ApplyError(f"{hook.planned.path}: the sensor cannot attach {where}: {why}")

    async def _sync_sensor(self) -> dict[str, Any] | None:
        state = await self._sync()
        self.sensor_answered = state is not None
        return state

    async def _publish_registry(self, *, best_effort: bool = False) -> None:
        try:
            await self._registry.publish()
        except Exception as e:  # nats-py raises several unrelated types
            if best_effort:
                log.warning("hook registry not published", reason=str(e))
                return
            raise ApplyError(f"cannot publish the hook registry to NATS: {e}") from e


@dataclass
class SignatureCheck:
    """Policies must carry a signature by one of ``trusted`` (services/common/
    signing.py); ``refused(name, source, why)`` reports one that does not (an
    audit event)."""

    trusted: dict[str, Any]
    refused: Callable[[str, str, str], Awaitable[None]]

    def verify(self, text: str | bytes) -> str:
        return signing.verify(text.encode() if isinstance(text, str) else text, self.trusted)


def _name_in(text: str | bytes, source: str) -> str:
    """The policy's name for a refusal that comes before compiling, if it has one."""
    try:
        return load_policy(text, source=source).metadata.name
    except PolicyError:
        return source


def _hook_rows(compiled: CompiledPolicy, ids: list[int]) -> list[dict[str, Any]]:
    rows = []
    for hook_id, hook in zip(ids, compiled.hooks, strict=True):
        tp = hook.planned.tracepoint
        rows.append(
            {
                "id": hook_id,
                "hook": hook.planned.path,
                "tracepoint": f"{tp.subsystem}:{tp.event}",
                "function_name": hook.planned.function_name,
                "selectors": len(hook.slots),
            }
        )
    return rows
