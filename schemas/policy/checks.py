"""The checks that need more than one field, from the spec down to each hook and its args: a
``list:NAME`` and ``spec.lists``, a kprobe's call and its kind, buffers and their sizes, limits.
Selectors are checked by :mod:`.selector_checks`.

They run once the whole policy has parsed, and report every problem with its YAML path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._checker import Checker
from .argtypes import BUFFER_TYPES
from .errors import Problem
from .hooks import (
    AnyHook,
    Arg,
    KProbeSpec,
    LsmHookSpec,
    TracepointSpec,
    UProbeSpec,
    kprobe_syscall_name,
)
from .limits import LIMITS
from .selector_checks import check_selector
from .values import label_key_problem, label_value_problem

if TYPE_CHECKING:
    from .model import LabelSelector, ListSpec, TracingPolicySpec

LIST_TYPES: tuple[str, ...] = ("syscalls", "generated_syscalls", "generated_ftrace", "ftrace")
# Lists whose entries are syscalls: a kprobe on such a list is a syscall kprobe.
SYSCALL_LIST_TYPES: tuple[str, ...] = ("syscalls", "generated_syscalls")
_GENERATED_LIST_TYPES = ("generated_syscalls", "generated_ftrace")
_LIST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SYSCALL_LIST_VALUE = re.compile(r"([a-z0-9]+/)?[A-Za-z0-9_]+")  # sys_dup, i386/sys_dup
_TRACEFS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def spec_problems(spec: TracingPolicySpec, *, namespaced: bool) -> list[Problem]:
    """Every cross-field problem of a parsed spec, in document order."""
    check = Checker(
        lists={item.name: item for item in spec.lists}, has_enforcers=bool(spec.enforcers)
    )
    hooks = spec.hooks()
    if not hooks and not spec.loader:
        check.add("spec", "declares no hooks (kprobes, tracepoints, lsmhooks, uprobes or usdts)")
    check.limit("spec", len(hooks), LIMITS.hooks_per_policy, "hooks_per_policy", "hooks")
    _check_lists(check, spec.lists)
    seen_options: set[str] = set()
    for i, option in enumerate(spec.options):
        if option.name in seen_options:
            check.add(f"spec.options[{i}].name", f"option {option.name!r} is given twice")
        seen_options.add(option.name)
    _check_enforcers(check, spec)
    if spec.pod_selector is not None:
        _check_label_selector(check, "spec.podSelector", spec.pod_selector)
    if spec.container_selector is not None:
        _check_label_selector(
            check, "spec.containerSelector", spec.container_selector, only_keys=("name", "repo")
        )
    if spec.host_selector is not None:
        if namespaced:
            check.add("spec.hostSelector", "a TracingPolicyNamespaced applies to pods, not hosts")
        elif spec.host_selector.match_labels or spec.host_selector.match_expressions:
            check.add("spec.hostSelector", "only {} (every host) or null (no host) is supported")
    for path, hook in hooks:
        _check_hook(check, path, hook)
    return check.problems


def _check_lists(check: Checker, lists: Sequence[ListSpec]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(lists):
        path = f"spec.lists[{i}]"
        if not _LIST_NAME.fullmatch(item.name):
            check.add(
                f"{path}.name", f"{item.name!r} is not a list name (letters, digits, '_', '-', '.')"
            )
        elif item.name in seen:
            check.add(f"{path}.name", f"list {item.name!r} is defined twice")
        seen.add(item.name)
        if item.type is not None and item.type not in LIST_TYPES:
            supported = ", ".join(LIST_TYPES)
            check.add(
                f"{path}.type", f"type {item.type!r} is not supported (supported: {supported})"
            )
            continue
        generated = item.type in _GENERATED_LIST_TYPES
        if generated and item.values:
            check.add(f"{path}.values", f"a {item.type} list is generated; it takes no values")
        if not generated and not item.values:
            check.add(f"{path}.values", "a list needs at least one value")
        check.limit(f"{path}.values", len(item.values), LIMITS.list_values, "list_values", "values")
        if item.type == "generated_ftrace":
            if item.pattern is None:
                check.add(path, "a generated_ftrace list needs a pattern (a regular expression)")
            else:
                try:
                    re.compile(item.pattern)
                except re.error as e:
                    check.add(f"{path}.pattern", f"not a regular expression: {e}")
        elif item.pattern is not None:
            check.add(f"{path}.pattern", "only a generated_ftrace list takes a pattern")
        if item.type == "syscalls":
            for j, value in enumerate(item.values):
                if not _SYSCALL_LIST_VALUE.fullmatch(value):
                    check.add(
                        f"{path}.values[{j}]",
                        f"{value!r} is not a syscall (sys_NAME or ABI/sys_NAME)",
                    )


def _check_enforcers(check: Checker, spec: TracingPolicySpec) -> None:
    if len(spec.enforcers) > 1:
        check.add(
            "spec.enforcers", "one enforcer per policy (as Tetragon); merge the calls into one"
        )
    for i, enforcer in enumerate(spec.enforcers):
        if not enforcer.calls:
            check.add(f"spec.enforcers[{i}].calls", "an enforcer needs at least one call")
        for j, call in enumerate(enforcer.calls):
            path = f"spec.enforcers[{i}].calls[{j}]"
            if call.startswith("list:"):
                if call[5:] not in check.lists:
                    check.add(path, f"{call!r} names no list in spec.lists")
                continue
            try:
                kprobe_syscall_name(call)
            except ValueError as e:
                check.add(path, str(e))


def _check_label_selector(
    check: Checker, path: str, selector: LabelSelector, *, only_keys: tuple[str, ...] = ()
) -> None:
    keys = [(f"{path}.matchLabels", key) for key in selector.match_labels]
    expressions = selector.match_expressions
    keys += [(f"{path}.matchExpressions[{i}].key", e.key) for i, e in enumerate(expressions)]
    for where, key in keys:
        if only_keys and key not in only_keys:
            known = " or ".join(repr(k) for k in only_keys)
            check.add(where, f"key {key!r} is not supported; containers are selected by {known}")
        elif problem := label_key_problem(key):
            check.add(where, problem)
    for key, value in selector.match_labels.items():
        if problem := label_value_problem(value):
            check.add(f"{path}.matchLabels", f"{key}: {problem}")
    for i, expression in enumerate(expressions):
        where = f"{path}.matchExpressions[{i}].values"
        if expression.operator in ("In", "NotIn") and not expression.values:
            check.add(where, f"operator {expression.operator} needs at least one value")
        if expression.operator in ("Exists", "DoesNotExist") and expression.values:
            check.add(where, f"operator {expression.operator} takes no values")


def _check_hook(check: Checker, path: str, hook: AnyHook) -> None:
    if hook.message is not None and len(hook.message) > LIMITS.message_chars:
        too_long = f"{len(hook.message)} characters; at most {LIMITS.message_chars}"
        check.add(f"{path}.message", f"{too_long} (limit message_chars)")
    check.limit(f"{path}.tags", len(hook.tags), LIMITS.tags_per_hook, "tags_per_hook", "tags")
    for i, tag in enumerate(hook.tags):
        if not tag.strip():
            check.add(f"{path}.tags[{i}]", "a tag cannot be empty")
    check.limit(f"{path}.args", len(hook.args), LIMITS.args_per_hook, "args_per_hook", "args")
    for i, arg in enumerate(hook.args):
        _check_arg(check, f"{path}.args[{i}]", arg)
    if isinstance(hook, KProbeSpec | UProbeSpec):
        if hook.return_ and hook.return_arg is None:
            check.add(path, "return: true needs returnArg (the type of the return value)")
        if hook.return_arg is not None:
            _check_arg(check, f"{path}.returnArg", hook.return_arg)
    if isinstance(hook, KProbeSpec):
        _check_kprobe(check, path, hook)
    elif isinstance(hook, TracepointSpec):
        for key, name in (("subsystem", hook.subsystem), ("event", hook.event)):
            if not _TRACEFS_NAME.fullmatch(name):
                check.add(f"{path}.{key}", f"{name!r} is not a tracefs name")
    elif isinstance(hook, LsmHookSpec) and not _C_IDENTIFIER.fullmatch(hook.hook):
        check.add(f"{path}.hook", f"{hook.hook!r} is not an LSM hook name (file_open, ...)")
    elif isinstance(hook, UProbeSpec) and not (hook.symbols or hook.offsets or hook.addrs):
        check.add(path, "a uprobe needs symbols, offsets or addrs")
    check.limit(
        f"{path}.selectors",
        len(hook.selectors),
        LIMITS.selectors_per_hook,
        "selectors_per_hook",
        "selectors",
    )
    for i, selector in enumerate(hook.selectors):
        check_selector(check, f"{path}.selectors[{i}]", selector, hook)


def _check_arg(check: Checker, path: str, arg: Arg) -> None:
    if arg.size_arg_index:
        if arg.type not in BUFFER_TYPES:
            check.add(
                f"{path}.sizeArgIndex",
                f"only char_buf and char_iovec args take a size, not {arg.type}",
            )
        elif arg.size_arg_index > LIMITS.size_arg_index_max:
            limit = LIMITS.size_arg_index_max
            check.add(f"{path}.sizeArgIndex", f"at most {limit} (limit size_arg_index_max)")
    if arg.return_copy and arg.type not in BUFFER_TYPES:
        check.add(
            f"{path}.returnCopy",
            f"only char_buf and char_iovec args are copied on return, not {arg.type}",
        )
    if arg.max_data and arg.type != "char_buf":
        check.add(f"{path}.maxData", f"only char_buf args take maxData, not {arg.type}")
    if arg.max_data and arg.return_copy:
        check.add(
            path, "maxData and returnCopy cannot be combined (Tetragon reads maxData on entry only)"
        )


def _check_kprobe(check: Checker, path: str, hook: KProbeSpec) -> None:
    if hook.list_name is not None:
        listed = check.lists.get(hook.list_name)
        if listed is None:
            check.add(f"{path}.call", f"{hook.call!r} names no list in spec.lists")
        elif hook.syscall is not None and hook.syscall != (listed.type in SYSCALL_LIST_TYPES):
            # Tetragon takes the kind of function from the list's type: say it only there.
            holds = "syscalls" if listed.type in SYSCALL_LIST_TYPES else "kernel functions"
            check.add(
                f"{path}.syscall", f"list {hook.list_name!r} holds {holds}; leave syscall out"
            )
    elif hook.syscall is not False:
        try:
            kprobe_syscall_name(hook.call)
        except ValueError as e:
            check.add(f"{path}.call", f"{e}; for a kernel function set syscall: false")
    elif not _C_IDENTIFIER.fullmatch(hook.call.partition(".")[0]):
        # Kernel symbols may carry a compiler suffix: `cgroup_mkdir.isra.0`.
        check.add(f"{path}.call", f"{hook.call!r} is not a kernel function name")
    if hook.return_arg_action is not None and not hook.return_:
        check.add(f"{path}.returnArgAction", "needs return: true and a returnArg")
