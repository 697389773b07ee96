"""The one error a policy can fail with: which policy, and every problem found in it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy.

    ``path`` names the place with the YAML keys, Tetragon style
    (``spec.kprobes[0].selectors[1].matchArgs[0].operator``); for a document that is not even
    valid YAML it is ``line L, column C``. ``line``/``column`` (1-based) point into the source
    text when the policy came from YAML; they are not part of the message.
    """

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyError(ValueError):
    """A policy that cannot be loaded. ``str()`` gives one line per problem, each able to stand
    alone in a log: ``policy 'deny-shadow': spec.kprobes[0].call: required field is missing``."""

    def __init__(
        self, policy: str, problems: Iterable[Problem], *, document: int | None = None
    ) -> None:
        self.policy = policy
        self.problems = list(problems)
        # 1-based position in a multi-document YAML stream; None for a single document.
        self.document = document
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"policy {self.policy!r}"
        if self.document is not None:
            where += f" (document {self.document})"
        return "\n".join(f"{where}: {problem}" for problem in self.problems)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only ``document`` would be lost by the default pickling of exceptions.
        return (_rebuild_policy_error, (self.policy, self.problems, self.document))


def _rebuild_policy_error(
    policy: str, problems: list[Problem], document: int | None
) -> PolicyError:
    return PolicyError(policy, problems, document=document)
