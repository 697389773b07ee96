"""What every SIEM format needs from a Tetragon event, extracted once.

The formats (CEF, LEEF, ECS, OCSF) read an event as the protobuf-JSON mapping
the sinks receive (``schemas.events.GetEventsResponse.to_json_dict()`` shape,
after the core's masks and redaction), not as a model: a field mask may have
removed anything, and policy events (``process_kprobe``, ``process_tracepoint``)
arrive in Tetragon's shape before ``schemas.events`` declares them. So every
field here is optional and an absent field stays absent in the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.events import parse_timestamp
from services.exporter.formats.facts import (
    EventFacts,
    ProcessFacts,
    SocketFacts,
    UnsupportedEvent,
)

# Top-level keys of GetEventsResponse that are not the event itself.
ENVELOPE_KEYS = frozenset({"node_name", "time", "cluster_name", "node_labels", "aggregation_info"})

# Argument types that name a file (tetragon.KprobeArgument oneof members).
_FILE_ARG_KEYS = ("file_arg", "path_arg", "linux_binprm_arg")


def prune_empty(value: Any) -> Any:
    """Drop None, "" and empty containers from nested dicts and lists: absent stays absent."""
    if isinstance(value, dict):
        pruned = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", {}, [])}
    if isinstance(value, list):
        return [v for v in map(prune_empty, value) if v not in (None, "", {}, [])]
    return value


def rfc3339_to_ms(value: str) -> int | None:
    """RFC 3339 -> ms since the epoch; None for "" or an unparseable value."""
    try:
        return parse_timestamp(value) // 1_000_000 if value else None
    except ValueError:
        return None


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else ""


def _int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # protojson prints 64-bit integers as decimal strings.
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _map(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, Mapping) else {}


def process_facts(proc: Mapping[str, Any]) -> ProcessFacts:
    pod = _map(proc, "pod")
    container = _map(pod, "container")
    image = _map(container, "image")
    return ProcessFacts(
        pid=_int(proc, "pid"),
        tid=_int(proc, "tid"),
        uid=_int(proc, "uid"),
        auid=_int(proc, "auid"),
        user_name=_str(_map(proc, "user"), "name"),
        binary=_str(proc, "binary"),
        arguments=_str(proc, "arguments"),
        cwd=_str(proc, "cwd"),
        exec_id=_str(proc, "exec_id"),
        parent_exec_id=_str(proc, "parent_exec_id"),
        start_time=_str(proc, "start_time"),
        flags=_str(proc, "flags"),
        container_id=_str(container, "id"),
        container_name=_str(container, "name"),
        image_name=_str(image, "name"),
        image_id=_str(image, "id"),
        pod_namespace=_str(pod, "namespace"),
        pod_name=_str(pod, "name"),
        pod_uid=_str(pod, "uid"),
        workload=_str(pod, "workload"),
        workload_kind=_str(pod, "workload_kind"),
    )


def event_kind(event: Mapping[str, Any]) -> str:
    """The event's kind: its one top-level key that is not envelope."""
    for key, value in event.items():
        if key not in ENVELOPE_KEYS and isinstance(value, Mapping):
            return key
    raise UnsupportedEvent(f"no event kind among keys {sorted(event)}")


def _file_path(args: Sequence[Any]) -> str:
    for arg in args:
        if not isinstance(arg, Mapping):
            continue
        for key in _FILE_ARG_KEYS:
            path = _str(_map(arg, key), "path")
            if path:
                return path
    return ""


def _socket(args: Sequence[Any]) -> SocketFacts | None:
    for arg in args:
        sock = _map(arg, "sock_arg") if isinstance(arg, Mapping) else {}
        if sock:
            return SocketFacts(
                family=_str(sock, "family"),
                protocol=_str(sock, "protocol"),
                saddr=_str(sock, "saddr"),
                daddr=_str(sock, "daddr"),
                sport=_int(sock, "sport"),
                dport=_int(sock, "dport"),
            )
    return None


def _hook(kind: str, body: Mapping[str, Any]) -> str:
    if kind == "process_tracepoint":
        subsys, name = _str(body, "subsys"), _str(body, "event")
        return f"{subsys}/{name}" if subsys or name else ""
    return _str(body, "function_name") or _str(body, "symbol")


def _exit_status(kind: str, body: Mapping[str, Any]) -> int | None:
    if kind != "process_exit":
        return None
    status = _int(body, "status")
    if status is not None:
        return status
    # protojson leaves a 0 status out: without it the process exited 0, unless a
    # signal ended it, and then there is no exit status at all.
    return None if _str(body, "signal") else 0


def extract(event: Mapping[str, Any]) -> EventFacts:
    """The facts of one event line; raises UnsupportedEvent when it has no kind."""
    kind = event_kind(event)
    body: Mapping[str, Any] = event[kind]
    time = _str(event, "time")
    try:
        time_ns = parse_timestamp(time) if time else None
    except ValueError:
        time_ns = None
    parent = _map(body, "parent")
    args = body.get("args")
    args = args if isinstance(args, list) else []
    tags = body.get("tags")
    return EventFacts(
        kind=kind,
        time_ns=time_ns,
        time=time if time_ns is not None else "",
        node=_str(event, "node_name"),
        cluster=_str(event, "cluster_name"),
        process=process_facts(_map(body, "process")),
        parent=process_facts(parent) if parent else None,
        exit_status=_exit_status(kind, body),
        signal=_str(body, "signal"),
        policy_name=_str(body, "policy_name"),
        action=_str(body, "action"),
        hook=_hook(kind, body),
        message=_str(body, "message"),
        tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        file_path=_file_path(args),
        socket=_socket(args),
    )
