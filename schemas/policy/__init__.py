"""Tracing policies: Tetragon's ``TracingPolicy`` / ``TracingPolicyNamespaced``
(``cilium.io/v1alpha1``), parsed and checked so that what loads can be compiled to BPF maps.

>>> policy = load_policy(open("deny-shadow.yaml").read())  # doctest: +SKIP

Every failure is a :class:`PolicyError` naming the policy, the YAML path and the problem.
"""

from .errors import PolicyError, Problem
from .hooks import (
    Arg,
    KProbeSpec,
    LsmHookSpec,
    ReturnArg,
    TracepointSpec,
    UProbeSpec,
    UsdtSpec,
    kprobe_syscall_name,
    resolve_match_index,
)
from .limits import LIMITS, Limits
from .loader import Policy, load_policies, load_policy
from .model import (
    API_VERSION,
    EnforcerSpec,
    LabelSelector,
    ListSpec,
    Metadata,
    OptionSpec,
    TracingPolicy,
    TracingPolicyNamespaced,
    TracingPolicySpec,
)
from .selectors import (
    ActionSelector,
    ArgSelector,
    BinarySelector,
    CapabilitiesSelector,
    NamespaceChangesSelector,
    NamespaceSelector,
    PIDSelector,
    Selector,
)

__all__ = [
    "API_VERSION",
    "LIMITS",
    "ActionSelector",
    "Arg",
    "ArgSelector",
    "BinarySelector",
    "CapabilitiesSelector",
    "EnforcerSpec",
    "KProbeSpec",
    "LabelSelector",
    "Limits",
    "ListSpec",
    "LsmHookSpec",
    "Metadata",
    "NamespaceChangesSelector",
    "NamespaceSelector",
    "OptionSpec",
    "PIDSelector",
    "Policy",
    "PolicyError",
    "Problem",
    "ReturnArg",
    "Selector",
    "TracepointSpec",
    "TracingPolicy",
    "TracingPolicyNamespaced",
    "TracingPolicySpec",
    "UProbeSpec",
    "UsdtSpec",
    "kprobe_syscall_name",
    "load_policies",
    "load_policy",
    "resolve_match_index",
]
