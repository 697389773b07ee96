"""Open Cybersecurity Schema Framework (OCSF 1.3) events from Tetragon events.

- ``process_exec`` / ``process_exit`` -> **Process Activity** (class_uid 1007,
  category System Activity 1), activity Launch (1) / Terminate (2). The actor is
  the parent for a launch; an exit is reflexive, so the actor is the process.
- policy hits (``process_kprobe``, ``process_tracepoint``, ``process_uprobe``,
  ``process_lsm``) -> **Detection Finding** (class_uid 2004, category Findings 2),
  activity Create (1); the policy is the analytic (a Rule), the process, file and
  socket it touched are the evidence; the ``security_control`` profile's
  ``action_id`` / ``disposition_id`` say whether the policy only observed or
  blocked (SIGKILL, Signal, Override).
- anything else -> **Base Event** (class_uid 0, activity Other 99), the Tetragon
  body under ``unmapped``: nothing is dropped for lack of a class.

``type_uid`` is ``class_uid * 100 + activity_id``; ``time`` and ``*_time`` are ms
since the epoch; Tetragon fields OCSF has no attribute for go under ``unmapped``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from services.exporter.formats.common import extract, prune_empty, rfc3339_to_ms
from services.exporter.formats.facts import (
    PRODUCT,
    VENDOR,
    EventFacts,
    ProcessFacts,
    event_uid,
    product_version,
)

OCSF_VERSION = "1.3.0"
PROCESS_ACTIVITY = 1007
DETECTION_FINDING = 2004
BASE_EVENT = 0
SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
_REGULAR_FILE = {"type_id": 1, "type": "Regular File"}


def _file(path: str) -> dict[str, Any] | None:
    if not path:
        return None
    return {"path": path, "name": posixpath.basename(path), **_REGULAR_FILE}


def ocsf_process(proc: ProcessFacts, parent: ProcessFacts | None = None) -> dict[str, Any]:
    """An OCSF process object (uid = Tetragon exec_id)."""
    _, container_id = proc.container_runtime_and_id
    obj: dict[str, Any] = {
        "pid": proc.pid,
        "tid": proc.tid,
        "uid": proc.exec_id,
        "name": proc.name,
        "cmd_line": proc.command_line,
        "file": _file(proc.binary),
        "working_directory": proc.cwd,
        "created_time": rfc3339_to_ms(proc.start_time),
        "user": {"uid": None if proc.uid is None else str(proc.uid), "name": proc.user_name},
        "container": {
            "uid": container_id,
            "name": proc.container_name,
            "image": {"name": proc.image_name, "uid": proc.image_id},
            "pod_uuid": proc.pod_uid,
        },
    }
    if parent is not None:
        obj["parent_process"] = ocsf_process(parent)
    elif proc.parent_exec_id:
        obj["parent_process"] = {"uid": proc.parent_exec_id}
    return obj


def _base(facts: EventFacts, class_uid: int, category_uid: int, activity_id: int) -> dict[str, Any]:
    return {
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": facts.time_ms,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event_uid(facts),
            "event_code": facts.kind,
            "original_time": facts.time,
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": product_version()},
        },
        "device": {"hostname": facts.node, "type_id": 0, "type": "Unknown"},
    }


def _k8s(proc: ProcessFacts) -> dict[str, Any]:
    return {"namespace": proc.pod_namespace, "pod": proc.pod_name, "workload": proc.workload}


def _process_activity(facts: EventFacts) -> dict[str, Any]:
    launch = facts.kind == "process_exec"
    activity_id = 1 if launch else 2
    event = _base(facts, PROCESS_ACTIVITY, 1, activity_id)
    proc_obj = ocsf_process(facts.process, facts.parent)
    actor_proc = ocsf_process(facts.parent) if launch and facts.parent else proc_obj
    event |= {
        "class_name": "Process Activity",
        "category_name": "System Activity",
        "activity_name": "Launch" if launch else "Terminate",
        "type_name": f"Process Activity: {'Launch' if launch else 'Terminate'}",
        "severity_id": 1,
        "severity": SEVERITY_NAMES[1],
        "message": facts.process.command_line if launch else f"exit {facts.process.binary}",
        "process": proc_obj,
        "actor": {"process": actor_proc},
        "exit_code": facts.exit_status,
        "unmapped": {"signal": facts.signal, "flags": facts.process.flags, **_k8s(facts.process)},
    }
    return event


def _detection_finding(facts: EventFacts) -> dict[str, Any]:
    event = _base(facts, DETECTION_FINDING, 2, 1)
    severity_id = 4 if facts.enforced else 3
    evidence: dict[str, Any] = {
        "process": ocsf_process(facts.process, facts.parent),
        "file": _file(facts.file_path),
    }
    if facts.parent is not None:
        evidence["actor"] = {"process": ocsf_process(facts.parent)}
    if facts.socket is not None:
        evidence["src_endpoint"] = {"ip": facts.socket.saddr, "port": facts.socket.sport}
        evidence["dst_endpoint"] = {"ip": facts.socket.daddr, "port": facts.socket.dport}
    event["metadata"]["profiles"] = ["host", "security_control"]
    event |= {
        "class_name": "Detection Finding",
        "category_name": "Findings",
        "activity_name": "Create",
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": SEVERITY_NAMES[severity_id],
        "status_id": 1,
        "status": "New",
        "message": facts.message or facts.title,
        "finding_info": {
            "uid": event_uid(facts),
            "title": facts.title,
            "desc": facts.message,
            "created_time": facts.time_ms,
            "types": [facts.kind],
            "analytic": {"name": facts.policy_name, "type_id": 1, "type": "Rule"},
        },
        "evidences": [evidence],
        # security_control profile: enforcement denies; Post only watches and logs.
        "action_id": 2 if facts.enforced else 3,
        "action": "Denied" if facts.enforced else "Observed",
        "disposition_id": 2 if facts.enforced else 17,
        "disposition": "Blocked" if facts.enforced else "Logged",
        "unmapped": {
            "action": facts.action,
            "hook": facts.hook,
            "tags": list(facts.tags),
            **_k8s(facts.process),
        },
    }
    return event


def _base_event(facts: EventFacts, body: Mapping[str, Any]) -> dict[str, Any]:
    event = _base(facts, BASE_EVENT, 0, 99)
    event |= {
        "class_name": "Base Event",
        "category_name": "Uncategorized",
        "activity_name": facts.kind,
        "type_name": "Base Event: Other",
        "severity_id": 1,
        "severity": SEVERITY_NAMES[1],
        "message": facts.kind,
        "unmapped": {facts.kind: dict(body)},
    }
    return event


def to_ocsf(event: Mapping[str, Any]) -> dict[str, Any]:
    """The OCSF event for one Tetragon event (no empty attributes)."""
    facts = extract(event)
    if facts.kind in ("process_exec", "process_exit"):
        out = _process_activity(facts)
    elif facts.is_policy_hit:
        out = _detection_finding(facts)
    else:
        out = _base_event(facts, event[facts.kind])
    pruned: dict[str, Any] = prune_empty(out)
    return pruned
