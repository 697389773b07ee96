"""Elastic Common Schema (ECS 8.x) documents from Tetragon events.

| ECS field | from |
|---|---|
| @timestamp | event time |
| event.kind | ``event``; ``alert`` for policy matches |
| event.category | ``process``; policy matches add ``intrusion_detection``, and |
|  | ``file`` / ``network`` when the hook saw a file / socket |
| event.type | ``start`` (exec), ``end`` (exit), ``denied`` (enforcing policy action), ``info`` |
| event.action, event.dataset, event.module | event kind, ``ocellus.events``, ``ocellus`` |
| event.id, event.severity, event.reason | stable event id, 0-10 severity, policy message |
| host.name, host.hostname | node_name |
| process.pid, .thread.id, .executable, .name, .args, .args_count, | the process |
| .command_line, .working_directory, .entity_id (exec_id), .start |  |
| process.exit_code, process.end | process_exit (no exit_code when a signal ended it) |
| process.parent.* | the parent, same fields |
| user.id, user.name | the process's uid and user name |
| container.id, .runtime, .name, .image.name | the pod's container (``containerd://<id>`` split) |
| orchestrator.type, .namespace, .resource.name/.type/.id/.parent.type, .cluster.name | the pod |
| rule.name | policy_name |
| file.path, file.name | the file argument of a policy hook |
| source.ip/.port, destination.ip/.port, network.transport/.type | the socket argument |
| tags | policy tags |
| ocellus.* | Tetragon fields ECS has no place for: action, hook, signal, flags, auid, workload |

``ecs_mappings()`` is the index-template mapping for exactly these fields.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from services.exporter.formats.common import extract, prune_empty
from services.exporter.formats.facts import EventFacts, ProcessFacts, event_uid

ECS_VERSION = "8.11.0"


def _process_fields(proc: ProcessFacts) -> dict[str, Any]:
    args = proc.args
    return {
        "pid": proc.pid,
        "thread": {"id": proc.tid},
        "executable": proc.binary,
        "name": proc.name,
        "args": args,
        "args_count": len(args) if args else None,
        "command_line": proc.command_line,
        "working_directory": proc.cwd,
        "entity_id": proc.exec_id,
        "start": proc.start_time,
    }


def _categories(facts: EventFacts) -> tuple[list[str], list[str]]:
    if facts.kind == "process_exec":
        return ["process"], ["start"]
    if facts.kind == "process_exit":
        return ["process"], ["end"]
    if not facts.is_policy_hit:
        return ["process"], ["info"]
    categories = ["intrusion_detection", "process"]
    if facts.file_path:
        categories.append("file")
    if facts.socket:
        categories.append("network")
    return categories, ["denied" if facts.enforced else "info"]


def _network(facts: EventFacts) -> dict[str, Any]:
    if facts.socket is None:
        return {}
    sock = facts.socket
    family = {"AF_INET": "ipv4", "AF_INET6": "ipv6"}.get(sock.family, "")
    return {
        "source": {"ip": sock.saddr, "port": sock.sport},
        "destination": {"ip": sock.daddr, "port": sock.dport},
        "network": {"transport": sock.protocol.removeprefix("IPPROTO_").lower(), "type": family},
    }


def _summary(facts: EventFacts) -> str:
    proc = facts.process
    if facts.kind == "process_exit":
        how = f"signal {facts.signal}" if facts.signal else f"status {facts.exit_status}"
        return f"exit {proc.binary} (pid {proc.pid}, {how})"
    if facts.is_policy_hit:
        return f"{facts.title} by {proc.binary} (pid {proc.pid}) -> {facts.action_name}"
    if facts.kind == "process_exec":
        return f"exec {proc.command_line} (pid {proc.pid})"
    return facts.kind


def to_ecs(event: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS document for one event (no empty fields)."""
    facts = extract(event)
    proc, parent = facts.process, facts.parent
    categories, types = _categories(facts)
    runtime, container_id = proc.container_runtime_and_id
    process = _process_fields(proc)
    if facts.kind == "process_exit":
        process["exit_code"] = None if facts.signal else facts.exit_status
        process["end"] = facts.time
    if parent is not None:
        process["parent"] = _process_fields(parent)
    elif proc.parent_exec_id:
        process["parent"] = {"entity_id": proc.parent_exec_id}
    doc: dict[str, Any] = {
        "@timestamp": facts.time,
        "ecs": {"version": ECS_VERSION},
        "message": _summary(facts),
        "event": {
            "kind": "alert" if facts.is_policy_hit else "event",
            "category": categories,
            "type": types,
            "action": facts.kind,
            "dataset": "ocellus.events",
            "module": "ocellus",
            "id": event_uid(facts),
            "severity": facts.severity,
            "reason": facts.message,
        },
        "host": {"name": facts.node, "hostname": facts.node},
        "process": process,
        "user": {"id": None if proc.uid is None else str(proc.uid), "name": proc.user_name},
        "container": {
            "id": container_id,
            "runtime": runtime,
            "name": proc.container_name,
            "image": {"name": proc.image_name},
        },
        "orchestrator": {
            "type": "kubernetes" if proc.pod_name else None,
            "namespace": proc.pod_namespace,
            "cluster": {"name": facts.cluster},
            "resource": {
                "name": proc.pod_name,
                "type": "pod" if proc.pod_name else None,
                "id": proc.pod_uid,
                "parent": {"type": proc.workload_kind},
            },
        },
        "rule": {"name": facts.policy_name},
        "file": {
            "path": facts.file_path,
            "name": posixpath.basename(facts.file_path) if facts.file_path else None,
        },
        "tags": list(facts.tags),
        "ocellus": {
            "action": facts.action_name,
            "hook": facts.hook,
            "signal": facts.signal,
            "flags": proc.flags,
            "auid": proc.auid,
            "workload": proc.workload,
        },
        **_network(facts),
    }
    pruned: dict[str, Any] = prune_empty(doc)
    return pruned


_KEYWORD = {"type": "keyword"}
_LONG = {"type": "long"}
_DATE = {"type": "date"}


def _obj(**properties: Any) -> dict[str, Any]:
    return {"properties": properties}


def _process_mapping(with_parent: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "pid": _LONG,
        "thread": _obj(id=_LONG),
        "executable": _KEYWORD,
        "name": _KEYWORD,
        "args": _KEYWORD,
        "args_count": _LONG,
        "command_line": {"type": "keyword", "fields": {"text": {"type": "text"}}},
        "working_directory": _KEYWORD,
        "entity_id": _KEYWORD,
        "start": _DATE,
    }
    if with_parent:
        fields |= {"exit_code": _LONG, "end": _DATE, "parent": _process_mapping(False)}
    return {"properties": fields}


def ecs_mappings() -> dict[str, Any]:
    """Index-template ``mappings`` for every field ``to_ecs`` emits; other fields
    are not indexed dynamically as guesses (``dynamic: false`` keeps them in
    ``_source`` only), so a mask or a new Tetragon field cannot cause mapping
    conflicts. Types are ones Elasticsearch and OpenSearch both know: ECS's
    ``wildcard`` / ``match_only_text`` become ``keyword`` / ``text``."""
    return {
        "dynamic": False,
        "properties": {
            "@timestamp": _DATE,
            "message": {"type": "text"},
            "tags": _KEYWORD,
            "ecs": _obj(version=_KEYWORD),
            "event": _obj(
                kind=_KEYWORD,
                category=_KEYWORD,
                type=_KEYWORD,
                action=_KEYWORD,
                dataset=_KEYWORD,
                module=_KEYWORD,
                id=_KEYWORD,
                severity=_LONG,
                reason=_KEYWORD,
            ),
            "host": _obj(name=_KEYWORD, hostname=_KEYWORD),
            "process": _process_mapping(True),
            "user": _obj(id=_KEYWORD, name=_KEYWORD),
            "container": _obj(
                id=_KEYWORD, runtime=_KEYWORD, name=_KEYWORD, image=_obj(name=_KEYWORD)
            ),
            "orchestrator": _obj(
                type=_KEYWORD,
                namespace=_KEYWORD,
                cluster=_obj(name=_KEYWORD),
                resource=_obj(
                    name=_KEYWORD, type=_KEYWORD, id=_KEYWORD, parent=_obj(type=_KEYWORD)
                ),
            ),
            "rule": _obj(name=_KEYWORD),
            "file": _obj(path=_KEYWORD, name=_KEYWORD),
            "source": _obj(ip={"type": "ip"}, port=_LONG),
            "destination": _obj(ip={"type": "ip"}, port=_LONG),
            "network": _obj(transport=_KEYWORD, type=_KEYWORD),
            "ocellus": _obj(
                action=_KEYWORD,
                hook=_KEYWORD,
                signal=_KEYWORD,
                flags=_KEYWORD,
                auid=_LONG,
                workload=_KEYWORD,
            ),
        },
    }
