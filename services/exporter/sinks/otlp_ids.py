"""Trace and span ids of processes, derived from exec ids rather than allocated, so that
a child exported in another batch, after a restart or by another exporter process still
names its parent's span:

- span id = the first 8 bytes of sha256("span:" + exec_id);
- trace id = the first 16 bytes of sha256("trace:" + key), the key being
  "container:<the container id's first 31 characters>" for a process in a container, and
  "exec:<exec_id>" of the process's trace root on the host (``trace_key``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.trace import Link, SpanContext, TraceFlags

from services.exporter.sinks.otlp_mapping import container_of

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# init and kthreadd parent everything on a host: as trace roots they would make one
# endless trace per node, so a host trace starts at their child (a service, a session).
NOT_TRACE_ROOTS = frozenset({1, 2})


def lineage(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """[process, parent, *ancestors] as far as the event knows them, nearest first."""
    chain = [body.get("process") or {}]
    if parent := body.get("parent"):
        chain.append(parent)
    chain.extend(body.get("ancestors") or ())
    return chain


def trace_key(chain: Sequence[Mapping[str, Any]]) -> str:
    """What a process's trace is named after: its container, else its root on the host
    (the topmost ancestor known in the event that is not init or kthreadd)."""
    _, cid = container_of(chain[0])
    if cid:
        # 31 characters, as Tetragon's docker field: the same key whether an event has
        # the full id (pod.container.id) or only that field.
        return f"container:{cid[:31]}"
    for process in reversed(chain):
        if process.get("pid") not in NOT_TRACE_ROOTS and process.get("exec_id"):
            return f"exec:{process['exec_id']}"
    return f"exec:{chain[0].get('exec_id', '')}"


def trace_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(b"trace:" + key.encode()).digest()[:16]) or 1


def span_id(exec_id: str) -> int:
    return int.from_bytes(hashlib.sha256(b"span:" + exec_id.encode()).digest()[:8]) or 1


def parent_and_links(
    chain: Sequence[Mapping[str, Any]], trace: int
) -> tuple[SpanContext | None, list[Link]]:
    """The parent span when the parent process is in the same trace; otherwise a link to
    its span in its own trace (none to init or kthreadd: they have no span)."""
    process = chain[0]
    parent_exec_id = process.get("parent_exec_id") or (
        chain[1].get("exec_id") if len(chain) > 1 else ""
    )
    if not parent_exec_id:
        return None, []
    parent_span_id = span_id(parent_exec_id)
    if len(chain) > 1:
        parent_trace = trace_id(trace_key(chain[1:]))
        if parent_trace == trace:
            return SpanContext(trace, parent_span_id, is_remote=False, trace_flags=SAMPLED), []
        if chain[1].get("pid") not in NOT_TRACE_ROOTS:
            link = SpanContext(parent_trace, parent_span_id, is_remote=False, trace_flags=SAMPLED)
            return None, [Link(link, {"ocellus.link": "parent_process"})]
    return None, []
