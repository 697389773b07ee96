"""Selectors: the in-kernel filters of a hook (matchArgs, matchPIDs, ...) and their actions.

A field whose validity depends only on itself is checked here (an action name, a namespace id);
what depends on siblings or on the hook (an operator and its values, an arg index) is checked
by :mod:`.selector_checks` once the whole policy has parsed.
"""

# ruff: noqa: RUF012 - pydantic copies a field's default per instance; ruff cannot see across
# modules that PolicyModel is a pydantic BaseModel, so it takes `= []` for a shared class attribute.

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from ._base import Int32, PolicyModel, StrValue, UInt32
from .operators import canonical_arg_operator, canonical_binary_operator
from .values import canonical_capability, parse_decimal, parse_rate_limit

# Tetragon's ActionSelector.action enum, in its order. Tetragon matches them case-insensitively
# (`SigKill` works); the model holds the canonical spelling.
ACTIONS: tuple[str, ...] = (
    "Post", "FollowFD", "UnfollowFD", "Sigkill", "CopyFD", "Override", "GetUrl", "DnsLookup",
    "NoPost", "Signal", "TrackSock", "UntrackSock", "NotifyEnforcer",
    "CleanupEnforcerNotification", "Set",
)  # fmt: skip
RETURN_ARG_ACTIONS: tuple[str, ...] = ("Post", "TrackSock", "UntrackSock")
NAMESPACES: tuple[str, ...] = (
    "Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time", "TimeForChildren", "Cgroup",
    "User",
)  # fmt: skip
CAPABILITY_SETS: tuple[str, ...] = ("Effective", "Inheritable", "Permitted")
RATE_LIMIT_SCOPES: tuple[str, ...] = ("thread", "process", "global")
HOST_NS = "host_ns"


def _one_of(what: str, names: tuple[str, ...], *, any_case: bool) -> AfterValidator:
    canonical = {(name.lower() if any_case else name): name for name in names}

    def check(value: str) -> str:
        key = value.lower() if any_case else value
        if key not in canonical:
            raise ValueError(f"{what} {value!r} is not supported (supported: {', '.join(names)})")
        return canonical[key]

    return AfterValidator(check)


def _after(check: Callable[[str], object]) -> AfterValidator:
    """Validate with a parser from :mod:`.values` but keep the text as written."""

    def keep(value: str) -> str:
        check(value)
        return value

    return AfterValidator(keep)


def _namespace_id(value: str) -> str:
    if value != HOST_NS:
        try:
            number = parse_decimal(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a namespace inode number nor 'host_ns'"
            ) from None
        if not 0 < number <= 2**32 - 1:
            raise ValueError(f"namespace inode {number} is out of range 1..4294967295")
    return value


ActionName = Annotated[str, _one_of("action", ACTIONS, any_case=True)]
ReturnArgActionName = Annotated[str, _one_of("returnArgAction", RETURN_ARG_ACTIONS, any_case=True)]
NamespaceName = Annotated[str, _one_of("namespace", NAMESPACES, any_case=True)]
NamespaceId = Annotated[StrValue, AfterValidator(_namespace_id)]
CapabilitySet = Annotated[str, _one_of("capability type", CAPABILITY_SETS, any_case=True)]
CapabilityName = Annotated[str, AfterValidator(canonical_capability)]
RateLimit = Annotated[StrValue, _after(parse_rate_limit)]
RateLimitScope = Annotated[str, _one_of("rateLimitScope", RATE_LIMIT_SCOPES, any_case=False)]


class PIDSelector(PolicyModel):
    """matchPIDs: the (host or namespace) PID of the caller, optionally its descendants too."""

    operator: str
    values: list[UInt32]
    is_namespace_pid: bool = Field(default=False, alias="isNamespacePID")
    follow_forks: bool = False


class ArgSelector(PolicyModel):
    """matchArgs / matchReturnArgs: one filter on one declared arg.

    ``index`` names the arg as Tetragon does (see :func:`.hooks.resolve_match_index`); ``args``,
    when given, names spec-arg positions instead and wins over ``index``.
    """

    index: UInt32 = 0
    args: list[UInt32] | None = None
    operator: Annotated[str, BeforeValidator(canonical_arg_operator)]
    values: list[StrValue] = []


class BinarySelector(PolicyModel):
    """matchBinaries / matchParentBinaries: the executable of the caller (or its parent)."""

    operator: Annotated[str, BeforeValidator(canonical_binary_operator)]
    values: list[str]
    follow_children: bool = False


class NamespaceSelector(PolicyModel):
    """matchNamespaces: the caller's namespace of one kind is (not) one of these inodes."""

    namespace: NamespaceName
    operator: str
    values: list[NamespaceId]


class NamespaceChangesSelector(PolicyModel):
    """matchNamespaceChanges: the caller's namespaces of these kinds differ from its exec's."""

    operator: str
    values: list[NamespaceName]


class CapabilitiesSelector(PolicyModel):
    """matchCapabilities / matchCapabilityChanges: capabilities in one set of the caller."""

    type: CapabilitySet = "Effective"
    operator: str
    is_namespace_capability: bool = False
    values: list[CapabilityName]


class ActionSelector(PolicyModel):
    """One action of a matching selector, with the parameters of that action.

    Zero and empty parameters count as unset (generated policies spell out every field), so
    only a parameter that carries a value must belong to its action.
    """

    action: ActionName
    arg_error: Int32 | None = None
    arg_fd: UInt32 | None = None
    arg_name: UInt32 | None = None
    arg_sig: Annotated[int, Field(ge=0, le=64)] | None = None
    arg_sock: UInt32 | None = None
    arg_url: str | None = None
    arg_fqdn: str | None = None
    arg_index: UInt32 | None = None
    arg_value: Int32 | None = None
    arg_regs: list[str] | None = None
    rate_limit: RateLimit | None = None
    rate_limit_scope: RateLimitScope | None = None
    kernel_stack_trace: bool = False
    user_stack_trace: bool = False
    ima_hash: bool = False

    @property
    def rate_limit_seconds(self) -> int | None:
        """``rateLimit`` in seconds, or None when events are not rate limited."""
        return parse_rate_limit(self.rate_limit) if self.rate_limit else None


class Selector(PolicyModel):
    """One selector: its filters are ANDed; the hook's selectors are ORed, first match wins."""

    match_pids: list[PIDSelector] = Field(default=[], alias="matchPIDs")
    match_args: list[ArgSelector] = []
    match_return_args: list[ArgSelector] = []
    match_binaries: list[BinarySelector] = []
    match_parent_binaries: list[BinarySelector] = []
    match_namespaces: list[NamespaceSelector] = []
    match_namespace_changes: list[NamespaceChangesSelector] = []
    match_capabilities: list[CapabilitiesSelector] = []
    match_capability_changes: list[CapabilitiesSelector] = []
    match_actions: list[ActionSelector] = []
    match_return_actions: list[ActionSelector] = []
