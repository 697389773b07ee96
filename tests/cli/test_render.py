"""Compact lines and raw-record views."""

from __future__ import annotations

from schemas.events import Container, GetEventsResponse, Pod, Process, ProcessExec, ProcessExit
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
