"""Every size limit a policy is held to, in one place.

A policy over a limit is rejected with an error naming the limit; nothing is ever truncated.
Where Tetragon's own limit is lower, ours is the larger one: these sizes fit BPF maps (hash,
LPM trie) that the enforcer fills, rather than values unrolled into the program.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits; field names are what error messages cite (``limit selectors_per_hook``)."""

    # Hooks (kprobes + tracepoints + lsmhooks + uprobes + usdts) in one policy.
    hooks_per_policy: int = 64
    # Declared args of one hook: a syscall has at most 6 arguments. Tetragon: 5.
    args_per_hook: int = 6
    # Selectors of one hook; they are ORed, the first match wins. Tetragon: 5.
    selectors_per_hook: int = 8
    # matchArgs filters in one selector (ANDed). Tetragon: 5 (1 before kernel 5.3).
    match_args_per_selector: int = 5
    # matchActions (or matchReturnActions) in one selector. Tetragon: 3.
    actions_per_selector: int = 3
    # Values of one set or pattern operator (Equal, NotEqual, Prefix, Postfix, ports,
    # addresses, Protocol, Family, State, FileType, InMap): map entries. Tetragon: 4 for
    # numeric Equal/NotEqual, unbounded for strings.
    values_per_match: int = 64
    # Values of GT, LT, Mask, InRange, NotInRange: compared in a bounded loop. Tetragon: 4.
    compare_values_per_match: int = 8
    # Bytes of one string value (Equal/Prefix/Postfix/...) and of one matchBinaries path:
    # the kernel map key size. Tetragon: 256 for prefixes, 127 for postfixes.
    string_value_bytes: int = 255
    # Bytes of one SubString/SubStringIgnCase value (as Tetragon).
    substring_bytes: int = 99
    # matchBinaries / matchParentBinaries filters in one selector (as Tetragon).
    match_binaries_per_selector: int = 1
    # Paths in one matchBinaries filter.
    binary_values_per_match: int = 64
    # PIDs in one matchPIDs filter. Tetragon: 4 per selector in its docs.
    pid_values_per_match: int = 16
    # matchNamespaces filters in one selector: one per namespace kind (as Tetragon on >= 5.3).
    match_namespaces_per_selector: int = 10
    # Namespace ids in one matchNamespaces filter. Tetragon: 4.
    namespace_values_per_match: int = 16
    # matchNamespaceChanges filters in one selector (as Tetragon).
    match_namespace_changes_per_selector: int = 1
    # Tags of one hook (as Tetragon).
    tags_per_hook: int = 16
    # Characters of a hook's message. Tetragon truncates at 256 with a warning; we refuse.
    message_chars: int = 256
    # Values of one spec.lists entry (Linux has fewer than 500 syscalls per ABI).
    list_values: int = 1024
    # sizeArgIndex is stored in 4 bits of the argument's metadata (as Tetragon).
    size_arg_index_max: int = 15
    # rateLimit, stored in milliseconds in a u32 (as Tetragon, which clamps; we refuse).
    rate_limit_max_seconds: int = 0xFFFF_FFFF // 1000


LIMITS = Limits()
