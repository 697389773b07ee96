"""Where a policy applies: podSelector, containerSelector, TracingPolicyNamespaced,
hostSelector and the reactive scope, compiled into a ScopeSpec that says, for one
container (or the host), whether the policy applies there.

Semantics (Tetragon's, on a node without a Kubernetes API: a pod is what the CRI
labels of a container say, ``io.kubernetes.pod.namespace|name``):
- none of the four given: the policy applies everywhere (no scope: the kernel's
  fast path);
- ``podSelector`` / ``kind: TracingPolicyNamespaced``: containers of pods whose
  labels (the container's labels) match, of that namespace; a container that is
  in no pod never matches;
- ``containerSelector``: containers whose ``name`` (the CRI container name, else
  the runtime's) and ``repo`` (the image without tag or digest) match;
- given together, they are ANDed; an empty selector ``{}`` matches every
  container (of a pod, for podSelector);
- ``hostSelector: {}``: the host's processes too (``null``: not the host, the
  default once a scope is given); ``hostSelector: {}`` alone: the host only;
- annotation ``ocellus.io/scope: reactive``: the policy applies in no container
  until a reaction (reactions.py) adds one.
A container the runtime could not describe matches no selector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from schemas.policy import LabelSelector, Policy, Problem, TracingPolicyNamespaced
from services.common.containers import ContainerInfo

REACTIVE_ANNOTATION = "ocellus.io/scope"
REACTIVE = "reactive"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "Exists":
            return value is not None
        if self.operator == "DoesNotExist":
            return value is None
        if self.operator == "In":
            return value is not None and value in self.values
        return value is None or value not in self.values  # NotIn


def _requirements(selector: LabelSelector) -> tuple[Requirement, ...]:
    reqs = [Requirement(k, "In", frozenset((v,))) for k, v in selector.match_labels.items()]
    reqs += [
        Requirement(e.key, e.operator, frozenset(e.values)) for e in selector.match_expressions
    ]
    return tuple(reqs)


def _all(reqs: tuple[Requirement, ...] | None, labels: Mapping[str, str]) -> bool:
    return reqs is None or all(r.matches(labels) for r in reqs)


@dataclass(frozen=True, slots=True)
class ScopeSpec:
    """What a policy's scope selects; ``host``: the host's processes are in it."""

    namespace: str | None = None
    pod: tuple[Requirement, ...] | None = None
    container: tuple[Requirement, ...] | None = None
    selects_containers: bool = False  # a pod or container clause was given
    host: bool = False
    reactive: bool = False

    def matches(self, info: ContainerInfo) -> bool:
        """The policy applies in this container (reactions aside)."""
        if not self.selects_containers or not info.resolved:
            return False
        if self.namespace is not None or self.pod is not None:
            if info.pod is None:
                return False
            if self.namespace is not None and info.pod.namespace != self.namespace:
                return False
            if not _all(self.pod, info.labels):
                return False
        fields = {"name": container_name(info), "repo": image_repo(info.image)}
        return _all(self.container, {k: v for k, v in fields.items() if v is not None})


def container_name(info: ContainerInfo) -> str | None:
    """The CRI container name (a pod's), else the runtime's."""
    return info.pod.container_name if info.pod and info.pod.container_name else info.name


def image_repo(image: str | None) -> str | None:
    """``registry:5000/app:1.2@sha256:..`` → ``registry:5000/app``."""
    if not image:
        return None
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def scope_of(policy: Policy) -> tuple[ScopeSpec | None, list[Problem]]:
    """The policy's scope (None: everywhere) and what is wrong with it."""
    spec = policy.spec
    namespace = policy.namespace if isinstance(policy, TracingPolicyNamespaced) else None
    reactive_value = policy.metadata.annotations.get(REACTIVE_ANNOTATION)
    problems: list[Problem] = []
    if reactive_value is not None and reactive_value != REACTIVE:
        problems.append(
            Problem(
                f"metadata.annotations.{REACTIVE_ANNOTATION}",
                f"{reactive_value!r}: the only value is {REACTIVE!r}",
            )
        )
    reactive = reactive_value == REACTIVE
    selectors = (spec.pod_selector, spec.container_selector, spec.host_selector)
    if namespace is None and not reactive:
        if all(s is None for s in selectors):
            return None, problems
        if all(s is not None and not s.match_labels and not s.match_expressions for s in selectors):
            return None, problems  # {} everywhere: Tetragon's "match all"
    host = spec.host_selector is not None
    if reactive and host:
        problems.append(
            Problem(
                "spec.hostSelector",
                "a reactive policy applies in the containers reactions add, not on the host",
            )
        )
    pod = _requirements(spec.pod_selector) if spec.pod_selector is not None else None
    container = (
        _requirements(spec.container_selector) if spec.container_selector is not None else None
    )
    selects = namespace is not None or pod is not None or container is not None
    scope = ScopeSpec(namespace, pod, container, selects, host, reactive)
    return scope, problems
