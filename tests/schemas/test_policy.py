"""schemas.policy: Tetragon TracingPolicy YAML -> checked models, and errors a person can act on."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from schemas.policy import (
    LIMITS,
    ActionSelector,
    Arg,
    ArgSelector,
    KProbeSpec,
    Metadata,
    Policy,
    PolicyError,
    Problem,
    Selector,
    TracepointSpec,
    TracingPolicy,
    TracingPolicyNamespaced,
    TracingPolicySpec,
    kprobe_syscall_name,
    load_policies,
    load_policy,
    resolve_match_index,
)

POLICIES = Path(__file__).parent / "policies"
TETRAGON_EXAMPLES = sorted((POLICIES / "tetragon").glob("*.yaml"))

# Paths the error tables point into.
K = "spec.kprobes[0]"
S = f"{K}.selectors[0]"
M = f"{S}.matchArgs[0]"
A = f"{S}.matchActions"
ALL_OPERATORS = (
    "Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix, Mask, GT, LT, InRange, NotInRange, "
    "SPort, NotSPort, SPortPriv, NotSPortPriv, DPort, NotDPort, DPortPriv, NotDPortPriv, SAddr, "
    "NotSAddr, DAddr, NotDAddr, Protocol, Family, State, InMap, NotInMap, CapabilitiesGained, "
    "SubString, SubStringIgnCase, FileType, NotFileType"
)


def policy_text(spec: str, *, name: str = "p", kind: str = "TracingPolicy") -> str:
    """A whole policy document around a ``spec:`` body written at column 0."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    head = f"apiVersion: cilium.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n"
    return f"{head}spec:\n{body}\n"


def load_error(text: str, **kwargs: str) -> PolicyError:
    """The PolicyError that loading ``text`` raises."""
    with pytest.raises(PolicyError) as caught:
        load_policies(text, **kwargs)
    return caught.value


def round_trip(policy: Policy) -> Policy:
    """The policy dumped with its YAML keys, written as YAML and loaded again."""
    dumped = policy.model_dump(by_alias=True, exclude_none=True)
    return load_policy(yaml.safe_dump(dumped, sort_keys=False))


OPENAT = """
kprobes:
- call: sys_openat
  args:
  - {{index: 0, type: int}}
  - {{index: 1, type: string}}
  - {{index: 2, type: int}}
  selectors:
  - matchArgs:
    - index: {index}
      operator: {operator}
      values: {values}
"""


def openat(operator: str, values: str, index: int = 1) -> str:
    """A sys_openat kprobe (dfd int, path string, flags int) filtering one arg, by default
    the path."""
    text = OPENAT.format(operator=operator, values=values, index=index)
    return policy_text(text, name="deny-shadow")


SOCKET = """
kprobes:
- call: tcp_connect
  syscall: false
  args: [{{index: 0, type: {type}}}]
  selectors:
  - matchArgs: [{{index: 0, operator: {operator}, values: {values}}}]
"""


def sock(operator: str, values: str, arg_type: str = "sock") -> str:
    """A tcp_connect kprobe filtering its socket (arg 0) with one operator."""
    return policy_text(SOCKET.format(operator=operator, values=values, type=arg_type))


def kprobe_with(
    selector: str, args: str = "[{index: 0, type: string}, {index: 1, type: int}]"
) -> str:
    """A kprobe with two args (a string, an int) and one selector written inline."""
    return policy_text(f"kprobes: [{{call: sys_openat, args: {args}, selectors: [{selector}]}}]")


def actions(*items: str) -> str:
    """A sys_kill kprobe whose one selector has these matchActions."""
    return policy_text(
        f"kprobes: [{{call: sys_kill, selectors: [{{matchActions: [{', '.join(items)}]}}]}}]"
    )


def quoted(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


# --- Tetragon's own policies --------------------------------------------------------------


def test_tetragon_examples_are_enough() -> None:
    """At least 15 of Tetragon's example policies are stored, each with its source."""
    assert len(TETRAGON_EXAMPLES) >= 15
    for path in TETRAGON_EXAMPLES:
        assert path.read_text().startswith("# Source: cilium/tetragon examples/"), path.name


@pytest.mark.parametrize("path", TETRAGON_EXAMPLES, ids=lambda p: p.stem)
def test_tetragon_example_loads_unchanged(path: Path) -> None:
    """A policy from Tetragon's examples and policy library loads as it is."""
    policy = load_policy(path.read_text(), source=path.name)
    assert policy.kind == "TracingPolicy"
    assert policy.spec.hooks()


@pytest.mark.parametrize("path", TETRAGON_EXAMPLES, ids=lambda p: p.stem)
def test_tetragon_example_round_trips(path: Path) -> None:
    """model_dump(by_alias) -> YAML -> model gives an equal policy."""
    policy = load_policy(path.read_text())
    assert round_trip(policy) == policy


def test_load_policy_canonicalises_tetragon_spellings() -> None:
    """Aliases Tetragon accepts load as the canonical names the enforcer compiles."""
    accept = load_policy((POLICIES / "tetragon" / "tcp-accept.yaml").read_text())
    hooks = [hook for _, hook in accept.spec.hooks()]
    operators = [m.operator for h in hooks for s in h.selectors for m in s.match_args]
    assert operators == ["Equal", "Family", "State", "Equal", "DAddr"]  # were family, state
    sigkill = load_policy((POLICIES / "tetragon" / "sys_write_sigkill.yaml").read_text())
    assert sigkill.spec.kprobes[3].selectors[0].match_actions[0].action == "Sigkill"  # SigKill


def test_load_policy_reads_bare_numbers_as_strings() -> None:
    """`values: [0x5412]` and `rateLimit: 5` hold the decimal text Tetragon stores."""
    tty = load_policy((POLICIES / "tetragon" / "policylibrary-tty-ioctl-observe.yaml").read_text())
    assert tty.spec.kprobes[0].selectors[0].match_args[0].values == [str(0x5412)]
    datagram = load_policy((POLICIES / "tetragon" / "datagram-with-sock-tracking.yaml").read_text())
    post = datagram.spec.kprobes[2].selectors[0].match_actions[0]
    assert (post.rate_limit, post.rate_limit_seconds) == ("5", 5)


def test_load_policy_applies_tetragon_crd_defaults() -> None:
    """Absent fields take the CRD defaults: syscall true, type auto, Effective capabilities."""
    policy = load_policy(
        policy_text("""
            kprobes:
            - call: sys_setns
              args: [{index: 1}]
              selectors:
              - matchCapabilities: [{operator: In, values: [cap_sys_admin]}]
        """)
    )
    kprobe = policy.spec.kprobes[0]
    assert (policy.spec.kprobe_is_syscall(kprobe), kprobe.args[0].type) == (True, "auto")
    caps = kprobe.selectors[0].match_capabilities[0]
    assert (caps.type, caps.values) == ("Effective", ["CAP_SYS_ADMIN"])


# --- Ocellus fixtures ---------------------------------------------------------------------


def test_load_policy_reads_every_selector_kind() -> None:
    """The deny-shadow fixture loads, values as written, typed fields typed."""
    policy = load_policy((POLICIES / "deny-shadow.yaml").read_text())
    openat = policy.spec.tracepoints[0]
    assert (openat.subsystem, openat.event, openat.tags) == (
        "syscalls",
        "sys_enter_openat",
        ["file", "etc"],
    )
    post = openat.selectors[1].match_actions[0]
    assert (post.rate_limit_seconds, post.rate_limit_scope) == (60, "process")
    connect = policy.spec.kprobes[0].selectors[0]
    assert connect.match_args[1].values == ["443", "8000:8999"]
    assert connect.match_pids[0].values == [1]
    assert connect.match_actions[0].arg_sig == 15
    assert policy.metadata.labels == {"app.kubernetes.io/part-of": "ocellus"}


def test_load_policies_reads_every_document() -> None:
    """Multi-document YAML gives one policy per non-empty document, in order."""
    policies = load_policies((POLICIES / "multi.yaml").read_text(), default_namespace="shop")
    assert [(p.kind, p.metadata.name) for p in policies] == [
        ("TracingPolicy", "exec-watch"),
        ("TracingPolicyNamespaced", "setuid-watch"),
    ]
    namespaced = policies[1]
    assert isinstance(namespaced, TracingPolicyNamespaced)
    assert namespaced.namespace == "shop"
    assert namespaced.spec.pod_selector is not None
    assert namespaced.spec.pod_selector.match_labels == {"app": "web"}


def test_load_policies_names_the_failing_document() -> None:
    """An error in the second document says which document it is."""
    text = (POLICIES / "multi.yaml").read_text().replace("operator: Equal", "operator: Equals")
    error = load_error(text)
    assert (error.policy, error.document) == ("setuid-watch", 2)
    assert str(error) == (
        f"policy 'setuid-watch' (document 2): {M}: "
        f"operator 'Equals' is not supported (supported: {ALL_OPERATORS})"
    )


def test_load_policies_refuses_a_name_used_twice() -> None:
    """Two documents defining the same policy are an error, not a silent override."""
    document = policy_text(
        "tracepoints: [{subsystem: sched, event: sched_process_exit}]", name="twice"
    )
    error = load_error(f"{document}---\n{document}")
    assert str(error) == "policy 'twice' (document 2): metadata.name: already used by document 1"


def test_load_policy_wants_exactly_one_document() -> None:
    """load_policy refuses a stream of several policies rather than picking one."""
    with pytest.raises(PolicyError, match=r"expected one policy document, found 2"):
        load_policy((POLICIES / "multi.yaml").read_text(), source="multi.yaml")


def test_load_policy_refuses_duplicate_keys() -> None:
    """A key given twice in one mapping is an error naming both places."""
    error = load_error((POLICIES / "duplicate-keys.yaml").read_text())
    assert str(error) == f"policy 'dup-selectors': {K}.selectors: duplicate key (first at line 9)"
    assert (error.problems[0].line, error.problems[0].column) == (13, 5)


def test_load_policy_reports_yaml_syntax_with_line_and_column() -> None:
    """Broken indentation names the file, the line and the column."""
    error = load_error((POLICIES / "bad-indentation.yaml").read_text(), source="bad-indent.yaml")
    message = "mapping values are not allowed here"
    assert str(error) == f"policy 'bad-indent.yaml': line 9, column 10: {message}"
    assert error.problems == [Problem("line 9, column 10", message, line=9, column=10)]


def test_load_policy_locates_semantic_problems() -> None:
    """A problem found after parsing still carries the line and column it points to."""
    error = load_error(openat("Foo", '["/etc/shadow"]'))
    assert (error.problems[0].line, error.problems[0].column) == (14, 9)  # the filter item


def test_load_policy_refuses_alias_bombs() -> None:
    """YAML aliases that expand past the node budget are refused before validation."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        below = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [" + ", ".join([f"*{below}"] * 10) + "]\n"
    assert "YAML nodes once aliases are expanded" in str(load_error(bomb))


# --- bad policies -> exact messages -------------------------------------------------------

HEAD = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: m\n"
SCHED = "{subsystem: sched, event: sched_process_exec}"
ARG_TYPES = (
    "auto, int, sint8, int8, uint8, sint16, int16, uint16, uint32, sint32, int32, ulong, uint64, "
    "size_t, long, sint64, int64, char_buf, char_iovec, skb, sock, sockaddr, socket, string, fd, "
    "file, filename, path, nop, bpf_attr, perf_event, bpf_map, user_namespace, capability, kiocb, "
    "iov_iter, cred, const_buf, load_info, module, syscall64, kernel_cap_t, cap_inheritable, "
    "cap_permitted, cap_effective, linux_binprm, data_loc, net_device, bpf_cmd, dentry, bpf_prog"
)
ACTIONS = (
    "Post, FollowFD, UnfollowFD, Sigkill, CopyFD, Override, GetUrl, DnsLookup, NoPost, Signal, "
    "TrackSock, UntrackSock, NotifyEnforcer, CleanupEnforcerNotification, Set"
)
NAMESPACES = "Uts, Ipc, Mnt, Pid, PidForChildren, Net, Time, TimeForChildren, Cgroup, User"
DNS_SUBDOMAIN = (
    "is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending "
    "with a letter or digit, at most 253 characters)"
)
FILE_TYPES = "sock, socket, lnk, link, reg, regular, blk, block, dir, chr, char, fifo, pipe"
SYSCALL_NAME = "is not a syscall name (expected sys_NAME, __<arch>_sys_NAME or NAME)"

BAD_POLICIES = [
    pytest.param(
        openat("Foo", '["/etc/shadow"]'),
        [f"{M}: operator 'Foo' is not supported (supported: {ALL_OPERATORS})"],
        id="unknown-operator",
    ),
    pytest.param(
        openat("Prefix", "[]"),
        [f"{M}.values: operator Prefix needs at least one value"],
        id="operator-without-values",
    ),
    pytest.param(
        openat("GT", '["10"]'),
        [f"{M}: operator GT needs an integer arg, but args[1] is string"],
        id="numeric-operator-on-string",
    ),
    pytest.param(
        openat("DAddr", '["10.0.0.1"]'),
        [f"{M}: operator DAddr needs a sock, skb, sockaddr or socket arg, but args[1] is string"],
        id="socket-operator-on-string",
    ),
    pytest.param(
        openat("Equal", '["/etc/shadow"]', index=5),
        [f"{M}.index: index 5 names no declared arg (declared indexes: 0, 1, 2)"],
        id="match-index-not-declared",
    ),
    pytest.param(
        sock("DPort", '["80", "70000", "8000:7000", "http"]'),
        [
            f"{M}.values[1]: 70000 is out of range 0..65535 for a port",
            f"{M}.values[2]: range '8000:7000' is empty (min > max)",
            f"{M}.values[3]: 'http' is not a port or a range 'min:max' of them",
        ],
        id="bad-ports",
    ),
    pytest.param(
        sock("DAddr", '["10.0.0.0/8", "2001:db8::/32", "10.0.0.300", "::1/129"]'),
        [
            f"{M}.values[2]: '10.0.0.300' is not an IPv4/IPv6 address or CIDR",
            f"{M}.values[3]: '::1/129' is not an IPv4/IPv6 address or CIDR",
        ],
        id="bad-addresses",
    ),
    pytest.param(
        sock("Protocol", '["IPPROTO_TCP", "17", "IPPROTO_QUIC"]'),
        [f"{M}.values[2]: 'IPPROTO_QUIC' is not a known protocol (IPPROTO_* name or a number)"],
        id="bad-protocol",
    ),
    pytest.param(
        sock("Family", '["AF_INET", "AF_INTE"]'),
        [f"{M}.values[1]: 'AF_INTE' is not a known address family (AF_* name or a number)"],
        id="bad-family",
    ),
    pytest.param(
        sock("Protocol", '["IPPROTO_TCP"]', arg_type="sockaddr"),
        [
            f"{M}: operator Protocol does not apply to sockaddr args (args[0]): a sockaddr "
            "carries one address, filtered with SAddr, SPort, SPortPriv and Family (DAddr and "
            "DPort where it is a destination)"
        ],
        id="protocol-of-a-sockaddr",
    ),
    pytest.param(
        sock("SPortPriv", '["22"]'),
        [f"{M}.values: operator SPortPriv takes no values"],
        id="priv-port-with-values",
    ),
    pytest.param(
        sock("Equal", '["1"]'),
        [
            f"{M}: operator Equal needs a string, number or capability arg (sockets take SAddr, "
            "DAddr, SPort, ...), but args[0] is sock"
        ],
        id="equal-on-a-sock",
    ),
    pytest.param(
        openat("Mask", '["0x40", "0b11", "017", "0x1G", "08"]', index=2),
        [
            f"{M}.values[3]: '0x1G' is not a number (decimal, 0x hex, 0o octal or 0b binary)",
            f"{M}.values[4]: '08' is not a number (a leading 0 means octal)",
        ],
        id="bad-numbers",
    ),
    pytest.param(
        openat("InRange", '["1:5", "7", "9:2"]', index=2),
        [
            f"{M}.values[1]: '7' is not a range 'min:max'",
            f"{M}.values[2]: range '9:2' is empty (min > max)",
        ],
        id="bad-ranges",
    ),
    pytest.param(
        openat("Equal", '["3000000000"]', index=2),
        [f"{M}.values[0]: 3000000000 is out of range -2147483648..2147483647 for type int"],
        id="value-outside-its-type",
    ),
    pytest.param(
        openat("InMap", '["list:nope"]', index=2),
        [f"{M}.values[0]: 'list:nope' names no list in spec.lists"],
        id="inmap-unknown-list",
    ),
    pytest.param(
        kprobe_with(
            "{matchArgs: [{index: 1, operator: FileType, values: [reg, socket, device]}]}",
            args="[{index: 1, type: file}]",
        ),
        [f"{M}.values[2]: 'device' is not a file type ({FILE_TYPES})"],
        id="bad-file-type",
    ),
    pytest.param(
        kprobe_with("{matchReturnArgs: [{index: 0, operator: LT, values: ['0']}]}"),
        [f"{S}.matchReturnArgs: needs return: true and a returnArg on the hook"],
        id="return-filter-without-return",
    ),
    pytest.param(
        policy_text("kprobes: [{call: sys_openat, return: true}]"),
        [f"{K}: return: true needs returnArg (the type of the return value)"],
        id="return-without-type",
    ),
    pytest.param(
        actions("{action: Signal}", "{action: post, argSig: 9, rateLimitScope: thread}"),
        [
            f"{A}[0]: action Signal needs argSig (a signal number 1..64)",
            f"{A}[1].argSig: does not apply to action Post",
            f"{A}[1].rateLimitScope: needs rateLimit",
        ],
        id="action-parameters",
    ),
    pytest.param(
        actions("{action: Signal, argSig: 65}"),
        [f"{A}[0].argSig: must be at most 64 (got 65)"],
        id="signal-out-of-range",
    ),
    pytest.param(
        actions("{action: Post}", "{action: NoPost}"),
        [f"{A}: actions NoPost and Post contradict each other"],
        id="contradicting-actions",
    ),
    pytest.param(
        actions("{action: Kill}"),
        [f"{A}[0].action: action 'Kill' is not supported (supported: {ACTIONS})"],
        id="unknown-action",
    ),
    pytest.param(
        actions("{action: Post, rateLimit: 5d}"),
        [f"{A}[0].rateLimit: rateLimit '5d' is not a duration like 30, 30s, 5m or 1h"],
        id="bad-rate-limit",
    ),
    pytest.param(
        actions("{action: NotifyEnforcer, argSig: 9}"),
        [f"{A}[0]: action NotifyEnforcer needs spec.enforcers"],
        id="notify-without-enforcer",
    ),
    pytest.param(
        policy_text(
            "tracepoints: [{subsystem: sched, event: sched_process_exec, "
            "selectors: [{matchActions: [{action: Override, argError: -1}]}]}]"
        ),
        [
            "spec.tracepoints[0].selectors[0].matchActions[0]: action Override needs a kprobe, "
            "LSM hook or uprobe; this hook cannot change a return value"
        ],
        id="override-on-a-tracepoint",
    ),
    pytest.param(
        kprobe_with(
            "{matchBinaries: [{operator: Prefix, values: [usr/bin], followChildren: true}, "
            "{operator: In, values: [/bin/sh]}]}"
        ),
        [
            f"{S}.matchBinaries: more than 1 matchBinaries filters "
            "(limit match_binaries_per_selector; got 2)",
            f"{S}.matchBinaries[0].values[0]: 'usr/bin' is not an absolute path",
            f"{S}.matchBinaries[0].followChildren: followChildren works with In and NotIn, "
            "not Prefix",
        ],
        id="bad-match-binaries",
    ),
    pytest.param(
        kprobe_with("{matchBinaries: [{operator: Contains, values: [/bin/sh]}]}"),
        [
            f"{S}.matchBinaries[0]: operator 'Contains' is not supported "
            "(supported: In, NotIn, Prefix, NotPrefix, Postfix, NotPostfix)"
        ],
        id="unknown-binaries-operator",
    ),
    pytest.param(
        kprobe_with("{matchPIDs: [{operator: In, values: [1, -1]}]}"),
        [f"{S}.matchPIDs[0].values[1]: must be at least 0 (got -1)"],
        id="negative-pid",
    ),
    pytest.param(
        kprobe_with("{matchPIDs: [{operator: Equal, values: [1]}]}"),
        [f"{S}.matchPIDs[0]: operator 'Equal' is not supported (supported: In, NotIn)"],
        id="pid-operator",
    ),
    pytest.param(
        kprobe_with(
            "{matchNamespaces: [{namespace: Mount, operator: In, values: [host_ns]}, "
            "{namespace: net, operator: NotIn, values: [host, '4026531840']}]}"
        ),
        [
            f"{S}.matchNamespaces[0].namespace: namespace 'Mount' is not supported "
            f"(supported: {NAMESPACES})",
            f"{S}.matchNamespaces[1].values[0]: 'host' is neither a namespace inode number "
            "nor 'host_ns'",
        ],
        id="bad-namespaces",
    ),
    pytest.param(
        kprobe_with(
            "{matchCapabilities: [{type: Bounding, operator: In, values: [CAP_SYS_ADMN]}]}"
        ),
        [
            f"{S}.matchCapabilities[0].type: capability type 'Bounding' is not supported "
            "(supported: Effective, Inheritable, Permitted)",
            f"{S}.matchCapabilities[0].values[0]: 'CAP_SYS_ADMN' is not a Linux capability "
            "(CAP_CHOWN ... CAP_CHECKPOINT_RESTORE)",
        ],
        id="bad-capabilities",
    ),
    pytest.param(
        kprobe_with(
            "{}",
            args="[{index: 0, type: int, sizeArgIndex: 3, returnCopy: true}, "
            "{index: 1, type: char_buf, sizeArgIndex: 16, maxData: true, returnCopy: true}]",
        ),
        [
            f"{K}.args[0].sizeArgIndex: only char_buf and char_iovec args take a size, not int",
            f"{K}.args[0].returnCopy: only char_buf and char_iovec args are copied on return, "
            "not int",
            f"{K}.args[1].sizeArgIndex: at most 15 (limit size_arg_index_max)",
            f"{K}.args[1]: maxData and returnCopy cannot be combined (Tetragon reads maxData on "
            "entry only)",
        ],
        id="buffer-options-on-the-wrong-arg",
    ),
    pytest.param(
        kprobe_with("{machArgs: []}"),
        [f"{S}.machArgs: unknown field (did you mean 'matchArgs'?)"],
        id="misspelt-key",
    ),
    pytest.param(
        policy_text("kprobes: [{call: fd_install, syscall: false, data: [{index: 0, type: int}]}]"),
        [f"{K}.data: data fields (data) are a Tetragon feature Ocellus does not support"],
        id="tetragon-feature-not-supported",
    ),
    pytest.param(
        policy_text(
            "kprobes: [{call: sys_openat, args: [{type: string}, {index: '1', type: intt}]}]"
        ),
        [
            f"{K}.args[0].index: required field is missing",
            f"{K}.args[1].index: expected an integer, got a string ('1')",
            f"{K}.args[1].type: type 'intt' is not supported (supported: {ARG_TYPES})",
        ],
        id="bad-args",
    ),
    pytest.param(
        kprobe_with("{matchArgs: [{index: 0, operator: Equal, values: [true]}]}"),
        [f"{M}.values[0]: expected a string, got a boolean (True)"],
        id="boolean-value",
    ),
    pytest.param(
        policy_text("kprobes: [{call: __ia32_compat_sys_openat}]"),
        [
            f"{K}.call: '__ia32_compat_sys_openat' is a compat syscall entry; it has no "
            "sys_enter_* tracepoint; for a kernel function set syscall: false"
        ],
        id="compat-syscall",
    ),
    pytest.param(
        policy_text("kprobes: [{call: 'list:dups'}]"),
        [f"{K}.call: 'list:dups' names no list in spec.lists"],
        id="call-unknown-list",
    ),
    pytest.param(
        policy_text("""
            lists:
            - {name: dups, type: syscalls, values: [sys_dup]}
            - {name: dups, type: generated_syscalls, values: [sys_dup2]}
            - {name: fns, type: generated_ftrace}
            - {name: bad, type: kernel, values: [x]}
            kprobes: [{call: 'list:dups'}]
        """),
        [
            "spec.lists[1].name: list 'dups' is defined twice",
            "spec.lists[1].values: a generated_syscalls list is generated; it takes no values",
            "spec.lists[2]: a generated_ftrace list needs a pattern (a regular expression)",
            "spec.lists[3].type: type 'kernel' is not supported (supported: syscalls, "
            "generated_syscalls, generated_ftrace, ftrace)",
        ],
        id="bad-lists",
    ),
    pytest.param(
        policy_text("kprobes: []"),
        ["spec: declares no hooks (kprobes, tracepoints, lsmhooks, uprobes or usdts)"],
        id="no-hooks",
    ),
    pytest.param(
        HEAD.replace("name: m", "name: Deny_Shadow") + f"spec: {{tracepoints: [{SCHED}]}}\n",
        [f"metadata.name: 'Deny_Shadow' {DNS_SUBDOMAIN}"],
        id="name-not-dns",
    ),
    pytest.param(
        HEAD.replace("  name: m\n", "  labels: {app: web}\n") + "spec: {}\n",
        ["metadata.name: required field is missing"],
        id="name-missing",
    ),
    pytest.param(
        HEAD + f"  namespace: shop\nspec: {{tracepoints: [{SCHED}]}}\n",
        [
            "metadata.namespace: a TracingPolicy is cluster-wide; use kind "
            "TracingPolicyNamespaced to limit it to one namespace"
        ],
        id="namespace-on-cluster-policy",
    ),
    pytest.param(
        HEAD.replace("kind: TracingPolicy", "kind: TracingPolicyNamespaced")
        + f"spec: {{hostSelector: {{}}, tracepoints: [{SCHED}]}}\n",
        ["spec.hostSelector: a TracingPolicyNamespaced applies to pods, not hosts"],
        id="host-selector-on-namespaced",
    ),
    pytest.param(
        HEAD.replace("cilium.io/v1alpha1", "cilium.io/v1") + "spec: {}\n",
        ["apiVersion: 'cilium.io/v1' is not supported (supported: cilium.io/v1alpha1)"],
        id="api-version",
    ),
    pytest.param(
        HEAD.replace("kind: TracingPolicy", "kind: NetworkPolicy") + "spec: {}\n",
        [
            "kind: 'NetworkPolicy' is not supported (supported: TracingPolicy, "
            "TracingPolicyNamespaced)"
        ],
        id="kind",
    ),
    pytest.param(
        policy_text(f"""
            podSelector:
              matchExpressions: [{{key: app, operator: In}}]
            containerSelector:
              matchLabels: {{image: nginx}}
            tracepoints: [{SCHED}]
        """),
        [
            "spec.podSelector.matchExpressions[0].values: operator In needs at least one value",
            "spec.containerSelector.matchLabels: key 'image' is not supported; containers are "
            "selected by 'name' or 'repo'",
        ],
        id="label-selectors",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_POLICIES)
def test_load_policy_rejects_with_exact_message(text: str, expected: list[str]) -> None:
    """A bad policy fails with every problem, each as path: message."""
    error = load_error(text)
    assert [str(problem) for problem in error.problems] == expected
    assert str(error) == "\n".join(f"policy {error.policy!r}: {line}" for line in expected)


def test_policy_error_names_the_policy() -> None:
    """The error carries the policy name and the problems as fields, and survives pickling."""
    error = load_error(openat("Foo", '["/etc/shadow"]'))
    assert (error.policy, error.document) == ("deny-shadow", None)
    assert str(error).startswith(f"policy 'deny-shadow': {M}: operator 'Foo' is not supported")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - bytes this test just made
    assert (copy.policy, copy.problems, str(copy)) == (error.policy, error.problems, str(error))


def test_problem_prints_as_path_and_message() -> None:
    """A problem prints as path: message; line and column stay out of the text."""
    problem = Problem(f"{K}.call", "required field is missing", line=7, column=5)
    assert str(problem) == f"{K}.call: required field is missing"
    assert str(Problem("", "not valid YAML")) == "not valid YAML"


# --- limits -------------------------------------------------------------------------------


def selectors(count: int) -> str:
    """A tracepoint with ``count`` selectors."""
    return policy_text(
        "tracepoints:\n- subsystem: sched\n  event: sched_process_exec\n  selectors:\n"
        + "  - matchActions: [{action: Post}]\n" * count
    )


def numbers(count: int, start: int = 0, prefix: str = "") -> str:
    """``count`` comma-separated numbers from ``start``, optionally prefixed (``f0, f1``)."""
    return ", ".join(f"{prefix}{start + i}" for i in range(count))


LIMIT_CASES = [
    pytest.param(
        selectors(LIMITS.selectors_per_hook + 1),
        "spec.tracepoints[0].selectors: more than 8 selectors (limit selectors_per_hook; got 9)",
        id="selectors_per_hook",
    ),
    pytest.param(
        kprobe_with(
            "{matchArgs: [" + ", ".join(["{index: 1, operator: GT, values: ['1']}"] * 6) + "]}"
        ),
        f"{S}.matchArgs: more than 5 matchArgs filters (limit match_args_per_selector; got 6)",
        id="match_args_per_selector",
    ),
    pytest.param(
        kprobe_with(
            "{matchArgs: [{index: 0, operator: Prefix, values: "
            + quoted([f"/p{i}" for i in range(65)])
            + "}]}"
        ),
        f"{M}.values: more than 64 values for operator Prefix (limit values_per_match; got 65)",
        id="values_per_match",
    ),
    pytest.param(
        kprobe_with(f"{{matchArgs: [{{index: 1, operator: GT, values: [{numbers(9)}]}}]}}"),
        f"{M}.values: more than 8 values for operator GT (limit compare_values_per_match; got 9)",
        id="compare_values_per_match",
    ),
    pytest.param(
        kprobe_with("{matchArgs: [{index: 0, operator: Prefix, values: ['/" + "x" * 255 + "']}]}"),
        f"{M}.values[0]: 256 bytes; at most 255 bytes per value (limit string_value_bytes)",
        id="string_value_bytes",
    ),
    pytest.param(
        kprobe_with(
            "{matchBinaries: [{operator: In, values: "
            + quoted([f"/bin/b{i}" for i in range(65)])
            + "}]}"
        ),
        f"{S}.matchBinaries[0].values: more than 64 paths (limit binary_values_per_match; got 65)",
        id="binary_values_per_match",
    ),
    pytest.param(
        kprobe_with(f"{{matchPIDs: [{{operator: In, values: [{numbers(17)}]}}]}}"),
        f"{S}.matchPIDs[0].values: more than 16 PIDs (limit pid_values_per_match; got 17)",
        id="pid_values_per_match",
    ),
    pytest.param(
        kprobe_with(
            "{}", args="[" + ", ".join(f"{{index: {i}, type: int}}" for i in range(7)) + "]"
        ),
        f"{K}.args: more than 6 args (limit args_per_hook; got 7)",
        id="args_per_hook",
    ),
    pytest.param(
        actions(
            "{action: Post}",
            "{action: Sigkill}",
            "{action: Override}",
            "{action: DnsLookup, argFqdn: c}",
        ),
        f"{A}: more than 3 actions (limit actions_per_selector; got 4)",
        id="actions_per_selector",
    ),
    pytest.param(
        kprobe_with(
            "{matchNamespaces: [{namespace: Net, operator: In, "
            f"values: [{numbers(17, start=4026531840)}]}}]}}"
        ),
        f"{S}.matchNamespaces[0].values: more than 16 namespaces "
        "(limit namespace_values_per_match; got 17)",
        id="namespace_values_per_match",
    ),
    pytest.param(
        policy_text(
            f"tracepoints: [{{subsystem: a, event: b, tags: [{numbers(17, prefix='t')}]}}]"
        ),
        "spec.tracepoints[0].tags: more than 16 tags (limit tags_per_hook; got 17)",
        id="tags_per_hook",
    ),
    pytest.param(
        policy_text("tracepoints: [{subsystem: a, event: b, message: " + "m" * 257 + "}]"),
        "spec.tracepoints[0].message: 257 characters; at most 256 (limit message_chars)",
        id="message_chars",
    ),
    pytest.param(
        policy_text("tracepoints: [" + ", ".join([SCHED] * 65) + "]"),
        "spec: more than 64 hooks (limit hooks_per_policy; got 65)",
        id="hooks_per_policy",
    ),
    pytest.param(
        policy_text(
            f"lists: [{{name: fns, values: [{numbers(1025, prefix='f')}]}}]\n"
            "kprobes: [{call: 'list:fns', syscall: false}]"
        ),
        "spec.lists[0].values: more than 1024 values (limit list_values; got 1025)",
        id="list_values",
    ),
    pytest.param(
        actions("{action: Post, rateLimit: 1194h}"),
        f"{A}[0].rateLimit: rateLimit '1194h' is more than 4294967 seconds "
        "(limit rate_limit_max_seconds)",
        id="rate_limit_max_seconds",
    ),
]


@pytest.mark.parametrize(("text", "expected"), LIMIT_CASES)
def test_limit_exceeded_is_an_error_naming_the_limit(text: str, expected: str) -> None:
    """One past a limit is refused with the limit's name; nothing is truncated."""
    assert [str(p) for p in load_error(text).problems] == [expected]


def test_limits_are_at_least_tetragons() -> None:
    """Our limits are never below Tetragon's (the issue asks for at least 5 selectors)."""
    assert LIMITS.selectors_per_hook >= 5
    assert LIMITS.match_args_per_selector >= 5
    assert LIMITS.compare_values_per_match >= 4
    assert LIMITS.actions_per_selector >= 3
    assert LIMITS.namespace_values_per_match >= 4


def test_limit_reached_is_accepted() -> None:
    """Exactly at a limit loads: the limits are inclusive."""
    policy = load_policy(selectors(LIMITS.selectors_per_hook))
    assert len(policy.spec.tracepoints[0].selectors) == LIMITS.selectors_per_hook
    longest = "/" + "x" * (LIMITS.string_value_bytes - 1)
    values = quoted([longest] * LIMITS.values_per_match)
    load_policy(kprobe_with(f"{{matchArgs: [{{index: 0, operator: Prefix, values: {values}}}]}}"))


# --- arg indexes --------------------------------------------------------------------------


def tracepoint(*indexes: int) -> TracepointSpec:
    args = [Arg(index=i) for i in indexes]
    return TracepointSpec(subsystem="syscalls", event="sys_enter_mkdirat", args=args)


def raw_tracepoint(*indexes: int) -> TracepointSpec:
    args = [Arg(index=i, type="linux_binprm") for i in indexes]
    return TracepointSpec(subsystem="sched", event="sched_process_exec", raw=True, args=args)


def kprobe(*indexes: int) -> KProbeSpec:
    return KProbeSpec(call="sys_mkdirat", args=[Arg(index=i, type="int") for i in indexes])


@pytest.mark.parametrize(
    ("hook", "match_index", "position"),
    [
        pytest.param(kprobe(0, 1, 2), 1, 1, id="kprobe-function-position"),
        pytest.param(kprobe(2, 0), 0, 1, id="kprobe-args-out-of-order"),
        pytest.param(tracepoint(5, 6), 6, 1, id="tracepoint-format-field"),
        pytest.param(tracepoint(5, 6), 1, 1, id="tracepoint-older-spec-position"),
        pytest.param(tracepoint(4), 4, 0, id="raw-syscalls-id"),
        pytest.param(tracepoint(4), 0, 0, id="raw-syscalls-id-by-position"),
        pytest.param(tracepoint(0, 1), 1, 1, id="field-and-position-agree"),
        pytest.param(raw_tracepoint(2), 2, 0, id="raw-tracepoint-argument-position"),
    ],
)
def test_resolve_match_index_finds_the_spec_arg(
    hook: KProbeSpec | TracepointSpec, match_index: int, position: int
) -> None:
    """matchArgs.index resolves to a spec-arg position the way Tetragon remaps it."""
    assert resolve_match_index(hook, match_index) == position


@pytest.mark.parametrize(
    ("hook", "match_index", "message"),
    [
        pytest.param(
            kprobe(0, 1),
            2,
            "index 2 names no declared arg (declared indexes: 0, 1)",
            id="undeclared",
        ),
        pytest.param(kprobe(), 0, "index 0 names no declared arg (no args declared)", id="no-args"),
        pytest.param(
            kprobe(1, 1),
            1,
            "index 1 is ambiguous: args[0] and args[1] all read index 1; name one with args: [N]",
            id="declared-twice",
        ),
        pytest.param(
            tracepoint(5, 6),
            7,
            "index 7 names no declared arg: neither a format-field index of an arg (5, 6) nor a "
            "spec-arg position (0..1)",
            id="tracepoint-out-of-range",
        ),
        pytest.param(
            tracepoint(4, 5, 6, 7, 8),
            4,
            "index 4 is ambiguous: args[0] reads format field 4 and args[4] is spec arg 4; "
            "write args: [0] or args: [4] instead",
            id="tracepoint-field-or-position",
        ),
    ],
)
def test_resolve_match_index_explains_what_it_cannot_resolve(
    hook: KProbeSpec | TracepointSpec, match_index: int, message: str
) -> None:
    """An index naming no arg, or two, raises saying how to fix it."""
    with pytest.raises(ValueError, match=r"^index") as caught:
        resolve_match_index(hook, match_index)
    assert str(caught.value) == message


def test_tracepoint_match_args_may_name_spec_args_explicitly() -> None:
    """`args: [N]` picks a spec arg by position: the way out of an ambiguous index."""
    text = policy_text("""
        tracepoints:
        - subsystem: syscalls
          event: sys_enter_openat
          args: [{index: 4}, {index: 5}, {index: 6, type: string}, {index: 7}, {index: 8}]
          selectors:
          - matchArgs: [{args: [2], operator: Prefix, values: [/etc/]}]
    """)
    assert load_policy(text).spec.tracepoints[0].selectors[0].match_args[0].args == [2]
    ambiguous = text.replace("{args: [2],", "{index: 4,")
    assert [str(p) for p in load_error(ambiguous).problems] == [
        "spec.tracepoints[0].selectors[0].matchArgs[0].index: index 4 is ambiguous: args[0] "
        "reads format field 4 and args[4] is spec arg 4; write args: [0] or args: [4] instead"
    ]


def test_kprobe_on_a_list_takes_the_lists_kind() -> None:
    """`call: list:NAME` hooks syscalls or kernel functions as the list's type says."""
    text = policy_text("""
        lists:
        - {name: dups, type: syscalls, values: [sys_dup, sys_dup2]}
        - {name: ksys, type: generated_ftrace, pattern: "^ksys_"}
        kprobes: [{call: "list:dups"}, {call: "list:ksys"}]
    """)
    spec = load_policy(text).spec
    assert [spec.kprobe_is_syscall(k) for k in spec.kprobes] == [True, False]
    contradicted = text.replace('{call: "list:ksys"}', '{call: "list:ksys", syscall: true}')
    assert [str(p) for p in load_error(contradicted).problems] == [
        "spec.kprobes[1].syscall: list 'ksys' holds kernel functions; leave syscall out"
    ]


# --- syscall names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        pytest.param("sys_openat", "openat", id="sys-prefix"),
        pytest.param("__x64_sys_openat", "openat", id="x64"),
        pytest.param("openat", "openat", id="bare"),
    ],
)
def test_kprobe_syscall_name_normalises(call: str, name: str) -> None:
    """Every spelling of a syscall kprobe gives the name of its sys_enter_* tracepoint."""
    assert kprobe_syscall_name(call) == name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            "list:dups",
            "'list:dups' is a list reference; name the list's syscalls one by one",
            id="list",
        ),
        pytest.param(
            "__x64_compat_sys_open",
            "'__x64_compat_sys_open' is a compat syscall entry; it has no sys_enter_* tracepoint",
            id="compat",
        ),
        pytest.param(
            "__x64_do_sys_open",
            "'__x64_do_sys_open' is not a syscall entry point (expected __x64_sys_NAME)",
            id="arch-not-sys",
        ),
        pytest.param(
            "__arm64_sys_openat",
            "'__arm64_sys_openat' is a __arm64_ entry point; this machine's syscalls are "
            "__x64_sys_NAME (or write sys_NAME)",
            id="other-arch",
        ),
        pytest.param(
            "__ia32_sys_setuid16",
            "'__ia32_sys_setuid16' is a __ia32_ entry point; this machine's syscalls are "
            "__x64_sys_NAME (or write sys_NAME)",
            id="ia32",
        ),
        pytest.param("__sys_setuid", f"'__sys_setuid' {SYSCALL_NAME}", id="helper"),
        pytest.param("sys_open at", f"'sys_open at' {SYSCALL_NAME}", id="space"),
        pytest.param("", f"'' {SYSCALL_NAME}", id="empty"),
    ],
)
def test_kprobe_syscall_name_refuses_non_syscalls(call: str, message: str) -> None:
    """What names no native syscall raises with the reason."""
    with pytest.raises(ValueError, match=r"^'") as caught:
        kprobe_syscall_name(call)
    assert str(caught.value) == message


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "values", "arg_type"),
    [
        pytest.param("DPort", ["0", "65535", "1024:2048"], "sock", id="ports"),
        pytest.param(
            "SAddr",
            ["10.0.0.1", "10.0.0.0/8", "2001:db8::1", "2001:db8::/32", "10.1.2.3/8"],
            "skb",
            id="addresses",
        ),
        pytest.param(
            "Protocol", ["IPPROTO_TCP", "17", "6:17", "IPPROTO_MPTCP"], "socket", id="protocols"
        ),
        pytest.param("Family", ["AF_INET", "AF_INET6", "AF_UNIX", "10"], "sockaddr", id="families"),
        pytest.param("State", ["TCP_ESTABLISHED", "TCP_SYN_RECV", "10"], "sock", id="tcp-states"),
        pytest.param("SPortPriv", [], "sockaddr", id="privileged-port"),
    ],
)
def test_socket_values_accepted(operator: str, values: list[str], arg_type: str) -> None:
    """Ports and port ranges, IPv4/IPv6 addresses and CIDRs, protocol and family names load."""
    load_policy(sock(operator, quoted(values), arg_type=arg_type))


@pytest.mark.parametrize(
    ("operator", "values", "arg_type"),
    [
        pytest.param("Mask", ["0x40", "0o17", "017", "0b101", "1"], "uint32", id="mask-bases"),
        pytest.param("GT", ["-1", "0x7fffffff"], "int", id="signed-compare"),
        pytest.param("InRange", ["0:10", "0x10:0x20", "-5:5"], "int64", id="ranges"),
        pytest.param("InMap", ["1", "100:200"], "uint64", id="map"),
        pytest.param("Equal", ["18446744073709551615"], "uint64", id="u64-max"),
        pytest.param(
            "Equal", ["CAP_SYS_ADMIN,CAP_NET_RAW", "0x200000"], "kernel_cap_t", id="capability-mask"
        ),
    ],
)
def test_numeric_values_accepted(operator: str, values: list[str], arg_type: str) -> None:
    """Decimal, hex, octal and binary numbers and ranges within the arg's type load."""
    selector = f"{{matchArgs: [{{index: 1, operator: {operator}, values: {quoted(values)}}}]}}"
    load_policy(kprobe_with(selector, args=f"[{{index: 1, type: {arg_type}}}]"))


# --- the models themselves ----------------------------------------------------------------


def test_models_are_built_by_python_name_and_dump_yaml_keys() -> None:
    """Models take snake_case names in Python and dump Tetragon's camelCase keys."""
    prefix = ArgSelector(index=1, operator="Prefix", values=["/etc/"])
    post = ActionSelector(action="Post", rate_limit="10s")
    kprobe = KProbeSpec(
        call="sys_openat",
        args=[Arg(index=1, type="string")],
        selectors=[Selector(match_args=[prefix], match_actions=[post])],
    )
    policy = TracingPolicy(
        metadata=Metadata(name="open-etc"), spec=TracingPolicySpec(kprobes=[kprobe])
    )
    dumped = policy.model_dump(by_alias=True, exclude_none=True)
    assert dumped["apiVersion"] == "cilium.io/v1alpha1"
    selector = dumped["spec"]["kprobes"][0]["selectors"][0]
    assert selector["matchArgs"] == [{"index": 1, "operator": "Prefix", "values": ["/etc/"]}]
    assert selector["matchPIDs"] == []
    assert selector["matchActions"][0]["rateLimit"] == "10s"
    assert round_trip(policy) == policy


def test_models_run_the_semantic_checks_too() -> None:
    """Building a bad policy in Python fails like loading it: no model is ever unchecked."""
    kprobe = KProbeSpec(
        call="sys_openat",
        args=[Arg(index=0)],
        selectors=[Selector(match_args=[ArgSelector(operator="Foo")])],
    )
    with pytest.raises(ValidationError, match=r"operator 'Foo' is not supported"):
        TracingPolicy(metadata=Metadata(name="m"), spec=TracingPolicySpec(kprobes=[kprobe]))


def test_models_are_frozen() -> None:
    """A loaded policy cannot be changed in place."""
    policy = load_policy((POLICIES / "deny-shadow.yaml").read_text())
    with pytest.raises(ValidationError):
        policy.metadata.name = "other"  # type: ignore[misc]


def test_null_fields_count_as_absent() -> None:
    """`selectors:` with nothing after it is an absent field, as in Kubernetes."""
    policy = load_policy(policy_text("kprobes:\n- call: sys_sync\n  selectors:\n  args:\n"))
    assert policy.spec.kprobes[0].selectors == []


def test_zero_parameters_count_as_unset() -> None:
    """Generated policies spell out zero parameters; those belong to no action."""
    load_policy(actions("{action: Post, argFd: 0, argSig: 0, argUrl: ''}"))


def test_namespaced_policy_keeps_its_own_namespace() -> None:
    """A namespace in the document wins over the one it is applied to."""
    text = policy_text(f"tracepoints: [{SCHED}]", kind="TracingPolicyNamespaced")
    text = text.replace("  name: p\n", "  name: p\n  namespace: payments\n")
    policy = load_policy(text, default_namespace="default")
    assert isinstance(policy, TracingPolicyNamespaced)
    assert policy.namespace == "payments"
