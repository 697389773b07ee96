"""Field masks and argument redaction, applied to each event before a sink
sees it (in place: every sink decodes its own copy of each message).

Masks work like Tetragon's field filters: paths are dot-separated and
relative to the event kind's message (`process.arguments`, `parent`), so
`node_name` and `time` always stay; a path may start with the kind
(`process_exec.process.arguments`) to apply to that kind only. A path into
a list (`ancestors.binary`) applies to every element. `include_fields`
keeps only the listed paths of a kind that has any; `exclude_fields` then
removes paths (exclusion wins).

Redaction works like Tetragon's redaction filters: a rule's regular
expression is applied to the `arguments` of the process, its parent and
its ancestors, and each capture group is replaced with `*****`
(`--password[= ](\\S+)`); a rule with `replacement` replaces the whole
match instead (`\\1`-style references allowed). A rule without either could
not redact anything, so it is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from services.exporter.shape import EVENT_KINDS, Event, kind_of

REDACTED = "*****"
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A mask tree: field name -> sub-mask; an empty sub-mask means "the whole field".
Mask = dict[str, "Mask"]


def check_field_path(path: str) -> str:
    """ValueError unless ``path`` is a dot path of field names."""
    parts = path.split(".")
    if not all(_SEGMENT.fullmatch(p) for p in parts):
        raise ValueError(f"{path!r} is not a dot path of field names")
    if parts[0] in EVENT_KINDS and len(parts) == 1:
        raise ValueError(f"{path!r} names a whole event kind; name fields inside it")
    return path


def _tree(paths: Iterable[Sequence[str]]) -> Mask:
    root: Mask = {}
    for parts in paths:
        node = root
        for i, part in enumerate(parts):
            if part in node and not node[part]:
                break  # a shorter path already takes the whole field
            node = node.setdefault(part, {})
            if i == len(parts) - 1:
                node.clear()
    return root


def _by_kind(paths: Sequence[str]) -> tuple[Mask, dict[str, Mask]]:
    """(mask for every kind, masks for one kind only)."""
    common: list[list[str]] = []
    per_kind: dict[str, list[list[str]]] = {}
    for path in paths:
        parts = path.split(".")
        if parts[0] in EVENT_KINDS:
            per_kind.setdefault(parts[0], []).append(parts[1:])
        else:
            common.append(parts)
    kinds = {k: _tree(common + ps) for k, ps in per_kind.items()}
    return _tree(common), kinds


def _keep(value: Any, mask: Mask) -> None:
    if isinstance(value, list):
        for item in value:
            _keep(item, mask)
    elif isinstance(value, dict):
        for key in list(value):
            if key not in mask:
                del value[key]
            elif mask[key]:
                _keep(value[key], mask[key])


def _prune(value: Any, mask: Mask) -> None:
    if isinstance(value, list):
        for item in value:
            _prune(item, mask)
    elif isinstance(value, dict):
        for key, sub in mask.items():
            if key not in value:
                continue
            if sub:
                _prune(value[key], sub)
            else:
                del value[key]


class FieldMask:
    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include, self._include_kind = _by_kind(include)
        self._exclude, self._exclude_kind = _by_kind(exclude)
        self.active = bool(include or exclude)

    def apply(self, event: Event) -> None:
        kind = kind_of(event)
        if kind is None:
            return
        body = event[kind]
        include = self._include_kind.get(kind, self._include)
        if include:
            _keep(body, include)
        exclude = self._exclude_kind.get(kind, self._exclude)
        if exclude:
            _prune(body, exclude)


class RedactRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    regex: re.Pattern[str]
    replacement: str | None = None
    binary_regex: list[re.Pattern[str]] = []  # only processes whose binary matches

    @model_validator(mode="after")
    def _can_redact(self) -> RedactRule:
        if self.replacement is None and self.regex.groups == 0:
            raise ValueError(
                "regex has no capture group to replace with *****; "
                "add one, e.g. '--password=(\\S+)', or give a replacement"
            )
        return self

    def redact(self, text: str) -> str:
        if self.replacement is not None:
            return self.regex.sub(self.replacement, text)
        return self.regex.sub(self._mask_groups, text)

    @staticmethod
    def _mask_groups(match: re.Match[str]) -> str:
        # Replace each group that took part in the match; nested groups are
        # covered by their outer group.
        whole, start = match.group(0), match.start()
        out, last = [], 0
        for g in range(1, (match.re.groups or 0) + 1):
            g_start, g_end = match.span(g)
            if g_start < 0 or g_start - start < last:
                continue
            out.append(whole[last : g_start - start])
            out.append(REDACTED)
            last = g_end - start
        out.append(whole[last:])
        return "".join(out)

    def applies_to(self, binary: Any) -> bool:
        if not self.binary_regex:
            return True
        return isinstance(binary, str) and any(p.search(binary) for p in self.binary_regex)


class Redactor:
    def __init__(self, rules: Sequence[RedactRule]) -> None:
        self._rules = list(rules)
        self.active = bool(rules)

    def apply(self, event: Event) -> None:
        kind = kind_of(event)
        body = event.get(kind) if kind else None
        if not isinstance(body, dict):
            return
        ancestors = body.get("ancestors")
        processes = [body.get("process"), body.get("parent")]
        if isinstance(ancestors, list):
            processes.extend(ancestors)
        for process in processes:
            if isinstance(process, dict) and isinstance(process.get("arguments"), str):
                process["arguments"] = self._redact(process["arguments"], process.get("binary"))

    def _redact(self, arguments: str, binary: Any) -> str:
        for rule in self._rules:
            if rule.applies_to(binary):
                arguments = rule.redact(arguments)
        return arguments
