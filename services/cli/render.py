"""Compact one-line rendering of Tetragon-shaped events, for people."""

from __future__ import annotations

import shlex

from schemas.events import GetEventsResponse, Process


def where(resp: GetEventsResponse, process: Process) -> str:
    """<namespace>/<pod> for pods, the container name, else the node name."""
    pod = process.pod
    if pod is not None and pod.name:
        return f"{pod.namespace}/{pod.name}"
    if pod is not None and pod.container is not None and pod.container.name:
        return pod.container.name
    return resp.node_name


def _command(process: Process) -> str:
    return f"{process.binary or '?'} {process.arguments}".rstrip()


def compact(resp: GetEventsResponse) -> str | None:
    """The compact line, or None for kinds that have no compact form."""
    if resp.process_exec is not None:
        p = resp.process_exec.process
        return f"🚀 process {where(resp, p)} {_command(p)}"
    if resp.process_exit is not None:
        ev = resp.process_exit
        outcome = ev.signal or str(ev.status)
        return f"💥 exit    {where(resp, ev.process)} {_command(ev.process)} {outcome}"
    return None


def join_arguments(argv_tail: list[str]) -> str:
    """argv[1:] as one string that a shell would split back the same way."""
    return " ".join(shlex.quote(a) for a in argv_tail)
