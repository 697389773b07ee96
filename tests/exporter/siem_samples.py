"""For the SIEM format and sink tests: Tetragon event lines (exec and exit built
with ``schemas.events``, so they are the exact protobuf-JSON the pipeline emits;
policy events, ``process_kprobe`` and ``process_tracepoint``, in Tetragon's shape,
which ``schemas.events`` does not declare yet) and CEF / LEEF parsers written
from the specs, as a SIEM would read the lines."""

from __future__ import annotations

from typing import Any

from schemas.events import (
    Container,
    GetEventsResponse,
    Image,
    Pod,
    Process,
    ProcessExec,
    ProcessExit,
    UserRecord,
    exec_id,
    format_timestamp,
)

NODE = "worker-1.example"
T0 = 1_700_000_000_123_456_789  # ns: a time with all nine fractional digits
CONTAINER = "containerd://" + "ab" * 32


def process(
    pid: int = 4242,
    binary: str = "/usr/bin/curl",
    arguments: str = "-s https://example.com",
    *,
    pod: bool = True,
    **kw: Any,
) -> Process:
    """A process with every field the formats read; ``pod=False`` for a host process."""
    return Process(
        exec_id=exec_id(NODE, T0 - 1000, pid),
        parent_exec_id=exec_id(NODE, T0 - 5000, 1),
        pid=pid,
        tid=pid,
        uid=1000,
        auid=1000,
        cwd="/srv/app",
        binary=binary,
        arguments=arguments,
        flags="execve clone",
        start_time=T0 - 1000,
        user=UserRecord(name="dev"),
        pod=Pod(
            namespace="shop",
            name="web-7f9c",
            uid="0c5d7e1a-1111-2222-3333-444455556666",
            workload="web",
            workload_kind="Deployment",
            container=Container(
                id=CONTAINER, name="web", image=Image(id="sha256:" + "cd" * 32, name="nginx:1.25")
            ),
        )
        if pod
        else None,
        **kw,
    )


def parent_process() -> Process:
    return Process(
        exec_id=exec_id(NODE, T0 - 5000, 1),
        pid=1,
        uid=0,
        binary="/usr/bin/bash",
        arguments="-c 'curl -s https://example.com'",
        cwd="/",
        start_time=T0 - 5000,
    )


def exec_event(proc: Process | None = None) -> dict[str, Any]:
    body = ProcessExec(process=proc or process(), parent=parent_process())
    return GetEventsResponse(process_exec=body, node_name=NODE, time=T0).to_json_dict()


def exit_event(status: int = 0, signal: str = "") -> dict[str, Any]:
    body = ProcessExit(
        process=process(), parent=parent_process(), status=status, signal=signal, time=T0
    )
    return GetEventsResponse(process_exit=body, node_name=NODE, time=T0).to_json_dict()


def kprobe_event(
    action: str = "KPROBE_ACTION_SIGKILL",
    path: str = "/etc/shadow",
    policy: str = "deny-shadow",
    message: str = "",
) -> dict[str, Any]:
    """A policy hit on a file, as Tetragon prints ``process_kprobe``."""
    return {
        "process_kprobe": {
            "process": process(binary="/usr/bin/cat", arguments=path).to_json_dict(),
            "parent": parent_process().to_json_dict(),
            "function_name": "__x64_sys_openat",
            "args": [{"int_arg": -100}, {"file_arg": {"path": path}}, {"int_arg": 0}],
            "action": action,
            "policy_name": policy,
            "message": message,
            "tags": ["observability.filesystem"],
        },
        "node_name": NODE,
        "time": format_timestamp(T0),
    }


def tracepoint_event() -> dict[str, Any]:
    """A policy hit on a connection, as Tetragon prints ``process_tracepoint``."""
    sock = {
        "family": "AF_INET",
        "type": "SOCK_STREAM",
        "protocol": "IPPROTO_TCP",
        "saddr": "10.0.0.5",
        "daddr": "203.0.113.9",
        "sport": 40112,
        "dport": 443,
    }
    return {
        "process_tracepoint": {
            "process": process().to_json_dict(),
            "parent": parent_process().to_json_dict(),
            "subsys": "sock",
            "event": "inet_sock_set_state",
            "args": [{"sock_arg": sock}],
            "action": "KPROBE_ACTION_POST",
            "policy_name": "egress-watch",
        },
        "node_name": NODE,
        "time": format_timestamp(T0),
    }


# -- parsers a SIEM would use, written from the specs -------------------------------------


def _unescape(text: str, table: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _split_header(line: str, prefix: str, count: int) -> tuple[list[str], str]:
    """``count`` pipe-separated header fields (``\\|``, ``\\\\`` escaped) and the rest."""
    assert line.startswith(prefix)
    fields: list[str] = []
    current: list[str] = []
    i = len(prefix)
    while len(fields) < count:
        char = line[i]
        if char == "\\" and line[i + 1] in "\\|":
            current.append(line[i + 1])
            i += 2
        elif char == "|":
            fields.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    return fields, line[i:]


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """CEF:0 line -> (7 header fields, extension dict), unescaped per the CEF spec."""
    header, extension = _split_header(line, "CEF:", 7)
    # Split at unescaped "="; the key is the last space-separated word before it.
    segments, current, i = [], [], 0
    while i < len(extension):
        if extension[i] == "\\" and i + 1 < len(extension):
            current.append(extension[i : i + 2])
            i += 2
            continue
        if extension[i] == "=":
            segments.append("".join(current))
            current = []
        else:
            current.append(extension[i])
        i += 1
    segments.append("".join(current))
    pairs: dict[str, str] = {}
    for n in range(1, len(segments)):
        key = segments[n - 1].rsplit(" ", 1)[-1]
        raw = segments[n] if n == len(segments) - 1 else segments[n].rsplit(" ", 1)[0]
        assert key not in pairs, f"duplicate key {key}"
        pairs[key] = _unescape(raw, {"\\": "\\", "=": "=", "n": "\n", "r": "\r"})
    return header, pairs


def parse_leef(line: str) -> tuple[list[str], dict[str, str]]:
    """LEEF:2.0 line -> (header fields incl. delimiter, attributes), unescaped."""
    header, attributes = _split_header(line, "LEEF:", 6)
    assert header[5] == "x09"
    pairs = {}
    for attribute in attributes.split("\t"):
        key, _, value = attribute.partition("=")
        pairs[key] = _unescape(value, {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"})
    return header, pairs


def dig(doc: Any, path: str) -> Any:
    """``doc["a"]["b"][0]`` for "a.b.0"; a missing step gives ``KeyError``."""
    for step in path.split("."):
        doc = doc[int(step)] if isinstance(doc, list) else doc[step]
    return doc
