"""The checks of one selector against its hook: which arg a filter names, whether its operator
fits that arg and its values, the actions and the hook they run on, and the selector limits."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from ._checker import Checker
from .argtypes import CAPABILITY_SET_TYPES
from .hooks import (
    AnyHook,
    Arg,
    KProbeSpec,
    TracepointSpec,
    UProbeSpec,
    UsdtSpec,
    resolve_match_index,
)
from .limits import LIMITS
from .operators import (
    ARG_OPERATOR_BY_NAME,
    ARG_OPERATORS,
    BINARY_OPERATORS,
    SET_OPERATORS,
    OperatorKind,
    check_values,
    unsupported_operator,
)
from .selectors import ActionSelector, ArgSelector, BinarySelector, Selector

_ARG_OPERATOR_NAMES = tuple(op.name for op in ARG_OPERATORS)
# The parameters each action uses (ActionSelector field names); any other parameter that carries
# a value is an error rather than silently ignored.
_ACTION_PARAMS: dict[str, frozenset[str]] = {
    "Post": frozenset(
        {"rate_limit", "rate_limit_scope", "kernel_stack_trace", "user_stack_trace", "ima_hash"}
    ),
    "Signal": frozenset({"arg_sig"}),
    "Override": frozenset({"arg_error", "arg_regs"}),
    "FollowFD": frozenset({"arg_fd", "arg_name"}),
    "UnfollowFD": frozenset({"arg_fd", "arg_name"}),
    "CopyFD": frozenset({"arg_fd", "arg_name"}),
    "GetUrl": frozenset({"arg_url"}),
    "DnsLookup": frozenset({"arg_fqdn"}),
    "TrackSock": frozenset({"arg_sock"}),
    "UntrackSock": frozenset({"arg_sock"}),
    "NotifyEnforcer": frozenset({"arg_error", "arg_sig"}),
    "Set": frozenset({"arg_index", "arg_value"}),
}  # fmt: skip
# Parameters that are positions into the hook's declared args (the record the program builds).
_ARG_POSITION_PARAMS = ("arg_fd", "arg_name", "arg_sock", "arg_index")
# Actions that may not share a selector: they contradict each other.
_CONFLICTING_ACTIONS = (frozenset({"Post", "NoPost"}), frozenset({"Sigkill", "Signal"}))


def check_selector(check: Checker, path: str, sel: Selector, hook: AnyHook) -> None:
    limit = LIMITS.match_args_per_selector
    check.limit(
        f"{path}.matchArgs",
        len(sel.match_args),
        limit,
        "match_args_per_selector",
        "matchArgs filters",
    )
    for i, match in enumerate(sel.match_args):
        _check_match_arg(check, f"{path}.matchArgs[{i}]", match, hook)
    returns = isinstance(hook, KProbeSpec | UProbeSpec) and hook.return_
    return_arg = hook.return_arg if isinstance(hook, KProbeSpec | UProbeSpec) else None
    if sel.match_return_args and not (returns and return_arg is not None):
        check.add(f"{path}.matchReturnArgs", _no_return(hook, "and a returnArg "))
    elif return_arg is not None:
        for i, match in enumerate(sel.match_return_args):
            _check_match_return_arg(check, f"{path}.matchReturnArgs[{i}]", match, return_arg)
    for i, pids in enumerate(sel.match_pids):
        where = f"{path}.matchPIDs[{i}]"
        _check_set_filter(check, where, pids.operator, pids.values, SET_OPERATORS)
        limit = LIMITS.pid_values_per_match
        check.limit(f"{where}.values", len(pids.values), limit, "pid_values_per_match", "PIDs")
    for key, binaries in (
        ("matchBinaries", sel.match_binaries),
        ("matchParentBinaries", sel.match_parent_binaries),
    ):
        limit = LIMITS.match_binaries_per_selector
        check.limit(
            f"{path}.{key}", len(binaries), limit, "match_binaries_per_selector", f"{key} filters"
        )
        for i, binary in enumerate(binaries):
            _check_binaries(check, f"{path}.{key}[{i}]", binary)
    limit, name = LIMITS.match_namespaces_per_selector, "match_namespaces_per_selector"
    check.limit(
        f"{path}.matchNamespaces", len(sel.match_namespaces), limit, name, "matchNamespaces filters"
    )
    for i, ns in enumerate(sel.match_namespaces):
        where = f"{path}.matchNamespaces[{i}]"
        _check_set_filter(check, where, ns.operator, ns.values, SET_OPERATORS)
        limit = LIMITS.namespace_values_per_match
        check.limit(
            f"{where}.values", len(ns.values), limit, "namespace_values_per_match", "namespaces"
        )
    changes = sel.match_namespace_changes
    limit, name = (
        LIMITS.match_namespace_changes_per_selector,
        "match_namespace_changes_per_selector",
    )
    check.limit(
        f"{path}.matchNamespaceChanges", len(changes), limit, name, "matchNamespaceChanges filters"
    )
    for i, change in enumerate(changes):
        where = f"{path}.matchNamespaceChanges[{i}]"
        _check_set_filter(check, where, change.operator, change.values, SET_OPERATORS)
    for key, caps in (
        ("matchCapabilities", sel.match_capabilities),
        ("matchCapabilityChanges", sel.match_capability_changes),
    ):
        for i, cap in enumerate(caps):
            _check_set_filter(check, f"{path}.{key}[{i}]", cap.operator, cap.values, SET_OPERATORS)
    _check_actions(check, f"{path}.matchActions", sel.match_actions, hook)
    if sel.match_return_actions and not returns:
        check.add(f"{path}.matchReturnActions", _no_return(hook, ""))
    else:
        _check_actions(check, f"{path}.matchReturnActions", sel.match_return_actions, hook)


def _no_return(hook: AnyHook, and_more: str) -> str:
    if isinstance(hook, KProbeSpec | UProbeSpec):
        return f"needs return: true {and_more}on the hook"
    return "only kprobes and uprobes report a return value"


def _check_set_filter(
    check: Checker, path: str, operator: str, values: Sequence[object], supported: Sequence[str]
) -> None:
    if operator not in supported:
        check.add(path, unsupported_operator(operator, supported))
    if not values:
        check.add(f"{path}.values", f"operator {operator} needs at least one value")


def _check_binaries(check: Checker, path: str, binary: BinarySelector) -> None:
    _check_set_filter(check, path, binary.operator, binary.values, BINARY_OPERATORS)
    limit = LIMITS.binary_values_per_match
    check.limit(f"{path}.values", len(binary.values), limit, "binary_values_per_match", "paths")
    anchored = binary.operator in ("In", "NotIn", "Prefix", "NotPrefix")
    for i, value in enumerate(binary.values):
        size = len(value.encode())
        if size > LIMITS.string_value_bytes:
            too_long = f"{size} bytes; at most {LIMITS.string_value_bytes} bytes per path"
            check.add(f"{path}.values[{i}]", f"{too_long} (limit string_value_bytes)")
        elif anchored and not value.startswith("/"):
            # The kernel reports absolute paths: a relative one would never match.
            check.add(f"{path}.values[{i}]", f"{value!r} is not an absolute path")
    if binary.follow_children and binary.operator not in ("In", "NotIn"):
        check.add(
            f"{path}.followChildren",
            f"followChildren works with In and NotIn, not {binary.operator}",
        )


def _check_match_arg(check: Checker, path: str, match: ArgSelector, hook: AnyHook) -> None:
    op = ARG_OPERATOR_BY_NAME.get(match.operator)
    if op is None:
        check.add(path, unsupported_operator(match.operator, _ARG_OPERATOR_NAMES))
        return
    gained = op.kind is OperatorKind.CAPS_GAINED
    if match.args is not None:
        if match.is_set("index") and match.index:
            check.add(
                path, "give index or args, not both (Tetragon ignores index when args is set)"
            )
        wanted = 2 if gained else 1
        if len(match.args) != wanted:
            plural = "s" if wanted > 1 else ""
            check.add(
                f"{path}.args",
                f"operator {op.name} filters {wanted} arg{plural}, got {len(match.args)}",
            )
            return
        for j, position in enumerate(match.args):
            if position >= len(hook.args):
                declared = f"({len(hook.args)} args declared)"
                check.add(f"{path}.args[{j}]", f"spec arg {position} is not declared {declared}")
                return
        positions = list(match.args)
    elif gained:
        check.add(path, "operator CapabilitiesGained needs args: [NEW, OLD] (two capability args)")
        return
    else:
        try:
            positions = [resolve_match_index(hook, match.index)]
        except ValueError as e:
            check.add(f"{path}.index", str(e))
            return
    if gained:
        for position in positions:
            if hook.args[position].type not in CAPABILITY_SET_TYPES:
                wanted_types = ", ".join(sorted(CAPABILITY_SET_TYPES))
                got = f"args[{position}] is {hook.args[position].type}"
                need = f"operator CapabilitiesGained needs capability args ({wanted_types})"
                check.add(path, f"{need}, but {got}")
    _check_filtered_values(check, path, match, hook.args[positions[0]], f"args[{positions[0]}]")


def _check_match_return_arg(check: Checker, path: str, match: ArgSelector, return_arg: Arg) -> None:
    if match.operator not in ARG_OPERATOR_BY_NAME:
        check.add(path, unsupported_operator(match.operator, _ARG_OPERATOR_NAMES))
    elif match.args is not None and match.args != [0]:
        check.add(f"{path}.args", "matchReturnArgs filters the one returnArg: args must be [0]")
    elif match.args is None and match.index != return_arg.index:
        check.add(
            f"{path}.index",
            f"index {match.index} is not the returnArg's index ({return_arg.index})",
        )
    else:
        _check_filtered_values(check, path, match, return_arg, "returnArg")


def _check_filtered_values(
    check: Checker, path: str, match: ArgSelector, arg: Arg, label: str
) -> None:
    if arg.type == "nop":
        check.add(path, f"{label} is declared nop (read but not reported); it cannot be filtered")
        return
    op = ARG_OPERATOR_BY_NAME[match.operator]
    for where, message in check_values(op, arg.type, label, match.values, check.lists):
        check.add(f"{path}.{where}" if where else path, message)


def _is_given(value: object) -> bool:
    # Zero and empty mean unset: generated policies spell out every field with its zero value.
    return value not in (None, False, 0, "", [])


def _check_actions(
    check: Checker, path: str, actions: Sequence[ActionSelector], hook: AnyHook
) -> None:
    check.limit(path, len(actions), LIMITS.actions_per_selector, "actions_per_selector", "actions")
    names = [action.action for action in actions]
    for name in sorted(set(names)):
        if names.count(name) > 1:
            check.add(path, f"action {name} is given {names.count(name)} times")
    for pair in _CONFLICTING_ACTIONS:
        if pair <= set(names):
            first, second = sorted(pair)
            check.add(path, f"actions {first} and {second} contradict each other")
    for i, action in enumerate(actions):
        _check_action(check, f"{path}[{i}]", action, hook)


def _check_action(check: Checker, path: str, action: ActionSelector, hook: AnyHook) -> None:
    name = action.action
    allowed = _ACTION_PARAMS.get(name, frozenset())
    for param, info in ActionSelector.model_fields.items():
        if param != "action" and param not in allowed and _is_given(getattr(action, param)):
            check.add(f"{path}.{info.alias}", f"does not apply to action {name}")
    if name == "Signal" and not action.arg_sig:
        check.add(path, "action Signal needs argSig (a signal number 1..64)")
    if action.rate_limit_scope is not None and not action.rate_limit:
        check.add(f"{path}.rateLimitScope", "needs rateLimit")
    if name == "GetUrl":
        url = urlsplit(action.arg_url or "")
        if url.scheme not in ("http", "https") or not url.netloc:
            check.add(path, "action GetUrl needs argUrl, an http:// or https:// URL")
    if name == "DnsLookup" and not action.arg_fqdn:
        check.add(path, "action DnsLookup needs argFqdn, the name to look up")
    if name == "NotifyEnforcer" and not check.has_enforcers:
        check.add(path, "action NotifyEnforcer needs spec.enforcers")
    if name == "Override" and isinstance(hook, TracepointSpec | UsdtSpec):
        no_override = "this hook cannot change a return value"
        check.add(path, f"action Override needs a kprobe, LSM hook or uprobe; {no_override}")
    if action.arg_regs and not isinstance(hook, UProbeSpec):
        check.add(f"{path}.argRegs", "only uprobes can override registers")
    if name == "Set" and not isinstance(hook, UsdtSpec):
        check.add(path, "action Set writes a USDT argument; it needs a usdt hook")
    for param in _ARG_POSITION_PARAMS:
        position = getattr(action, param)
        if param in allowed and position is not None and position >= len(hook.args):
            alias = ActionSelector.model_fields[param].alias
            check.add(
                f"{path}.{alias}",
                f"arg {position} is not declared ({len(hook.args)} args declared)",
            )
