"""Kubernetes label selectors, as Tetragon's `labels` filter reads them.

A selector is comma-separated requirements, all of which must hold:
`key=value` (or `==`), `key!=value`, `key in (a,b)`, `key notin (a,b)`,
`key` (present) and `!key` (absent). As in Kubernetes, `!=` and `notin`
also hold when the label is absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")

Labels = Mapping[str, str]


@dataclass(frozen=True)
class LabelSelector:
    text: str
    requirements: tuple[Callable[[Labels], bool], ...]

    def matches(self, labels: Labels) -> bool:
        return all(requirement(labels) for requirement in self.requirements)


def parse_selector(text: str) -> LabelSelector:
    """ValueError names the requirement that is not understood. An empty
    selector selects everything, as in Kubernetes."""
    if not text.strip():
        return LabelSelector(text, ())
    requirements = [_parse_requirement(part.strip(), text) for part in _split(text)]
    return LabelSelector(text, tuple(requirements))


def _split(text: str) -> list[str]:
    # Commas inside "in (a,b)" do not separate requirements.
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += (c == "(") - (c == ")")
        if c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_requirement(part: str, text: str) -> Callable[[Labels], bool]:
    if m := _SET.match(part):
        key, op = m.group(1), m.group(3)
        values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
        if not values or not all(re.fullmatch(_VALUE, v) for v in values):
            raise ValueError(f"label selector {text!r}: bad value list in {part!r}")
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQUALITY.match(part):
        key, op, value = m.group(1), m.group(3), m.group(4)
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS.match(part):
        negated, key = m.group(1) == "!", m.group(2)
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ValueError(f"label selector {text!r}: cannot parse {part!r}")
