"""IBM QRadar Log Event Extended Format (LEEF 2.0) lines from Tetragon events.

``LEEF:2.0|Ocellus|Ocellus|<version>|<event id>|x09|key=value<TAB>key=value...``

The attribute delimiter is a tab, declared in the header as ``x09``. LEEF defines
no escape sequences, so this module picks the conventional ones and applies them
so that a line always splits back unambiguously: in header fields ``\\`` and ``|``
are backslash-escaped (as in CEF); in attribute values ``\\`` becomes ``\\\\`` and a
tab, CR or LF becomes ``\\t``, ``\\r``, ``\\n``, so the only raw tab is the delimiter
and the line stays one line. ``=`` needs no escape: a key ends at the first ``=``.

Receivers: rsyslog escapes control characters on reception by default (a tab
arrives as ``#011``); set ``parser.escapeControlCharactersOnReceive="off"`` on a
relay that carries LEEF.

Attributes: predefined LEEF keys where one fits (``devTime``/``devTimeFormat``,
``cat``, ``sev``, ``usrName``, ``identHostName``, ``src``/``dst``/``srcPort``/
``dstPort``/``proto``, ``policy``, ``action``), otherwise custom keys named after
Tetragon's fields (``pid``, ``ppid``, ``binary``, ``args``, ``execId``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from services.exporter.formats.common import extract
from services.exporter.formats.facts import PRODUCT, VENDOR, EventFacts, product_version

DELIMITER = "\t"
DEV_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"  # Java SimpleDateFormat, as QRadar reads it
_KEY = re.compile(r"[A-Za-z0-9_]+")


def escape_header(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def escape_value(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("\t", "\\t")
    return value.replace("\r", "\\r").replace("\n", "\\n")


def format_attributes(pairs: Iterable[tuple[str, object]]) -> str:
    parts = []
    for key, value in pairs:
        if value is None or value == "":
            continue
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a valid LEEF attribute key: {key!r}")
        parts.append(f"{key}={escape_value(str(value))}")
    return DELIMITER.join(parts)


def _dev_time(time_ns: int | None) -> str:
    if time_ns is None:
        return ""
    t = datetime.fromtimestamp(time_ns // 1_000_000 / 1000, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def attribute_pairs(facts: EventFacts) -> list[tuple[str, object]]:
    proc, parent = facts.process, facts.parent
    runtime, container_id = proc.container_runtime_and_id
    pairs: list[tuple[str, object]] = [
        ("devTime", _dev_time(facts.time_ns)),
        ("devTimeFormat", DEV_TIME_FORMAT if facts.time_ns is not None else None),
        ("cat", "policy" if facts.is_policy_hit else "process"),
        ("sev", facts.severity),
        ("identHostName", facts.node),
        ("usrName", proc.user_name),
        ("uid", proc.uid),
        ("pid", proc.pid),
        ("binary", proc.binary),
        ("args", proc.arguments),
        ("cwd", proc.cwd),
        ("execId", proc.exec_id),
        ("ppid", parent.pid if parent else None),
        ("parentBinary", parent.binary if parent else None),
        ("parentExecId", proc.parent_exec_id),
        ("exitStatus", facts.exit_status),
        ("signal", facts.signal),
        ("policy", facts.policy_name),
        ("hook", facts.hook),
        ("action", facts.action_name),
        ("message", facts.message),
        ("filePath", facts.file_path),
        ("containerId", container_id),
        ("containerRuntime", runtime),
        ("containerName", proc.container_name),
        ("containerImage", proc.image_name),
        ("namespace", proc.pod_namespace),
        ("pod", proc.pod_name),
    ]
    if facts.socket:
        sock = facts.socket
        pairs += [
            ("src", sock.saddr),
            ("srcPort", sock.sport),
            ("dst", sock.daddr),
            ("dstPort", sock.dport),
            ("proto", sock.protocol.removeprefix("IPPROTO_")),
        ]
    return pairs


def format_leef(event: Mapping[str, Any]) -> str:
    """One LEEF 2.0 line (no trailing newline) for a Tetragon event mapping."""
    facts = extract(event)
    header = "|".join(escape_header(f) for f in (VENDOR, PRODUCT, product_version(), facts.kind))
    return f"LEEF:2.0|{header}|x09|{format_attributes(attribute_pairs(facts))}"
