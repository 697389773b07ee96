"""Selectors of a planned hook → the slot configs the sensor's generic hook
engine evaluates (services/sensor/hook_records.py).

Compiles matchArgs with Equal/NotEqual (strings and integers),
Prefix/NotPrefix, Postfix/NotPostfix, Mask, GT, LT, InRange/NotInRange, InMap/NotInMap
and the socket operators (services/enforcer/compile_values.py); matchReturnArgs on a
``return: true`` syscall kprobe's return value; and matchActions
Post (with rateLimit, rateLimitScope)/NoPost/Sigkill/Signal. Everything else a
selector may hold is refused with its path and "not supported yet": a filter
is never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.policy import (
    ActionSelector,
    ArgSelector,
    PolicyError,
    Problem,
    Selector,
    resolve_match_index,
)
from schemas.policy.hooks import AnyHook
from schemas.policy.values import parse_int, parse_range
from services.enforcer.compile_process import ProcessProblem, process_filters
from services.enforcer.compile_values import FilterProblem, value_filter
from services.enforcer.plan import INT, KERNEL_STRING, UINT, USER_STRING, PlannedHook
from services.sensor.hook_records import (
    HOOK_FILTERS,
    HOOK_SLOTS,
    HOOK_VALUES,
    STR_KEY_DATA,
    Action,
    FilterConfig,
    FilterFlag,
    FilterOp,
    RateScope,
    SlotConfig,
)

_INT_OPS = {
    "Equal": (FilterOp.EQUAL, FilterFlag(0)),
    "NotEqual": (FilterOp.EQUAL, FilterFlag.NOT),
    "Mask": (FilterOp.MASK, FilterFlag(0)),
    "GT": (FilterOp.GT, FilterFlag(0)),
    "LT": (FilterOp.LT, FilterFlag(0)),
    "InRange": (FilterOp.RANGE, FilterFlag(0)),
    "NotInRange": (FilterOp.RANGE, FilterFlag.NOT),
}
_STR_OPS = {
    "Equal": (FilterOp.STR_EQUAL, FilterFlag(0)),
    "NotEqual": (FilterOp.STR_EQUAL, FilterFlag.NOT),
    "Prefix": (FilterOp.STR_PREFIX, FilterFlag(0)),
    "NotPrefix": (FilterOp.STR_PREFIX, FilterFlag.NOT),
    "Postfix": (FilterOp.STR_POSTFIX, FilterFlag(0)),
    "NotPostfix": (FilterOp.STR_POSTFIX, FilterFlag.NOT),
}
_SIGKILL = 9
_UNSUPPORTED_FIELDS = (
    ("match_parent_binaries", "matchParentBinaries"),
    ("match_namespace_changes", "matchNamespaceChanges"),
    ("match_capabilities", "matchCapabilities"),
    ("match_capability_changes", "matchCapabilityChanges"),
    ("match_return_actions", "matchReturnActions"),
)


class _Unsupported(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def compile_selectors(
    policy: str,
    planned: PlannedHook,
    hook: AnyHook,
    lists: Mapping[str, Sequence[int]] | None = None,
) -> list[SlotConfig]:
    """One SlotConfig per selector of ``hook`` (one Post slot when it has none).
    ``lists``: the policy's syscall lists as numbers (services/enforcer/syscalls.py),
    for InMap/NotInMap values ``list:NAME``. A PolicyError lists every part the
    kernel side cannot evaluate yet."""
    selectors: list[Selector] = list(getattr(hook, "selectors", []) or [])
    if lists:
        selectors = [_expand_lists(s, lists) for s in selectors]
    if not selectors:
        return [SlotConfig(selector=0)]
    problems: list[Problem] = []
    if len(selectors) > HOOK_SLOTS:
        problems.append(
            Problem(
                f"{planned.path}.selectors",
                f"{len(selectors)} selectors: at most {HOOK_SLOTS} per hook are supported yet",
            )
        )
    slots = []
    for i, selector in enumerate(selectors[:HOOK_SLOTS]):
        path = f"{planned.path}.selectors[{i}]"
        try:
            slots.append(_selector(path, i, selector, planned, hook))
        except _Unsupported as e:
            problems.append(Problem(e.path, e.message))
    if problems:
        raise PolicyError(policy, problems)
    return slots


def _expand_lists(selector: Selector, lists: Mapping[str, Sequence[int]]) -> Selector:
    """InMap/NotInMap values ``list:NAME`` replaced by the list's syscall numbers."""

    def values(f: ArgSelector) -> list[str]:
        out: list[str] = []
        for v in f.values:
            name = v.removeprefix("list:")
            out += [str(n) for n in lists[name]] if v.startswith("list:") and name in lists else [v]
        return out

    args = [
        f.model_copy(update={"values": values(f)}) if f.operator in _LIST_OPS else f
        for f in selector.match_args
    ]
    return selector.model_copy(update={"match_args": args})


_LIST_OPS = {"InMap", "NotInMap"}


def _selector(
    path: str, index: int, selector: Selector, planned: PlannedHook, hook: AnyHook
) -> SlotConfig:
    for attr, name in _UNSUPPORTED_FIELDS:
        if getattr(selector, attr):
            raise _Unsupported(f"{path}.{name}", f"{name} is not supported yet")
    if len(selector.match_args) > HOOK_FILTERS:
        raise _Unsupported(f"{path}.matchArgs", f"at most {HOOK_FILTERS} filters per selector")
    filters = tuple(
        _filter(f"{path}.matchArgs[{j}]", f, planned, hook)
        for j, f in enumerate(selector.match_args)
    )
    action, post, signal = Action.POST, True, 0
    rate_ns, rate_scope = 0, RateScope.THREAD
    for j, act in enumerate(selector.match_actions):
        where = f"{path}.matchActions[{j}]"
        if act.action == "Post":
            if act.rate_limit_seconds:
                rate_ns, rate_scope = _rate_limit(where, selector, act.rate_limit_seconds, act)
            continue
        if act.action == "NoPost":
            post = False
            if action == Action.POST:
                action = Action.NOPOST
        elif act.action in ("Sigkill", "Signal") and not signal:
            signal = _SIGKILL if act.action == "Sigkill" else (act.arg_sig or 0)
            if not signal:
                raise _Unsupported(f"{where}.argSig", "Signal needs argSig (1..64)")
            action = Action.SIGKILL if act.action == "Sigkill" else Action.SIGNAL
        elif act.action == "Override":
            # A network deny (connect_rules.py checks and compiles it): the slot posts nothing.
            action, post = Action.OVERRIDE, False
        else:
            raise _Unsupported(f"{where}.action", f"action {act.action} is not supported yet")
    returns = _return_filters(path, selector, planned)
    try:
        proc = process_filters(path, selector)
    except ProcessProblem as e:
        raise _Unsupported(e.path, e.message) from None
    return SlotConfig(
        index,
        filters,
        action,
        post,
        signal,
        return_filters=returns,
        binary=proc.binary,
        pids=proc.pids,
        namespaces=proc.namespaces,
        rate_ns=rate_ns if post else 0,
        rate_scope=rate_scope,
    )


def _rate_limit(
    where: str, selector: Selector, seconds: int, act: ActionSelector
) -> tuple[int, RateScope]:
    """Post rateLimit: the window in ns and whose repeats it suppresses (Tetragon's
    default scope: the thread). The kernel keys a repeat on the hook, the selector,
    the scope and the first 40 bytes of each arg as posted, as Tetragon does."""
    if selector.match_return_args:
        # The window would open at sys_enter_* for a record matchReturnArgs may drop.
        raise _Unsupported(
            f"{where}.rateLimit", "rateLimit with matchReturnArgs is not supported yet"
        )
    scope = RateScope[(act.rate_limit_scope or "thread").upper()]
    return seconds * 1_000_000_000, scope


def _return_filters(
    path: str, selector: Selector, planned: PlannedHook
) -> tuple[FilterConfig, ...]:
    """matchReturnArgs: filters on the return value, the exit side's arg 0."""
    if not selector.match_return_args:
        return ()
    ret = planned.return_arg
    if ret is None:
        raise _Unsupported(
            f"{path}.matchReturnArgs", "matchReturnArgs needs return: true on a syscall kprobe"
        )
    if len(selector.match_return_args) > HOOK_FILTERS:
        raise _Unsupported(
            f"{path}.matchReturnArgs", f"at most {HOOK_FILTERS} filters per selector"
        )
    out = []
    for j, f in enumerate(selector.match_return_args):
        where = f"{path}.matchReturnArgs[{j}]"
        try:
            special = value_filter(where, f, ret)
        except FilterProblem as e:
            raise _Unsupported(e.path, e.message) from None
        out.append(special or _int_filter(where, f, 0, unsigned=ret.read == UINT))
    return tuple(out)


def _filter(path: str, f: ArgSelector, planned: PlannedHook, hook: AnyHook) -> FilterConfig:
    if f.args is not None:
        if len(f.args) != 1:
            raise _Unsupported(f"{path}.args", "filters over several args are not supported yet")
        position = f.args[0]
    else:
        try:
            position = resolve_match_index(hook, f.index)
        except ValueError as e:
            raise _Unsupported(f"{path}.index", str(e)) from None
    if position >= len(planned.args):
        raise _Unsupported(f"{path}.index", f"index {f.index} names no declared arg")
    read = planned.args[position].read
    try:
        special = value_filter(
            path, f, planned.args[position], destination=_names_destination(planned)
        )
    except FilterProblem as e:
        raise _Unsupported(e.path, e.message) from None
    if special is not None:
        return special
    if read in (USER_STRING, KERNEL_STRING):
        return _string_filter(path, f, position)
    if read in (INT, UINT):
        return _int_filter(path, f, position, unsigned=read == UINT)
    raise _Unsupported(f"{path}.operator", f"filters on {read} args are not supported yet")


def _string_filter(path: str, f: ArgSelector, position: int) -> FilterConfig:
    if f.operator not in _STR_OPS:
        raise _Unsupported(
            f"{path}.operator", f"operator {f.operator} on strings is not supported yet"
        )
    op, flags = _STR_OPS[f.operator]
    room = STR_KEY_DATA - (1 if op == FilterOp.STR_EQUAL else 0)
    values = tuple(v.encode() for v in f.values)
    for k, v in enumerate(values):
        if len(v) > room:
            raise _Unsupported(
                f"{path}.values[{k}]", f"{len(v)} bytes: at most {room} are matched in the kernel"
            )
    if op != FilterOp.STR_POSTFIX:
        return FilterConfig(position, op, flags, strings=values)
    # The kernel looks up the arg's end once per length the values come in.
    lengths = tuple(sorted({len(v) for v in values}))
    if 0 in lengths:
        raise _Unsupported(f"{path}.values", "an empty Postfix value matches every string")
    if len(lengths) > HOOK_VALUES:
        raise _Unsupported(
            f"{path}.values",
            f"Postfix values of {len(lengths)} different lengths: at most {HOOK_VALUES} "
            "per filter in the kernel (one lookup each)",
        )
    return FilterConfig(position, op, flags, ints=lengths, strings=values)


def _int_filter(path: str, f: ArgSelector, position: int, *, unsigned: bool) -> FilterConfig:
    if f.operator not in _INT_OPS:
        raise _Unsupported(
            f"{path}.operator", f"operator {f.operator} on integers is not supported yet"
        )
    op, flags = _INT_OPS[f.operator]
    if unsigned:
        flags |= FilterFlag.UNSIGNED
    ints: list[int] = []
    for v in f.values:
        ints.extend(parse_range(v) if op == FilterOp.RANGE else (parse_int(v),))
    if len(ints) > HOOK_VALUES:
        raise _Unsupported(
            f"{path}.values", f"at most {HOOK_VALUES} integers per filter in the kernel yet"
        )
    return FilterConfig(position, op, flags, ints=tuple(ints))


# Syscalls whose sockaddr arg is where the call goes: DAddr/DPort name it.
_DESTINATION_CALLS = {"connect", "sendto", "sendmsg"}


def _names_destination(planned: PlannedHook) -> bool:
    event = planned.tracepoint.event
    return event.startswith("sys_enter_") and event[len("sys_enter_") :] in _DESTINATION_CALLS
