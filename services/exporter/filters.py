"""Tetragon's export filters (`--export-allowlist` / `--export-denylist`).

Within one filter every given key must match (AND); a key with several
values matches if any value does (OR). A sink's `allow` list is OR'ed and,
when non-empty, an event must match one of its filters; any match in `deny`
drops the event. An empty filter `{}` matches everything, as in Tetragon.

Differences from Tetragon, on purpose: `pid_set` looks at the process, its
parent and the ancestors the event carries (Tetragon keeps a best-effort
cache of children instead); `container_id` is tried against `docker` (the
31-character id Tetragon matches) and the full `pod.container.id`;
`event_set` takes `PROCESS_EXEC` or `process_exec`. Regular expressions are
Python's and, as Go's MatchString, match anywhere (anchor them with ^…$).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

from services.exporter.labels import LabelSelector, parse_selector
from services.exporter.shape import (
    EVENT_KINDS,
    ancestors_of,
    body_of,
    kind_of,
    parent_of,
    process_of,
)

Predicate = Callable[[Mapping[str, Any]], bool]


def _as_list(value: Any) -> Any:
    # YAML authors write `namespace: default` as often as `namespace: [default]`.
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


Patterns = Annotated[list[re.Pattern[str]], BeforeValidator(_as_list)]
Strings = Annotated[list[str], BeforeValidator(_as_list)]
Pids = Annotated[list[int], BeforeValidator(_as_list)]


class ExportFilter(BaseModel):
    """One filter: the keys of Tetragon's `Filter` message that apply to export."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_set: Strings | None = None
    binary_regex: Patterns | None = None
    parent_binary_regex: Patterns | None = None
    namespace: Strings | None = None
    pod_regex: Patterns | None = None
    container_id: Patterns | None = None
    labels: Strings | None = None
    policy_names: Strings | None = None
    pid: Pids | None = None
    pid_set: Pids | None = None
    arguments_regex: Patterns | None = None
    in_init_tree: bool | None = None

    @field_validator("event_set")
    @classmethod
    def _known_kinds(cls, kinds: list[str] | None) -> list[str] | None:
        if kinds is None:
            return None
        normalised = [k.lower() for k in kinds]
        unknown = [k for k, n in zip(kinds, normalised, strict=True) if n not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"unknown event types {unknown} (known: {sorted(EVENT_KINDS)})")
        return normalised

    @field_validator("labels")
    @classmethod
    def _selectors(cls, selectors: list[str] | None) -> list[str] | None:
        for text in selectors or ():
            parse_selector(text)  # ValueError names the bad requirement
        return selectors

    def compile(self) -> Predicate:
        """A predicate that is true when every given key matches."""
        checks = [check for check in self._checks() if check is not None]
        if not checks:
            return lambda _event: True
        if len(checks) == 1:
            return checks[0]
        return lambda event: all(check(event) for check in checks)

    def _checks(self) -> list[Predicate | None]:
        return [
            _event_set(self.event_set),
            _process_regex(self.binary_regex, "binary", parent=False),
            _process_regex(self.parent_binary_regex, "binary", parent=True),
            _namespace(self.namespace),
            _pod_regex(self.pod_regex),
            _container_id(self.container_id),
            _labels(self.labels),
            _policy_names(self.policy_names),
            _pid(self.pid),
            _pid_set(self.pid_set),
            _process_regex(self.arguments_regex, "arguments", parent=False),
            _in_init_tree(self.in_init_tree),
        ]


class FilterSet:
    """A sink's allow and deny lists, compiled once."""

    def __init__(self, allow: Sequence[ExportFilter], deny: Sequence[ExportFilter]) -> None:
        self._allow = [f.compile() for f in allow]
        self._deny = [f.compile() for f in deny]

    def admits(self, event: Mapping[str, Any]) -> bool:
        if self._allow and not any(match(event) for match in self._allow):
            return False
        return not any(match(event) for match in self._deny)


def _search(patterns: Sequence[re.Pattern[str]], text: Any) -> bool:
    return isinstance(text, str) and any(p.search(text) for p in patterns)


def _event_set(kinds: list[str] | None) -> Predicate | None:
    if kinds is None:
        return None
    wanted = frozenset(kinds)
    return lambda event: kind_of(event) in wanted


def _process_regex(patterns: Patterns | None, field: str, *, parent: bool) -> Predicate | None:
    if patterns is None:
        return None
    pick = parent_of if parent else process_of

    def check(event: Mapping[str, Any]) -> bool:
        process = pick(event)
        return process is not None and _search(patterns, process.get(field))

    return check


def _pod(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    process = process_of(event)
    pod = process.get("pod") if process is not None else None
    return pod if isinstance(pod, Mapping) else None


def _namespace(namespaces: list[str] | None) -> Predicate | None:
    if namespaces is None:
        return None
    wanted = frozenset(namespaces)

    def check(event: Mapping[str, Any]) -> bool:
        if process_of(event) is None:
            return False
        pod = _pod(event)
        # "" selects processes outside any pod (the host), as in Tetragon.
        return (pod.get("namespace", "") if pod is not None else "") in wanted

    return check


def _pod_regex(patterns: Patterns | None) -> Predicate | None:
    if patterns is None:
        return None

    def check(event: Mapping[str, Any]) -> bool:
        pod = _pod(event)
        return pod is not None and _search(patterns, pod.get("name"))

    return check


def _container_id(patterns: Patterns | None) -> Predicate | None:
    if patterns is None:
        return None

    def check(event: Mapping[str, Any]) -> bool:
        process = process_of(event)
        if process is None:
            return False
        pod = _pod(event) or {}
        container = pod.get("container")
        full_id = container.get("id") if isinstance(container, Mapping) else None
        return _search(patterns, process.get("docker")) or _search(patterns, full_id)

    return check


def _labels(texts: list[str] | None) -> Predicate | None:
    if texts is None:
        return None
    selectors: list[LabelSelector] = [parse_selector(t) for t in texts]

    def check(event: Mapping[str, Any]) -> bool:
        pod = _pod(event)
        if pod is None:
            return False
        labels = pod.get("pod_labels")
        labels = labels if isinstance(labels, Mapping) else {}
        return any(s.matches(labels) for s in selectors)

    return check


def _policy_names(names: list[str] | None) -> Predicate | None:
    if names is None:
        return None
    wanted = frozenset(names)
    return lambda event: body_of(event).get("policy_name") in wanted


def _pid(pids: list[int] | None) -> Predicate | None:
    if pids is None:
        return None
    wanted = frozenset(pids)

    def check(event: Mapping[str, Any]) -> bool:
        process = process_of(event)
        return process is not None and process.get("pid") in wanted

    return check


def _pid_set(pids: list[int] | None) -> Predicate | None:
    if pids is None:
        return None
    wanted = frozenset(pids)

    def check(event: Mapping[str, Any]) -> bool:
        line = [process_of(event), parent_of(event), *ancestors_of(event)]
        return any(p is not None and p.get("pid") in wanted for p in line)

    return check


def _in_init_tree(value: bool | None) -> Predicate | None:
    if value is None:
        return None

    def check(event: Mapping[str, Any]) -> bool:
        process = process_of(event)
        # Absent means false, as in Tetragon.
        return process is not None and bool(process.get("in_init_tree", False)) is value

    return check
