"""TracingPolicy and TracingPolicyNamespaced (``cilium.io/v1alpha1``), as Tetragon's CRD has
them: the same YAML keys, the same defaults (``type: auto``, ``syscall`` true when absent)."""

# ruff: noqa: RUF012 - pydantic copies a field's default per instance; ruff cannot see across
# modules that PolicyModel is a pydantic BaseModel, so it takes `= []` for a shared class attribute.

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from ._base import PolicyModel, StrValue
from .checks import SYSCALL_LIST_TYPES, spec_problems
from .errors import PolicyError, Problem
from .hooks import AnyHook, KProbeSpec, LsmHookSpec, TracepointSpec, UProbeSpec, UsdtSpec
from .values import dns_label, dns_subdomain, label_key_problem, label_value_problem

API_VERSION = "cilium.io/v1alpha1"
KINDS: tuple[str, ...] = ("TracingPolicy", "TracingPolicyNamespaced")


def _labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if problem := label_key_problem(key) or label_value_problem(value):
            raise ValueError(problem)
    return labels


def _annotations(annotations: dict[str, str]) -> dict[str, str]:
    for key in annotations:
        if problem := label_key_problem(key):
            raise ValueError(problem)
    return annotations


class Metadata(PolicyModel):
    """Kubernetes ObjectMeta: the fields a policy author writes, checked as the API server
    would; the fields the server sets are accepted so ``kubectl get -o yaml`` output loads."""

    name: Annotated[str, AfterValidator(dns_subdomain)]
    namespace: Annotated[str, AfterValidator(dns_label)] | None = None
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = {}
    annotations: Annotated[dict[str, str], AfterValidator(_annotations)] = {}
    # Set by the API server; carried, never interpreted.
    generate_name: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    self_link: str | None = None


class LabelSelectorRequirement(PolicyModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(PolicyModel):
    """A Kubernetes label selector: matchLabels and matchExpressions, all ANDed."""

    match_labels: dict[str, str] = {}
    match_expressions: list[LabelSelectorRequirement] = []


class ListSpec(PolicyModel):
    """A named list: functions for ``call: list:NAME``, syscalls for ``InMap list:NAME``."""

    name: str
    # syscalls, generated_syscalls, generated_ftrace, ftrace; none for kernel functions.
    type: str | None = None
    values: list[str] = []
    # Regular expression over available_filter_functions, for generated_ftrace lists.
    pattern: str | None = None
    validated: bool = False


class OptionSpec(PolicyModel):
    name: str
    value: StrValue | None = None


class EnforcerSpec(PolicyModel):
    """Syscalls (or ``list:NAME``) the NotifyEnforcer action acts on."""

    calls: list[str]


class TracingPolicySpec(PolicyModel):
    """What to hook, how to filter in the kernel, and which pods and containers it applies to."""

    kprobes: list[KProbeSpec] = []
    tracepoints: list[TracepointSpec] = []
    lsmhooks: list[LsmHookSpec] = []
    uprobes: list[UProbeSpec] = []
    usdts: list[UsdtSpec] = []
    lists: list[ListSpec] = []
    options: list[OptionSpec] = []
    enforcers: list[EnforcerSpec] = []
    pod_selector: LabelSelector | None = None
    container_selector: LabelSelector | None = None
    # Tetragon allows only null (no host) or {} (every host).
    host_selector: LabelSelector | None = None
    # Report loader events (shared libraries mapped) in process events.
    loader: bool = False

    def hooks(self) -> list[tuple[str, AnyHook]]:
        """Every hook with its path (``spec.kprobes[0]``), in spec order."""
        sections: tuple[tuple[str, list[Any]], ...] = (
            ("kprobes", self.kprobes),
            ("tracepoints", self.tracepoints),
            ("lsmhooks", self.lsmhooks),
            ("uprobes", self.uprobes),
            ("usdts", self.usdts),
        )
        return [
            (f"spec.{key}[{i}]", hook) for key, hooks in sections for i, hook in enumerate(hooks)
        ]

    def kprobe_is_syscall(self, kprobe: KProbeSpec) -> bool:
        """Whether a kprobe hooks syscalls: for ``call: list:NAME`` the list's type says so (as
        in Tetragon), otherwise ``syscall``, true when absent (the CRD default)."""
        listed = next((item for item in self.lists if item.name == kprobe.list_name), None)
        if kprobe.list_name is not None and listed is not None:
            return listed.type in SYSCALL_LIST_TYPES
        return kprobe.syscall is not False


class _Policy(PolicyModel):
    api_version: str
    kind: str
    metadata: Metadata
    spec: TracingPolicySpec

    @model_validator(mode="after")
    def _semantics(self) -> Self:
        namespaced = isinstance(self, TracingPolicyNamespaced)
        problems: list[Problem] = []
        if self.api_version != API_VERSION:
            problems.append(Problem("apiVersion", f"must be {API_VERSION!r}"))
        if self.kind != type(self).__name__:
            problems.append(Problem("kind", f"must be {type(self).__name__!r}"))
        if namespaced and self.metadata.namespace is None:
            problems.append(Problem("metadata.namespace", "required for a TracingPolicyNamespaced"))
        if not namespaced and self.metadata.namespace is not None:
            cluster_wide = (
                "a TracingPolicy is cluster-wide; use kind TracingPolicyNamespaced to limit it "
                "to one namespace"
            )
            problems.append(Problem("metadata.namespace", cluster_wide))
        problems += spec_problems(self.spec, namespaced=namespaced)
        if problems:
            raise PolicyError(self.metadata.name, problems)
        return self


class TracingPolicy(_Policy):
    """A cluster-wide policy."""

    kind: str = "TracingPolicy"
    api_version: str = Field(default=API_VERSION)


class TracingPolicyNamespaced(_Policy):
    """A policy for the pods of one namespace (``metadata.namespace``; the loader fills in the
    namespace it is applied to when the document has none, as kubectl does)."""

    kind: str = "TracingPolicyNamespaced"
    api_version: str = Field(default=API_VERSION)

    @property
    def namespace(self) -> str:
        """The namespace whose pods the policy applies to."""
        return self.metadata.namespace or ""  # never empty: validation requires it
