"""The node's hook registry in the KV bucket ocellus_hooks (schemas/hooks.py):
published before a hook is written into the maps, so the enricher knows an
id before the kernel uses it; a removed hook stays listed (retired) for a
while, for its records still in flight."""

from __future__ import annotations

import time
from collections.abc import Iterable

import nats.js.errors
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.hooks import HookInfo, HookRegistry


class Registry:
    def __init__(self, kv: KeyValue, node: str, retired_ttl: float) -> None:
        self._kv = kv
        self._node = node
        self._key = subjects.node_token(node)
        self._ttl = retired_ttl
        self.hooks: dict[int, HookInfo] = {}
        self._retired: dict[int, tuple[HookInfo, float]] = {}

    async def load(self) -> dict[int, HookInfo]:
        """What an earlier enforcer of this node published (empty if nothing)."""
        try:
            entry = await self._kv.get(self._key)
        except nats.js.errors.KeyNotFoundError:
            return {}
        if not entry.value:
            return {}
        return dict(HookRegistry.unpack(entry.value).hooks)

    def add(self, hooks: Iterable[tuple[int, HookInfo]]) -> None:
        for hook_id, info in hooks:
            self.hooks[hook_id] = info
            self._retired.pop(hook_id, None)

    def retire(self, hook_ids: Iterable[int]) -> None:
        now = time.monotonic()
        for hook_id in hook_ids:
            info = self.hooks.pop(hook_id, None)
            if info is not None:
                self._retired[hook_id] = (info, now)

    async def publish(self) -> None:
        """Put the registry (current + recently retired hooks); raises on a NATS error."""
        cutoff = time.monotonic() - self._ttl
        self._retired = {i: (info, t) for i, (info, t) in self._retired.items() if t > cutoff}
        hooks = {i: info for i, (info, _) in self._retired.items()} | self.hooks
        await self._kv.put(self._key, HookRegistry(node=self._node, hooks=hooks).pack())
