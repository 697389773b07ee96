"""Raw batches in, Tetragon-shaped events out: validation at the trust
boundary, the process cache, container context, out-of-order holding, and
hook records turned into process_kprobe / process_tracepoint events by the
hook registry."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from schemas import codec, subjects
from schemas.raw import (
    RAW_HOOKS,
    RECORD_TYPES,
    RawBatch,
    RawExec,
    RawExit,
    RawHook,
    RawHookEnvelope,
    RecordFlag,
)
from services.common.containers import ContainerResolver
from services.common.lifecycle import RateLimitedLog
from services.common.logging import get_logger
from services.enricher.cache import ProcessCache
from services.enricher.context import ContainerContext, context_of
from services.enricher.holding import Holding
from services.enricher.hookargs import convert_args
from services.enricher.hooks import ACTIONS, HookPlan, HookRegistryView
from services.enricher.procfs import read_cwd, read_nspid

log = get_logger("ocellus.enricher")

_ARGS_TRUNCATED = int(RecordFlag.ARGS_TRUNCATED)  # an IntFlag's & costs a call or two

Publish = Callable[[str, dict[str, Any]], Awaitable[None]]


class Pipeline:
    def __init__(
        self,
        cache: ProcessCache,
        resolver: ContainerResolver,
        holding: Holding,
        publish: Publish,
        hooks: HookRegistryView | None = None,
    ) -> None:
        self.cache = cache
        self.resolver = resolver
        self.holding = holding
        self.hooks = hooks
        self._publish = publish
        self._contexts: dict[tuple[Any, ...], ContainerContext] = {}
        self.counters: Counter[str] = Counter()
        self._warn = RateLimitedLog(5.0)

    # -- input --------------------------------------------------------------
    async def handle(self, subject: str, data: bytes) -> None:
        """One NATS message of raw records; nothing in it can stop the next one."""
        try:
            body = codec.unpack(data)
            hooks = _hook_envelope(body)
            batch = hooks if hooks is not None else RawBatch.model_validate(body)
        except (codec.DecodeError, ValidationError) as e:
            self._malformed("malformed_messages", subject, e)
            return
        try:
            token = subjects.node_token(batch.node)
        except ValueError as e:
            self._malformed("malformed_messages", subject, e)
            return
        self.counters[f"received_{batch.type}"] += len(batch.records)  # events in, per type
        if hooks is not None:
            await self._hooks(subject, hooks.records, hooks.boot_ns, token)
            return
        for raw in batch.records:
            await self._record(batch.type, raw, subject, batch.boot_ns, token)

    async def _record(self, kind: str, raw: Any, subject: str, boot_ns: int, token: str) -> None:
        """One record validated on its own; an invalid one is counted, not fatal."""
        try:
            rec = RECORD_TYPES[kind].model_validate(raw)
        except ValidationError as e:
            self._malformed("invalid_records", subject, e)
            return
        self.counters["records"] += 1
        if isinstance(rec, RawHook):
            await self._hook(rec, boot_ns, token)
        else:
            await self._dispatch(kind, rec, boot_ns)

    async def _hooks(
        self, subject: str, records: list[dict[str, Any]], boot_ns: int, token: str
    ) -> None:
        """Hook records, validated a chunk per call; a chunk with an invalid record goes
        record by record, as any other batch does, so its good records still count."""
        for start in range(0, len(records), _HOOK_CHUNK):
            chunk = records[start : start + _HOOK_CHUNK]
            try:
                valid = RAW_HOOKS.validate_python(chunk)
            except ValidationError:
                for raw in chunk:
                    await self._record(subjects.PROCESS_HOOK, raw, subject, boot_ns, token)
                continue
            self.counters["records"] += len(valid)
            for rec in valid:
                await self._hook(rec, boot_ns, token)

    def _malformed(self, counter: str, subject: str, e: Exception) -> None:
        self.counters[counter] += 1
        if self._warn.ready():
            reason = str(e).splitlines()
            log.warning(
                "dropping malformed input",
                kind=counter,
                subject=subject,
                reason=" ".join(reason[:3])[:300],
                total=self.counters[counter],
            )

    async def _dispatch(self, kind: str, rec: Any, boot_ns: int) -> None:
        if kind == subjects.PROCESS_EXEC:
            await self._exec(rec, boot_ns)
        elif kind == subjects.PROCESS_EXIT:
            await self._exit(rec, boot_ns)
        elif kind == subjects.PROCESS_CLONE:
            self.cache.clone(rec, boot_ns)
            await self._release_children_of(rec.pid)
        elif kind == subjects.CGROUP_MKDIR:
            self.resolver.cgroup_created(rec.id, rec.path)
        else:
            self.resolver.cgroup_removed(rec.id, rec.path)

    # -- process events -------------------------------------------------------
    async def _exec(self, rec: RawExec, boot_ns: int) -> None:
        cwd = read_cwd(rec.pid)  # now, while the process may still be there
        container = await self.container(rec.cgroup_id)
        nspid = read_nspid(rec.pid) if container is not None else None
        # Nothing known of the parent (not even through this process's clone):
        # its records may still be on their way.
        if (
            self.cache.parent_of(rec.pid, rec.ppid) is None
            and rec.ppid
            and self.holding.hold_seconds > 0
        ):
            self.holding.hold_exec(rec, boot_ns, cwd, container, nspid)
            self.counters["held_execs"] += 1
            return
        await self._emit_exec(rec, boot_ns, cwd, container, nspid)

    async def _emit_exec(
        self,
        rec: RawExec,
        boot_ns: int,
        cwd: str | None,
        container: ContainerContext | None,
        nspid: int | None,
    ) -> None:
        event = self.cache.exec(rec, boot_ns, cwd, container, nspid)
        await self._publish(subjects.PROCESS_EXEC, event)
        for hook, hook_boot_ns, plan in self.holding.hooks_of(rec.pid):
            await self._emit_hook(hook, hook_boot_ns, plan)
        await self._release_children_of(rec.pid)
        held_exit = self.holding.exit_of(rec.pid)
        if held_exit is not None:
            await self._exit(held_exit.rec, held_exit.boot_ns)

    async def _release_children_of(self, pid: int) -> None:
        for held in self.holding.execs_waiting_for(pid):
            await self._emit_exec(held.rec, held.boot_ns, held.cwd, held.container, held.nspid)

    async def _exit(self, rec: RawExit, boot_ns: int) -> None:
        event = self.cache.exit(rec, boot_ns)
        if event is None:
            if self.holding.hold_seconds > 0:
                self.holding.hold_exit(rec, boot_ns)
                self.counters["held_exits"] += 1
                return
            event = self.cache.exit_unknown(rec, boot_ns)
        await self._publish(subjects.PROCESS_EXIT, event)

    async def expire_held(self, *, everything: bool = False) -> None:
        """Emit what waited too long (or everything, at shutdown), with what is known."""
        execs, exits = self.holding.expired(everything=everything)
        for held in execs:
            self.counters["orphan_execs"] += 1
            await self._emit_exec(held.rec, held.boot_ns, held.cwd, held.container, held.nspid)
        for held_exit in exits:
            event = self.cache.exit(held_exit.rec, held_exit.boot_ns)
            if event is None:
                event = self.cache.exit_unknown(held_exit.rec, held_exit.boot_ns)
            await self._publish(subjects.PROCESS_EXIT, event)

    # -- hook events -------------------------------------------------------------
    async def _hook(self, rec: RawHook, boot_ns: int, token: str) -> None:
        hooks = self.hooks
        plan = None
        if hooks is not None:  # a known id without a call that waits, else the lookup
            plan = hooks.plan(token, rec.hook_id) or await hooks.resolve(token, rec.hook_id)
        if plan is None:
            self.counters["hook_unknown"] += 1
            if self._warn.ready():
                log.warning(
                    "dropping hook records of an unknown hook id",
                    node=token,
                    hook_id=rec.hook_id,
                    total=self.counters["hook_unknown"],
                )
            return
        if self.holding.exec_held(rec.pid):
            # Its exec waits for its parent; so does the record, to be told apart from
            # the image that exec replaced once the exec is in the cache.
            self.holding.hold_hook(rec, boot_ns, plan)
            self.counters["held_hooks"] += 1
            return
        await self._emit_hook(rec, boot_ns, plan)

    async def _emit_hook(self, rec: RawHook, boot_ns: int, plan: HookPlan) -> None:
        counters = self.counters
        entry = self.cache.image_at(rec.pid, rec.ktime)
        # A known process carries its container from its exec; an unknown one gets it here.
        container = await self.container(rec.cgroup_id) if entry is None else None
        body = self.cache.hook_body(rec, entry, container)
        args, unread, unfit = convert_args(rec.args, plan.args)
        if unread:
            counters["hook_args_unread"] += unread
        if unfit:
            counters["hook_args_unfit"] += unfit
        if rec.flags & _ARGS_TRUNCATED:
            counters["hook_args_truncated"] += 1
        body.update(plan.static)
        if args:
            body["args"] = args
        if plan.returns is not None and rec.ret is not None:
            [ret], _, unfit = convert_args([rec.ret], [plan.returns])
            body["return"] = ret
            counters["hook_args_unfit"] += unfit
        body["action"] = ACTIONS[rec.action]
        if plan.monitored and (note := plan.monitor_note(rec.selector)) is not None:
            body["message"] = note  # the action is what happened: Post
            counters["hook_monitored"] += 1
        counters[plan.counter] += 1
        await self._publish(plan.kind, self.cache.event(plan.kind, body, boot_ns + rec.ktime))

    # -- containers -----------------------------------------------------------
    async def container(self, cgroup_id: int) -> ContainerContext | None:
        try:
            info = await self.resolver.container_of(cgroup_id)
        except Exception as e:  # context is best effort: the event flows without it
            self.counters["container_errors"] += 1
            if self._warn.ready():
                log.warning("container lookup failed", cgroup_id=cgroup_id, reason=str(e))
            return None
        if info is None:
            return None
        # One context per container state: a container first seen unresolved
        # gets its details once the runtime knows it.
        key = (info.id, info.resolved, info.name, info.started_ns)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = context_of(info)
            if len(self._contexts) > 4096:  # containers come and go: keep the newest
                self._contexts.pop(next(iter(self._contexts)))
        return ctx


# Records validated per pydantic-core call: a call per record costs ~0.5 µs more per
# record; a whole batch in one call keeps thousands of models alive at once, and the
# garbage collector's passes over them cost more than the call saves.
_HOOK_CHUNK = 256
_HOOK_FIELDS = frozenset(RawHook.model_fields)


def _hook_envelope(body: dict[str, Any]) -> RawHookEnvelope | None:
    """A process_hook batch RawBatch accepts as it is: its fields valid, every record a
    dict whose keys are RawHook's (RawBatch's dict[str, Any] would not change one).
    None for anything else, left to RawBatch."""
    if body.get("type") != subjects.PROCESS_HOOK:
        return None
    try:
        envelope = RawHookEnvelope.model_validate(body)
    except ValidationError:
        return None
    for raw in envelope.records:
        if type(raw) is not dict or not _HOOK_FIELDS.issuperset(raw):
            return None
    return envelope


async def run_expiry(pipeline: Pipeline, interval: float = 0.1) -> None:
    while True:
        await asyncio.sleep(interval)
        await pipeline.expire_held()
