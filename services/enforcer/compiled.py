"""A policy's text → everything needed to apply it, or a PolicyError
naming every part that cannot be honoured here. Nothing is written: the
engine applies a CompiledPolicy as a whole or not at all."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.hooks import HookArgInfo, HookInfo
from schemas.policy import PolicyError, Problem, TracingPolicyNamespaced, load_policy
from schemas.policy.hooks import AnyHook
from services.enforcer.compile import compile_selectors
from services.enforcer.plan import FormatReader, PlannedHook, plan_hooks
from services.sensor.hook_records import Action, SlotConfig

# Tetragon spec keys whose meaning Ocellus does not implement yet: refused,
# because applying the rest would do something other than what was asked.
_SPEC_REFUSED = (
    ("pod_selector", "podSelector", "scoping to pods is not supported yet"),
    ("container_selector", "containerSelector", "scoping to containers is not supported yet"),
    ("enforcers", "enforcers", "NotifyEnforcer enforcers are not supported yet"),
)
_ARG_REFUSED = (
    ("resolve", "resolve", "resolving struct fields needs BTF-based kprobes"),
    ("btf_type", "btfType", "resolving struct fields needs BTF-based kprobes"),
    ("return_copy", "returnCopy", "reading buffers at return is not supported yet"),
    ("max_data", "maxData", "large buffers are not supported yet"),
    ("size_arg_index", "sizeArgIndex", "sized buffers are not supported yet"),
)
_SIGNAL_ACTIONS = {Action.SIGKILL, Action.SIGNAL}


@dataclass(frozen=True, slots=True)
class CompiledHook:
    planned: PlannedHook
    slots: tuple[SlotConfig, ...]
    info: HookInfo

    @property
    def shape(self) -> tuple[object, ...]:
        """What must stay the same for a change to be map values only."""
        p = self.planned
        return (p.tracepoint.id, tuple((a.field.offset, a.read_size, a.read) for a in p.args))


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    revision: str  # of the text
    hooks: tuple[CompiledHook, ...]
    notes: tuple[str, ...]  # what the user should know about its semantics here

    @property
    def shape(self) -> tuple[object, ...]:
        return tuple(h.shape for h in self.hooks)


def revision_of(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:12]


def compile_policy(
    text: str | bytes,
    capabilities: Mapping[str, str],
    formats: FormatReader | None = None,
    *,
    source: str | None = None,
) -> CompiledPolicy:
    policy = load_policy(text, source=source)
    name = policy.metadata.name
    spec = policy.spec
    problems: list[Problem] = []
    if isinstance(policy, TracingPolicyNamespaced):
        problems.append(
            Problem("kind", "TracingPolicyNamespaced needs pod scoping, not supported yet")
        )
    for attr, key, why in _SPEC_REFUSED:
        if getattr(spec, attr):
            problems.append(Problem(f"spec.{key}", why))
    for path, hook in spec.hooks():
        for i, arg in enumerate(getattr(hook, "args", []) or []):
            for attr, key, why in _ARG_REFUSED:
                if getattr(arg, attr):
                    problems.append(Problem(f"{path}.args[{i}].{key}", why))
    if not spec.hooks():
        problems.append(Problem("spec", "the policy hooks nothing"))
    if problems:
        raise PolicyError(name, problems)

    by_path = dict(spec.hooks())
    compiled: list[CompiledHook] = []
    for planned in plan_hooks(name, spec, capabilities, formats):  # raises for every bad hook
        hook = by_path[planned.path]
        slots = compile_selectors(name, planned, hook)
        compiled.append(CompiledHook(planned, tuple(slots), _info(name, planned, hook)))
    notes = []
    if any(s.action in _SIGNAL_ACTIONS for h in compiled for s in h.slots):
        notes.append(
            "Sigkill/Signal act at syscall entry: the process dies before the call returns "
            "to it, but the call itself completes (an O_TRUNC truncates, an unlink unlinks)"
        )
    return CompiledPolicy(name, revision_of(text), tuple(compiled), tuple(notes))


def _info(policy: str, planned: PlannedHook, hook: AnyHook) -> HookInfo:
    tp = planned.tracepoint
    return HookInfo(
        policy=policy,
        hook=planned.path,
        kind=planned.event_kind,  # type: ignore[arg-type]
        subsys=tp.subsystem,
        event=tp.event,
        function_name=planned.function_name,
        args=[
            HookArgInfo(index=hook.args[a.position].index, type=a.type, label=a.label)
            for a in planned.args
        ],
        message=getattr(hook, "message", None),
        tags=list(getattr(hook, "tags", []) or []),
    )
