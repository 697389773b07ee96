"""What hook ids mean: the enforcer's hook registries (NATS KV ``ocellus_hooks``, a key
per node), watched, and turned into ready-to-use hook plans.

The bucket belongs to the enforcer, which writes a registry before the kernel maps that
produce its ids: the enricher only reads. It waits for the bucket rather than creating
it, so the writer alone chooses its configuration (history, replicas, storage) and the
enricher's NATS user needs no right to create streams; until the bucket exists no hook
can have fired. A record can still outrun the watch (different subscriptions deliver in
no common order), so an id not known yet costs one direct KV get, bounded by a timeout
and remembered for ``retry_after`` seconds so a flood of records for an unknown id does
not become a flood of requests. An id that leaves the registry (its policy was deleted)
still resolves for ``grace`` seconds: records for it may be in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from schemas import codec, subjects
from schemas.hooks import HookInfo, HookRegistry
from services.common.lifecycle import RateLimitedLog
from services.common.logging import get_logger
from services.enricher.hookargs import Convert, converter

log = get_logger("ocellus.enricher.hooks")

# Raw action byte (schemas.raw.RawHook.action) -> Tetragon's KprobeAction name.
ACTIONS = {
    1: "KPROBE_ACTION_POST",
    2: "KPROBE_ACTION_NOPOST",
    3: "KPROBE_ACTION_SIGKILL",
    4: "KPROBE_ACTION_SIGNAL",
    5: "KPROBE_ACTION_OVERRIDE",  # a connect or datagram denied (connect.bpf.c)
}


@dataclass(frozen=True, slots=True)
class HookPlan:
    """One hook, ready for its records: the kind, the fields every event of it carries,
    and a converter per declared arg."""

    kind: str  # "process_kprobe" | "process_tracepoint"
    static: dict[str, Any]  # function_name or subsys/event, policy_name, message, tags
    args: list[tuple[Convert, str | None]]  # (converter, label) in record order
    monitored: dict[int, str]  # monitor mode: selector -> what enforce mode would do
    returns: tuple[Convert, str | None] | None = None  # return: true: the `ret` converter
    counter: str = field(init=False)  # the pipeline's count of events of this kind

    def __post_init__(self) -> None:
        object.__setattr__(self, "counter", f"{self.kind}_events")

    @classmethod
    def of(cls, info: HookInfo) -> HookPlan:
        static: dict[str, Any] = {}
        if info.kind == subjects.PROCESS_KPROBE:
            static["function_name"] = info.function_name or f"{info.subsys}:{info.event}"
        else:
            static["subsys"], static["event"] = info.subsys, info.event
        static["policy_name"] = info.policy
        if info.message:
            static["message"] = info.message
        if info.tags:
            static["tags"] = list(info.tags)
        args = [(converter(a.type), a.label) for a in info.args]
        ret = info.return_arg
        returns = (converter(ret.type), ret.label) if ret is not None else None
        return cls(info.kind, static, args, dict(info.monitored), returns)

    def monitor_note(self, selector: int) -> str | None:
        """The message of an event a monitor-mode policy let through."""
        would = self.monitored.get(selector)
        if would is None:
            return None
        note = f"[monitor mode: would {would}]"
        message = self.static.get("message")
        return f"{message} {note}" if message else note


Key = tuple[str, int]  # (node token, hook id)


class HookRegistryView:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        get_timeout: float = 0.25,
        retry_after: float = 1.0,
        grace: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._js = js
        self._get_timeout = get_timeout
        self._retry_after = retry_after
        self._grace = grace
        self._clock = clock
        self._kv: KeyValue | None = None
        self._revision: dict[str, int] = {}  # node token -> revision applied
        self._ids: dict[str, set[int]] = {}  # node token -> its current ids
        self._plans: dict[Key, HookPlan] = {}  # current and retired, by key
        self._retired: dict[Key, float] = {}  # key -> when it stops resolving
        self._missed: dict[Key, float] = {}  # key -> when a direct get may be tried again
        self._bind_after = 0.0
        self.counters: Counter[str] = Counter()
        self._warn = RateLimitedLog(5.0)
        self.ready = asyncio.Event()  # the first complete view of the bucket is applied

    def __len__(self) -> int:
        return len(self._plans)

    # -- lookups (the pipeline's side) -------------------------------------
    def plan(self, token: str, hook_id: int) -> HookPlan | None:
        key = (token, hook_id)
        plan = self._plans.get(key)
        if plan is not None and key in self._retired and self._retired[key] <= self._clock():
            self._drop(key)
            return None
        return plan

    async def resolve(self, token: str, hook_id: int) -> HookPlan | None:
        """The plan of a hook id; an unknown one costs one bounded direct get, then is
        given up on (for ``retry_after`` seconds)."""
        plan = self.plan(token, hook_id)
        if plan is not None:
            return plan
        key = (token, hook_id)
        now = self._clock()
        if self._missed.get(key, 0.0) > now:
            return None
        self._missed[key] = now + self._retry_after
        if len(self._missed) > 4096:  # bounded: ids of garbage records must not pile up
            self._missed = {k: t for k, t in self._missed.items() if t > now}
        self.counters["hook_registry_gets"] += 1
        try:
            await asyncio.wait_for(self._fetch(token), self._get_timeout)
        except TimeoutError:
            self._note("hook registry get timed out", token=token)
        except (nats.errors.Error, OSError) as e:
            self._note("hook registry get failed", token=token, reason=str(e))
        return self.plan(token, hook_id)

    async def _fetch(self, token: str) -> None:
        kv = await self._bucket()
        if kv is None:
            return
        try:
            entry = await kv.get(token)
        except nats.js.errors.KeyNotFoundError:
            return
        if entry.revision is not None and entry.value is not None:
            self.apply(token, entry.revision, entry.value)

    async def _bucket(self) -> KeyValue | None:
        """The bucket, if it exists (tried at most once a second from lookups)."""
        if self._kv is None and self._clock() >= self._bind_after:
            self._bind_after = self._clock() + 1.0
            with contextlib.suppress(nats.js.errors.BucketNotFoundError):
                self._kv = await self._js.key_value(subjects.HOOK_BUCKET)
        return self._kv

    # -- updates -------------------------------------------------------------
    def apply(self, token: str, revision: int, value: bytes | None) -> None:
        """A registry revision (None: the key was deleted); older revisions are ignored."""
        if revision <= self._revision.get(token, 0):
            return
        plans: dict[int, HookPlan] = {}
        if value is not None:
            try:
                registry = HookRegistry.unpack(value)
            except (codec.DecodeError, ValidationError) as e:
                self.counters["hook_registry_invalid"] += 1
                log.error("ignoring an invalid hook registry", node=token, reason=str(e)[:300])
                return  # keep what was known: better than forgetting every hook
            plans = {i: HookPlan.of(info) for i, info in registry.hooks.items()}
        self._revision[token] = revision
        gone = self._ids.get(token, set()) - plans.keys()
        deadline = self._clock() + self._grace
        for hook_id in gone:
            self._retired[(token, hook_id)] = deadline
        for hook_id, plan in plans.items():
            key = (token, hook_id)
            self._plans[key] = plan
            self._retired.pop(key, None)
            self._missed.pop(key, None)
        self._ids[token] = set(plans)
        self.counters["hook_registry_updates"] += 1
        self._expire()
        log.info("hook registry", node=token, revision=revision, hooks=len(plans))

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, t in self._retired.items() if t <= now]:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        self._retired.pop(key, None)
        self._plans.pop(key, None)

    def _note(self, message: str, **fields: Any) -> None:
        self.counters["hook_registry_errors"] += 1
        if self._warn.ready():
            log.warning(message, **fields)

    # -- the watch -----------------------------------------------------------------
    async def run(self, wait: float = 0.5, wait_max: float = 5.0) -> None:
        """Wait for the bucket, then follow it; a broken watch is restarted. Until cancelled."""
        delay = wait
        while True:
            try:
                self._kv = self._kv or await self._js.key_value(subjects.HOOK_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                if delay == wait:
                    log.info("waiting for the hook registry bucket", bucket=subjects.HOOK_BUCKET)
                await asyncio.sleep(delay)
                delay = min(delay * 2, wait_max)
                continue
            except (nats.errors.Error, OSError) as e:
                self._note("hook registry bucket unavailable", reason=str(e))
                await asyncio.sleep(wait_max)
                continue
            delay = wait
            try:
                await self._follow(self._kv)
            except (nats.errors.Error, OSError) as e:
                self._note("hook registry watch broke; restarting", reason=str(e))
                await asyncio.sleep(wait)

    async def _follow(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # the initial values are all delivered
                    self.ready.set()
                    continue
                if entry.revision is None:
                    continue
                deleted = entry.operation in (KV_DEL, KV_PURGE)
                self.apply(entry.key, entry.revision, None if deleted else entry.value)
                self.ready.set()
        finally:
            with contextlib.suppress(Exception):  # best effort: the connection may be gone
                await watcher.stop()
