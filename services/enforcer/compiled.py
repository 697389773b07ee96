"""A policy's text → everything needed to apply it, or a PolicyError
naming every part that cannot be honoured here. Nothing is written: the
engine applies a CompiledPolicy as a whole or not at all."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from schemas.hooks import HookArgInfo, HookInfo
from schemas.policy import PolicyError, Problem, load_policy
from schemas.policy.hooks import AnyHook
from services.enforcer.compile import compile_selectors
from services.enforcer.connect_rules import ConnectRuleSpec, compile_connect_rules, connect_note
from services.enforcer.plan import FormatReader, PlannedHook, plan_hooks
from services.enforcer.reacted_binaries import opted_in
from services.enforcer.revision import revision_of
from services.enforcer.scope_spec import ScopeSpec, scope_of
from services.enforcer.syscalls import syscall_lists
from services.sensor.hook_records import Action, SlotConfig

# Tetragon spec keys whose meaning Ocellus does not implement yet: refused,
# because applying the rest would do something other than what was asked.
_SPEC_REFUSED = (("enforcers", "enforcers", "NotifyEnforcer enforcers are not supported yet"),)
_ARG_REFUSED = (
    ("resolve", "resolve", "resolving struct fields needs BTF-based kprobes"),
    ("btf_type", "btfType", "resolving struct fields needs BTF-based kprobes"),
    ("return_copy", "returnCopy", "reading buffers at return is not supported yet"),
    ("max_data", "maxData", "large buffers are not supported yet"),
    ("size_arg_index", "sizeArgIndex", "sized buffers are not supported yet"),
)
_SIGNAL_ACTIONS = {Action.SIGKILL, Action.SIGNAL}
_ENFORCING_ACTIONS = _SIGNAL_ACTIONS | {Action.OVERRIDE}  # what monitor mode elides
MODES = ("enforce", "monitor")
Mode = Literal["enforce", "monitor"]
# Tetragon's way of giving a policy its mode in the policy itself.
MODE_OPTION = "policy-mode"


@dataclass(frozen=True, slots=True)
class CompiledHook:
    planned: PlannedHook
    slots: tuple[SlotConfig, ...]
    info: HookInfo
    connect: tuple[ConnectRuleSpec, ...] = ()  # Override selectors (connect_rules.py)

    @property
    def shape(self) -> tuple[object, ...]:
        """What must stay the same for a change to be map values only."""
        p = self.planned
        # return: true adds a sys_exit_* side with the return value's layout
        ret = p.return_arg
        exit_side = (
            (p.exit_tracepoint.id if p.exit_tracepoint else None, ret.read_size, ret.read)
            if ret is not None
            else None
        )
        return (
            p.tracepoint.id,
            tuple((a.field.offset, a.read_size, a.read) for a in p.args),
            exit_side,
        )


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    revision: str  # of the text
    hooks: tuple[CompiledHook, ...]
    notes: tuple[str, ...]  # what the user should know about its semantics here
    mode: Mode = "enforce"
    scope: ScopeSpec | None = None  # where it applies (scope_spec.py); None: everywhere
    # ocellus.io/binaries: reactive: reactions add to its In sets (reacted_binaries.py)
    reactive_binaries: bool = False

    @property
    def enforces(self) -> bool:
        """Has actions that monitor mode elides (else it is monitor-only)."""
        return any(
            s.action in _ENFORCING_ACTIONS or h.info.monitored for h in self.hooks for s in h.slots
        )

    @property
    def shape(self) -> tuple[object, ...]:
        return tuple(h.shape for h in self.hooks)


def compile_policy(
    text: str | bytes,
    capabilities: Mapping[str, str],
    formats: FormatReader | None = None,
    *,
    source: str | None = None,
    mode: Mode | None = None,
) -> CompiledPolicy:
    """``mode`` overrides the policy's own (option policy-mode; default enforce)."""
    policy = load_policy(text, source=source)
    name = policy.metadata.name
    spec = policy.spec
    problems: list[Problem] = []
    own_mode = next((o.value for o in spec.options if o.name == MODE_OPTION), None) or "enforce"
    if own_mode not in MODES:
        problems.append(Problem("spec.options", f"{MODE_OPTION} must be enforce or monitor"))
    scope, scope_problems = scope_of(policy)
    problems += scope_problems
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

    effective: Mode = mode or own_mode  # type: ignore[assignment]
    lists = syscall_lists(spec.lists, problems)  # InMap list:NAME
    if problems:
        raise PolicyError(name, problems)
    by_path = dict(spec.hooks())
    compiled: list[CompiledHook] = []
    for planned in plan_hooks(name, spec, capabilities, formats):  # raises for every bad hook
        hook = by_path[planned.path]
        slots = compile_selectors(name, planned, hook, lists)
        connect = compile_connect_rules(name, planned, hook, slots, capabilities)
        info = _info(name, planned, hook)
        if effective == "monitor":
            slots, monitored = _monitored(slots, connect)
            info = info.model_copy(update={"mode": "monitor", "monitored": monitored})
        compiled.append(CompiledHook(planned, tuple(slots), info, connect))
    reactive_binaries = opted_in(name, policy.metadata.annotations, compiled)
    notes = []
    would = [w for h in compiled for w in h.info.monitored.values()]
    if effective == "monitor" and any(w.startswith("SIG") for w in would):
        notes.append("monitor mode: Sigkill/Signal are reported, not sent")
    elif any(s.action in _SIGNAL_ACTIONS for h in compiled for s in h.slots):
        notes.append(
            "Sigkill/Signal act at syscall entry: the process dies before the call returns "
            "to it, but the call itself completes (an O_TRUNC truncates, an unlink unlinks)"
        )
    if any(h.connect for h in compiled):
        calls = {spec.call for h in compiled for spec in h.connect}
        notes.append(connect_note(effective == "monitor", calls, scoped=scope is not None))
    if scope is not None:
        notes.append(
            "scoped: applies from the moment the enforcer sees a container's cgroup "
            "(cgroup_mkdir); its first instructions may run before that"
        )
    return CompiledPolicy(
        name, revision_of(text), tuple(compiled), tuple(notes), effective, scope, reactive_binaries
    )


def _monitored(
    slots: list[SlotConfig], connect: tuple[ConnectRuleSpec, ...] = ()
) -> tuple[list[SlotConfig], dict[int, str]]:
    """Monitor mode: a slot that would signal (or deny a connect) posts instead
    (same map shape, so switching modes rewrites values only) and counts each
    match as `monitored`."""
    out, monitored = [], {}
    denies = {rule.selector: rule.would for rule in connect}
    for slot in slots:
        if slot.action in _SIGNAL_ACTIONS or slot.selector in denies:
            would = "SIGKILL" if slot.action == Action.SIGKILL else f"SIGNAL {slot.signal}"
            would = denies.get(slot.selector, would)
            monitored[slot.selector] = would
            slot = dataclasses.replace(
                slot, action=Action.POST, post=True, signal=0, monitored=True
            )
        out.append(slot)
    return out, monitored


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
        return_arg=(
            HookArgInfo(index=0, type=planned.return_arg.type, label=planned.return_arg.label)
            if planned.return_arg is not None
            else None
        ),
        message=getattr(hook, "message", None),
        tags=list(getattr(hook, "tags", []) or []),
    )
