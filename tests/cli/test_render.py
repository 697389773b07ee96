"""Compact lines and raw-record views."""

from __future__ import annotations

import pytest

from schemas.events import (
    Container,
    GetEventsResponse,
    KprobeArgument,
    KprobeSockaddr,
    Pod,
    Process,
    ProcessExec,
    ProcessExit,
    ProcessKprobe,
    ProcessTracepoint,
)
from services.cli.events import EventFilter
from services.cli.render import compact

NODE = "node-1"
T = 1_700_000_000_000_000_000


def _exec(process: Process) -> GetEventsResponse:
    return GetEventsResponse(process_exec=ProcessExec(process=process), node_name=NODE, time=T)


def test_compact_exec_on_host_uses_node_name() -> None:
    """A host process is shown with the node name."""
    line = compact(_exec(Process(pid=1, binary="/bin/ls", arguments="-l /tmp")))
    assert line == "🚀 process node-1 /bin/ls -l /tmp"


def test_compact_exec_in_pod_and_container() -> None:
    """A pod shows namespace/name; a plain container shows its name."""
    pod = Pod(namespace="web", name="api-1")
    assert (
        compact(_exec(Process(pid=1, binary="/bin/sh", pod=pod))) == "🚀 process web/api-1 /bin/sh"
    )
    plain = Pod(container=Container(name="redis"))
    assert compact(_exec(Process(pid=1, binary="/x", pod=plain))) == "🚀 process redis /x"


def test_compact_exit_shows_signal_or_status() -> None:
    """Exit lines end with the signal name, else the exit status."""
    p = Process(pid=1, binary="/bin/sleep", arguments="30")
    killed = GetEventsResponse(
        process_exit=ProcessExit(process=p, signal="SIGKILL"), node_name=NODE, time=T
    )
    assert compact(killed) == "💥 exit    node-1 /bin/sleep 30 SIGKILL"
    failed = GetEventsResponse(
        process_exit=ProcessExit(process=p, status=2), node_name=NODE, time=T
    )
    assert compact(failed) == "💥 exit    node-1 /bin/sleep 30 2"


def _kprobe(function: str, *args: KprobeArgument, action: str = "KPROBE_ACTION_POST") -> str:
    hook = ProcessKprobe(
        process=Process(pid=7, binary="/bin/cat", arguments="/etc/hostname"),
        function_name=function,
        args=list(args),
        action=action,
        policy_name="p",
    )
    line = compact(GetEventsResponse(process_kprobe=hook, node_name=NODE, time=T))
    assert line is not None
    return line


@pytest.mark.parametrize(
    ("function", "args", "expected"),
    [
        pytest.param(
            "__x64_sys_openat",
            [KprobeArgument(int_arg=-100), KprobeArgument(string_arg="/etc/hostname")],
            "📬 openat  node-1 /bin/cat /etc/hostname",
            id="openat-path",
        ),
        pytest.param(
            "__x64_sys_connect",
            [
                KprobeArgument(int_arg=3),
                KprobeArgument(
                    sockaddr_arg=KprobeSockaddr(family="AF_INET", addr="127.0.0.1", port=80)
                ),
            ],
            "🔌 connect node-1 /bin/cat 127.0.0.1:80",
            id="connect-v4",
        ),
        pytest.param(
            "__x64_sys_connect",
            [KprobeArgument(sockaddr_arg=KprobeSockaddr(family="AF_INET6", addr="::1", port=443))],
            "🔌 connect node-1 /bin/cat [::1]:443",
            id="connect-v6",
        ),
        pytest.param(
            "__x64_sys_setuid",
            [KprobeArgument(uint_arg=0)],
            "🔑 setuid  node-1 /bin/cat 0",
            id="setuid-number",
        ),
        pytest.param(
            "__x64_sys_bpf",
            [KprobeArgument(bpf_cmd_arg="BPF_PROG_LOAD"), KprobeArgument(size_arg=128)],
            "🐝 bpf     node-1 /bin/cat BPF_PROG_LOAD",
            id="bpf-command",
        ),
        pytest.param(
            "__x64_sys_mount",
            [KprobeArgument(string_arg="tmpfs"), KprobeArgument(string_arg="/mnt/a b")],
            "💾 mount   node-1 /bin/cat tmpfs '/mnt/a b'",
            id="mount-quoted",
        ),
        pytest.param(
            "__x64_sys_renameat2",
            [KprobeArgument(string_arg="/a"), KprobeArgument(string_arg="/b")],
            "🔀 renameat2 node-1 /bin/cat /a -> /b",
            id="rename-pair",
        ),
        pytest.param(
            "__x64_sys_write",
            [KprobeArgument(int_arg=1), KprobeArgument(bytes_arg=b"hi\n")],
            "✍ write   node-1 /bin/cat 'hi\\n'",
            id="write-bytes",
        ),
        pytest.param(
            "__x64_sys_unlinkat",
            [KprobeArgument(), KprobeArgument(string_arg="/tmp/x")],
            "🗑 unlinkat node-1 /bin/cat /tmp/x",
            id="unlink-unread-dfd",
        ),
        pytest.param(
            "__x64_sys_getpid", [KprobeArgument()], "🔎 getpid  node-1 /bin/cat ?", id="unread"
        ),
    ],
)
def test_compact_kprobe_lines(function: str, args: list[KprobeArgument], expected: str) -> None:
    """Emoji and syscall name, where, the binary, then the target the args name."""
    assert _kprobe(function, *args) == expected


def test_compact_kprobe_says_when_the_policy_killed() -> None:
    """A Sigkill action is shown at the end of the line."""
    line = _kprobe(
        "__x64_sys_openat", KprobeArgument(string_arg="/etc/shadow"), action="KPROBE_ACTION_SIGKILL"
    )
    assert line == "📬 openat  node-1 /bin/cat /etc/shadow (SIGKILL)"


def test_compact_tracepoint_uses_the_event_name() -> None:
    """A syscall tracepoint is named by its syscall; another by its event."""
    p = Process(pid=1, binary="/usr/bin/ls", pod=Pod(namespace="web", name="api-1"))

    def line(subsys: str, event: str, *args: KprobeArgument) -> str | None:
        tp = ProcessTracepoint(process=p, subsys=subsys, event=event, args=list(args))
        return compact(GetEventsResponse(process_tracepoint=tp, node_name=NODE, time=T))

    mkdir = line("syscalls", "sys_enter_mkdirat", KprobeArgument(string_arg="/tmp/d"))
    assert mkdir == "📁 mkdirat web/api-1 /usr/bin/ls /tmp/d"
    other = line("sched", "sched_switch", KprobeArgument(int_arg=3))
    assert other == "🔎 sched_switch web/api-1 /usr/bin/ls 3"


def test_policy_filter_keeps_only_that_policys_hook_events() -> None:
    """--policy NAME: hook events of that policy pass; others and process events do not."""
    f = EventFilter(policies=frozenset({"p"}))
    mine = ProcessKprobe(process=Process(pid=1), policy_name="p")
    other = ProcessTracepoint(process=Process(pid=1), policy_name="q")
    assert f.accepts(GetEventsResponse(process_kprobe=mine, node_name=NODE, time=T))
    assert not f.accepts(GetEventsResponse(process_tracepoint=other, node_name=NODE, time=T))
    assert not f.accepts(_exec(Process(pid=1, binary="/bin/ls")))
