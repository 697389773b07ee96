"""What the exporter needs to know of an event's shape, without pydantic on
the hot path: the event kind, its process and parent, and a minimal check
that a decoded message is an event at all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The GetEventsResponse oneof of Tetragon's events.proto: every kind a filter or
# a field path may name, including the ones Ocellus does not produce yet.
EVENT_KINDS = frozenset(
    {
        "process_exec",
        "process_exit",
        "process_kprobe",
        "process_tracepoint",
        "process_loader",
        "process_uprobe",
        "process_throttle",
        "process_lsm",
        "process_usdt",
        "rate_limit_info",
    }
)

Event = dict[str, Any]


class MalformedEventError(ValueError):
    """A decoded message that is not a Tetragon event."""


def check_event(body: Any) -> str:
    """The event's kind; MalformedEventError says what is wrong."""
    if not isinstance(body, dict):
        raise MalformedEventError(f"expected a map, got {type(body).__name__}")
    kinds = [k for k in body if k in EVENT_KINDS]
    if len(kinds) != 1:
        raise MalformedEventError(f"expected exactly one event kind, got {sorted(kinds)}")
    if not isinstance(body[kinds[0]], dict):
        raise MalformedEventError(f"{kinds[0]} is not a map")
    node = body.get("node_name")
    if not isinstance(node, str) or not node:
        raise MalformedEventError("node_name missing or not a string")
    if not isinstance(body.get("time"), str):
        raise MalformedEventError("time missing or not a string")
    return kinds[0]


def kind_of(event: Mapping[str, Any]) -> str | None:
    return next((k for k in event if k in EVENT_KINDS), None)


def body_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = kind_of(event)
    body = event.get(kind) if kind else None
    return body if isinstance(body, Mapping) else {}


def process_of(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    process = body_of(event).get("process")
    return process if isinstance(process, Mapping) else None


def parent_of(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    parent = body_of(event).get("parent")
    return parent if isinstance(parent, Mapping) else None


def ancestors_of(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    ancestors = body_of(event).get("ancestors")
    if not isinstance(ancestors, list):
        return []
    return [a for a in ancestors if isinstance(a, Mapping)]
