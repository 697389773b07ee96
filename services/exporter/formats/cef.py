"""ArcSight Common Event Format (CEF:0) lines from Tetragon events.

``CEF:0|Ocellus|Ocellus|<version>|<signature id>|<name>|<severity>|<extension>``

Escaping follows the CEF spec: in header fields a backslash and a pipe are
escaped with a backslash; in extension values a backslash and an equals sign
are, and newlines become the two characters ``\\n`` / ``\\r`` (the only place CEF
allows multi-line text). Header fields cannot carry a newline at all, so one
there becomes a space. Extension keys are fixed names from this module, checked
against CEF's key alphabet, so no key ever needs escaping.

Field mapping (standard CEF keys; cs1-cs6 / cn1 are labelled custom fields):

| CEF key | from |
|---|---|
| rt | event time, ms since the epoch |
| dvchost | node_name |
| dproc, dpid | the process: binary, pid |
| sproc, spid | its parent: binary, pid |
| suid, suser | the process's uid and user name |
| msg | policy message if any, else the command line |
| act | policy action without its prefix (SIGKILL, POST, ...) |
| reason | exit signal (process_exit) |
| cn1 exitStatus | exit status (process_exit) |
| filePath, fname | the file argument of a policy hook |
| src, spt, dst, dpt, proto | the socket argument of a policy hook |
| cs1 execId, cs2 parentExecId | Tetragon exec ids |
| cs3 containerId, cs4 pod, cs5 policyName, cs6 containerImage | context |
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from services.exporter.formats.common import extract
from services.exporter.formats.facts import PRODUCT, VENDOR, EventFacts, product_version

_KEY = re.compile(r"[A-Za-z0-9_]+")


def escape_header(value: str) -> str:
    """A CEF header field: ``\\`` and ``|`` escaped, line breaks as spaces."""
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def escape_extension_value(value: str) -> str:
    """A CEF extension value: ``\\``, ``=`` escaped, CR/LF as ``\\r``/``\\n``."""
    value = value.replace("\\", "\\\\").replace("=", "\\=")
    return value.replace("\r", "\\r").replace("\n", "\\n")


def format_extension(pairs: Iterable[tuple[str, object]]) -> str:
    """``key=value`` pairs joined by spaces; None and empty values are left out."""
    parts = []
    for key, value in pairs:
        if value is None or value == "":
            continue
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a valid CEF extension key: {key!r}")
        parts.append(f"{key}={escape_extension_value(str(value))}")
    return " ".join(parts)


def _labelled(n: int, kind: str, label: str, value: object) -> list[tuple[str, object]]:
    # A custom field without a value must not leave its label behind.
    if value is None or value == "":
        return []
    return [(f"{kind}{n}", value), (f"{kind}{n}Label", label)]


def extension_pairs(facts: EventFacts) -> list[tuple[str, object]]:
    """The CEF extension of one event, in a stable order (see the module table)."""
    proc, parent = facts.process, facts.parent
    pod = f"{proc.pod_namespace}/{proc.pod_name}" if proc.pod_name else ""
    pairs: list[tuple[str, object]] = [
        ("rt", facts.time_ms),
        ("dvchost", facts.node),
        ("dproc", proc.binary),
        ("dpid", proc.pid),
        ("sproc", parent.binary if parent else None),
        ("spid", parent.pid if parent else None),
        ("suid", proc.uid),
        ("suser", proc.user_name),
        ("msg", facts.message or proc.command_line),
        ("act", facts.action_name),
        ("reason", facts.signal),
    ]
    pairs += _labelled(1, "cn", "exitStatus", facts.exit_status)
    if facts.file_path:
        pairs += [("filePath", facts.file_path), ("fname", posixpath.basename(facts.file_path))]
    if facts.socket:
        sock = facts.socket
        pairs += [
            ("src", sock.saddr),
            ("spt", sock.sport),
            ("dst", sock.daddr),
            ("dpt", sock.dport),
            ("proto", sock.protocol.removeprefix("IPPROTO_")),
        ]
    pairs += _labelled(1, "cs", "execId", proc.exec_id)
    pairs += _labelled(2, "cs", "parentExecId", proc.parent_exec_id)
    pairs += _labelled(3, "cs", "containerId", proc.container_id)
    pairs += _labelled(4, "cs", "pod", pod)
    pairs += _labelled(5, "cs", "policyName", facts.policy_name)
    pairs += _labelled(6, "cs", "containerImage", proc.image_name)
    return pairs


def format_cef(event: Mapping[str, Any]) -> str:
    """One CEF:0 line (no trailing newline) for a Tetragon event mapping."""
    facts = extract(event)
    header = "|".join(
        escape_header(field)
        for field in (
            VENDOR,
            PRODUCT,
            product_version(),
            facts.kind,
            facts.title,
            str(facts.severity),
        )
    )
    return f"CEF:0|{header}|{format_extension(extension_pairs(facts))}"
