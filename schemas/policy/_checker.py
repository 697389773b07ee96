"""What the semantic checks share: the problems found so far and the policy-wide facts
(``spec.lists``, ``spec.enforcers``) a hook's checks need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import Problem

if TYPE_CHECKING:
    from .model import ListSpec


@dataclass
class Checker:
    lists: Mapping[str, ListSpec]
    has_enforcers: bool
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def limit(self, path: str, count: int, limit: int, name: str, what: str) -> None:
        """One problem naming the limit (a :class:`.limits.Limits` field) when exceeded."""
        if count > limit:
            self.add(path, f"more than {limit} {what} (limit {name}; got {count})")
