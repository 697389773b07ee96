"""Reactive enforcement: rules over enriched events that widen a policy's scope,
so that a detection in user space becomes an in-kernel block for what follows.

A reactions file (``OCELLUS_ENFORCER_REACTIONS_FILE``)::

    apiVersion: ocellus.io/v1alpha1
    kind: Reactions
    metadata: {name: web-shells}
    spec:
      reactions:
      - name: shell-under-shell
        match:                      # a process_exec of this node; all given ANDed
          binary: {operator: Postfix, values: [/busybox]}
          parentBinary: {operator: In, values: [/bin/sh]}
        addContainerTo: block-compromised   # a policy with ocellus.io/scope: reactive
        addBinaryTo: kill-reacted           # a policy with ocellus.io/binaries: reactive

A reaction names addContainerTo, addBinaryTo or both. When a matching exec
comes from a container, addContainerTo adds the container (every cgroup it
has, and the ones it makes later) to the named policy's scope: that policy's
selectors, Sigkill included, apply inside it from then on. addBinaryTo adds
the exec's binary (``process.binary``, the path it was exec'd by) to the
named policy's matchBinaries In sets, on the host too (reacted_binaries.py):
from then on a process of that binary is matched like one the policy names,
in the policy's scope if it has one. Events are
read on ``ocellus.events.<node>.process_exec`` as the enricher publishes them
(the subject OCELLUS_EVENTS stores), with a core subscription: no consumer
state, no replay of old detections after a restart.
"""

from __future__ import annotations

import base64
import collections
import statistics
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas import codec
from services.common.errors import OcellusError
from services.common.logging import get_logger
from services.enforcer.reacted_binaries import ReactionRefused
from services.enforcer.scopes import ScopeManager

log = get_logger("ocellus.enforcer.reactions")

MAX_REACTIONS = 64
MAX_VALUES = 64
MAX_VALUE_BYTES = 4096
_LATENCIES_KEPT = 256


class ReactionsError(OcellusError):
    """A reactions file that cannot be used; the message names the YAML path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StringMatch(_Model):
    operator: Literal["In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"]
    values: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_VALUE_BYTES)]],
        Field(min_length=1, max_length=MAX_VALUES),
    ]

    def matches(self, value: str | None) -> bool:
        if value is None:
            return self.operator.startswith("Not")
        op = self.operator.removeprefix("Not")
        if op == "In":
            hit = value in self.values
        elif op == "Prefix":
            hit = any(value.startswith(v) for v in self.values)
        else:
            hit = any(value.endswith(v) for v in self.values)
        return hit != self.operator.startswith("Not")


class Match(_Model):
    binary: StringMatch | None = None
    parent_binary: StringMatch | None = Field(None, alias="parentBinary")

    def matches(self, process: dict[str, Any], parent: dict[str, Any]) -> bool:
        if self.binary is not None and not self.binary.matches(_str(process.get("binary"))):
            return False
        return self.parent_binary is None or self.parent_binary.matches(_str(parent.get("binary")))


# A policy's, a reaction's or the file's name: at most a Kubernetes object name's length.
_Name = Annotated[str, Field(min_length=1, max_length=253)]


class Reaction(_Model):
    name: _Name
    match: Match
    add_container_to: _Name | None = Field(None, alias="addContainerTo")
    add_binary_to: _Name | None = Field(None, alias="addBinaryTo")

    @model_validator(mode="after")
    def _adds_something(self) -> Self:
        if self.add_container_to is None and self.add_binary_to is None:
            raise ValueError("give addContainerTo, addBinaryTo or both")
        return self


class _Metadata(_Model):
    name: _Name


class _Spec(_Model):
    reactions: Annotated[list[Reaction], Field(min_length=1, max_length=MAX_REACTIONS)]


class ReactionsFile(_Model):
    api_version: Literal["ocellus.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Reactions"]
    metadata: _Metadata
    spec: _Spec


def load_reactions(path: Path) -> ReactionsFile:
    """The rules in ``path``; ReactionsError naming the file and YAML path."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ReactionsError(f"{path}: {e}") from e
    try:
        rules = ReactionsFile.model_validate(document)
    except ValidationError as e:
        problems = "; ".join(f"{_yaml_path(err['loc'])}: {err['msg']}" for err in e.errors())
        raise ReactionsError(f"{path}: {problems}") from None
    seen: set[str] = set()
    for i, reaction in enumerate(rules.spec.reactions):
        if reaction.name in seen:
            raise ReactionsError(
                f"{path}: spec.reactions[{i}].name: {reaction.name!r} is given twice"
            )
        seen.add(reaction.name)
    return rules


def _yaml_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def exec_ktime(exec_id: object) -> int | None:
    """The kernel time (CLOCK_MONOTONIC ns) in an exec_id, base64 of node:ktime:pid."""
    if not isinstance(exec_id, str):
        return None
    try:
        _, ktime, _ = base64.b64decode(exec_id).decode().rsplit(":", 2)
        return int(ktime)
    except (ValueError, UnicodeDecodeError):
        return None


def container_id(process: dict[str, Any]) -> str | None:
    """The full container id of an event's process (pod.container.id is runtime://id)."""
    pod = process.get("pod")
    container = pod.get("container") if isinstance(pod, dict) else None
    cid = container.get("id") if isinstance(container, dict) else None
    if not isinstance(cid, str) or not cid:
        return None
    return cid.rpartition("://")[2] or None


class BinaryTarget(Protocol):
    """What addBinaryTo asks (the policy engine): CLOCK_MONOTONIC ns when the
    binary was added, None if the policy had it already."""

    async def add_binary(self, policy: str, binary: str) -> int | None: ...


class Reactor:
    """Applies the rules to each process_exec event of this node."""

    def __init__(
        self,
        rules: ReactionsFile | None,
        scopes: ScopeManager | None,
        binaries: BinaryTarget | None = None,
    ) -> None:
        self.rules = rules
        self.scopes = scopes
        self.binaries = binaries
        self.counters: collections.Counter[str] = collections.Counter()
        # ms from the triggering exec (kernel time) to the block in the maps
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=_LATENCIES_KEPT)
        self.binary_latencies_ms: collections.deque[float] = collections.deque(
            maxlen=_LATENCIES_KEPT
        )

    async def handle(self, data: bytes) -> None:
        try:
            event = codec.unpack(data)
        except codec.DecodeError:
            self.counters["malformed_events"] += 1
            return
        body = event.get("process_exec") if isinstance(event, dict) else None
        if not isinstance(body, dict) or self.rules is None:
            return
        process, parent = body.get("process"), body.get("parent") or {}
        if not isinstance(process, dict) or not isinstance(parent, dict):
            return
        self.counters["events"] += 1
        for reaction in self.rules.spec.reactions:
            if reaction.match.matches(process, parent):
                await self._react(reaction, process)

    async def _react(self, reaction: Reaction, process: dict[str, Any]) -> None:
        self.counters["matched"] += 1
        if reaction.add_container_to is not None:
            await self._add_container(reaction, reaction.add_container_to, process)
        if reaction.add_binary_to is not None:
            await self._add_binary(reaction, reaction.add_binary_to, process)

    async def _add_container(
        self, reaction: Reaction, policy: str, process: dict[str, Any]
    ) -> None:
        cid = container_id(process)
        if cid is None:
            self.counters["matched_on_host"] += 1  # no container to add
            return
        written = await self.scopes.add_container(policy, cid) if self.scopes else None
        if written is None:
            self.counters["target_not_reactive"] += 1
            log.warning(
                "reaction has no reactive policy to widen", reaction=reaction.name, policy=policy
            )
            return
        self.counters["applied"] += 1
        latency = self._latency(self.latencies_ms, written, process)
        log.info(
            "reaction applied",
            reaction=reaction.name,
            policy=policy,
            container=cid[:12],
            binary=process.get("binary"),
            exec_to_map_ms=latency,
        )

    async def _add_binary(self, reaction: Reaction, policy: str, process: dict[str, Any]) -> None:
        binary = _str(process.get("binary"))
        if binary is None or self.binaries is None:
            self.counters["reaction_without_binary"] += 1  # nothing to add, or no engine
            return
        try:
            written = await self.binaries.add_binary(policy, binary)
        except ReactionRefused as e:
            self.counters[e.counter] += 1
            log.warning(
                "reaction could not add the binary",
                reaction=reaction.name,
                policy=policy,
                binary=binary,
                reason=str(e),
            )
            return
        if written is None:  # an earlier reaction added it: nothing written, nothing to time
            self.counters["binary_already_reacted"] += 1
            return
        self.counters["binaries_applied"] += 1
        latency = self._latency(self.binary_latencies_ms, written, process)
        log.info(
            "reaction applied",
            reaction=reaction.name,
            policy=policy,
            added_binary=binary,
            exec_to_map_ms=latency,
        )

    @staticmethod
    def _latency(
        kept: collections.deque[float], written: int, process: dict[str, Any]
    ) -> float | None:
        ktime = exec_ktime(process.get("exec_id"))
        latency = round((written - ktime) / 1e6, 3) if ktime else None
        if latency is not None:
            kept.append(latency)
        return latency

    def status(self) -> dict[str, Any]:
        lat, bin_lat = list(self.latencies_ms), list(self.binary_latencies_ms)
        return {
            "rules": len(self.rules.spec.reactions) if self.rules else 0,
            **self.counters,
            "exec_to_map_ms_median": round(statistics.median(lat), 3) if lat else None,
            "exec_to_map_ms_max": max(lat) if lat else None,
            "binary_exec_to_map_ms_median": (
                round(statistics.median(bin_lat), 3) if bin_lat else None
            ),
            "binary_exec_to_map_ms_max": max(bin_lat) if bin_lat else None,
        }


class ReactionsFileWatch:
    """Reloads the file when it changes; a bad new version keeps the old rules."""

    def __init__(self, reactor: Reactor, path: Path) -> None:
        self.reactor, self.path = reactor, path
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def poll(self) -> None:
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self.reactor.rules = load_reactions(self.path)
        except ReactionsError as e:
            log.error("reactions file refused; the previous rules stay", reason=str(e))
            return
        log.info("reactions loaded", path=str(self.path), at=time.time())
