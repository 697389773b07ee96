"""The line formats (services/exporter/formats): CEF and LEEF escaping, and a
parse-back of every field with parsers written from the specs."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.events import format_timestamp
from services.exporter.formats import (
    UnsupportedEvent,
    format_cef,
    format_leef,
    to_ecs,
    to_ocsf,
)
from services.exporter.formats.cef import escape_extension_value, escape_header, format_extension
from services.exporter.formats.facts import product_version
from tests.exporter.siem_samples import (
    CONTAINER,
    NODE,
    T0,
    exec_event,
    exit_event,
    kprobe_event,
    parse_cef,
    parse_leef,
    process,
    tracepoint_event,
)

# -- CEF ------------------------------------------------------------------------------

TRICKY_ARGUMENTS = [
    pytest.param("--filter=a|b", id="pipe"),
    pytest.param(r"C:\dir\file x\ ", id="backslashes"),
    pytest.param("--password=x=y a==b", id="equals"),
    pytest.param("line1\nline2\r\nline3\r", id="newlines"),
    pytest.param("x act=SIGKILL cs1=forged", id="forged-keys"),
    pytest.param("trailing\\", id="trailing-backslash"),
    pytest.param("\\=\\n literal escapes", id="escape-lookalikes"),
    pytest.param("ünïcødé ✓ tab\there", id="unicode-and-tab"),
]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        pytest.param("a|b", "a\\|b", id="pipe"),
        pytest.param("a\\b", "a\\\\b", id="backslash"),
        pytest.param("a=b", "a=b", id="equals-unescaped"),
        pytest.param("a\nb\r\nc", "a b c", id="newline-to-space"),
        pytest.param("\\|", "\\\\\\|", id="backslash-then-pipe"),
    ],
)
def test_cef_header_escaping(raw: str, escaped: str) -> None:
    """CEF header fields escape backslash and pipe, and carry no line breaks."""
    assert escape_header(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        pytest.param("a=b", "a\\=b", id="equals"),
        pytest.param("a\\b", "a\\\\b", id="backslash"),
        pytest.param("a|b", "a|b", id="pipe-unescaped"),
        pytest.param("a\nb", "a\\nb", id="newline"),
        pytest.param("a\rb", "a\\rb", id="carriage-return"),
        pytest.param("\\=", "\\\\\\=", id="backslash-then-equals"),
    ],
)
def test_cef_extension_value_escaping(raw: str, escaped: str) -> None:
    """CEF extension values escape backslash, equals, CR and LF."""
    assert escape_extension_value(raw) == escaped


def test_cef_rejects_invalid_extension_key() -> None:
    """A key outside CEF's alphabet is a programming error, not an escaped string."""
    with pytest.raises(ValueError, match="not a valid CEF extension key"):
        format_extension([("bad key", "v")])


@pytest.mark.parametrize("arguments", TRICKY_ARGUMENTS)
def test_cef_parse_back_recovers_values(arguments: str) -> None:
    """Whatever the arguments hold, a CEF parser recovers every field exactly."""
    proc = process(arguments=arguments)
    line = format_cef(exec_event(proc))
    assert "\n" not in line and "\r" not in line
    header, ext = parse_cef(line)
    assert header == ["0", "Ocellus", "Ocellus", product_version(), "process_exec",
                      "Process executed", "3"]  # fmt: skip
    assert ext["msg"] == f"{proc.binary} {arguments}"
    assert ext["dproc"] == "/usr/bin/curl"
    assert ext["dpid"] == "4242"
    assert "act" not in ext
    assert ext["cs1"] == proc.exec_id


def test_cef_header_escapes_policy_name() -> None:
    """A policy name with a pipe and a backslash stays inside the Name field."""
    line = format_cef(kprobe_event(policy="evil|name\\x"))
    header, ext = parse_cef(line)
    assert header[5] == "Policy match evil|name\\x: __x64_sys_openat"
    assert header[6] == "8"
    assert ext["cs5"] == "evil|name\\x"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            exec_event(),
            {"rt": str(T0 // 10**6), "dvchost": NODE, "sproc": "/usr/bin/bash", "spid": "1",
             "suid": "1000", "suser": "dev", "cs3": CONTAINER, "cs3Label": "containerId",
             "cs4": "shop/web-7f9c", "cs6": "nginx:1.25", "cs1Label": "execId"},
            id="exec",
        ),
        pytest.param(exit_event(status=3), {"cn1": "3", "cn1Label": "exitStatus"}, id="exit"),
        pytest.param(exit_event(signal="SIGKILL"), {"reason": "SIGKILL"}, id="exit-signal"),
        pytest.param(
            kprobe_event(message="read of /etc/shadow"),
            {"act": "SIGKILL", "filePath": "/etc/shadow", "fname": "shadow",
             "msg": "read of /etc/shadow", "cs5": "deny-shadow", "cs5Label": "policyName"},
            id="kprobe",
        ),
        pytest.param(
            tracepoint_event(),
            {"act": "POST", "src": "10.0.0.5", "spt": "40112", "dst": "203.0.113.9",
             "dpt": "443", "proto": "TCP"},
            id="tracepoint-socket",
        ),
    ],
)  # fmt: skip
def test_cef_fields(event: dict[str, Any], expected: dict[str, str]) -> None:
    """Tetragon fields land in the standard CEF keys."""
    _, ext = parse_cef(format_cef(event))
    assert {key: ext.get(key) for key in expected} == expected


def test_cef_exit_with_signal_has_no_exit_status() -> None:
    """A process ended by a signal has no exit status, so cn1 is absent, not 0."""
    _, ext = parse_cef(format_cef(exit_event(signal="SIGKILL")))
    assert "cn1" not in ext and "cn1Label" not in ext


# -- LEEF -----------------------------------------------------------------------------


@pytest.mark.parametrize("arguments", TRICKY_ARGUMENTS)
def test_leef_parse_back_recovers_values(arguments: str) -> None:
    """LEEF 2.0 with a tab delimiter: every attribute value comes back exactly."""
    proc = process(arguments=arguments)
    line = format_leef(exec_event(proc))
    assert "\n" not in line and "\r" not in line
    header, attrs = parse_leef(line)
    assert header[:5] == ["2.0", "Ocellus", "Ocellus", product_version(), "process_exec"]
    assert attrs["args"] == arguments
    assert attrs["binary"] == "/usr/bin/curl"
    assert attrs["execId"] == proc.exec_id
    assert attrs["devTime"] == "2023-11-14T22:13:20.123Z"
    assert attrs["devTimeFormat"] == "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"


def test_leef_policy_fields() -> None:
    """A policy hit carries sev, policy, action and the socket in LEEF's keys."""
    _, attrs = parse_leef(format_leef(tracepoint_event()))
    assert attrs["cat"] == "policy"
    assert attrs["sev"] == "6"
    assert attrs["policy"] == "egress-watch"
    assert attrs["hook"] == "sock/inet_sock_set_state"
    assert (attrs["dst"], attrs["dstPort"], attrs["proto"]) == ("203.0.113.9", "443", "TCP")


def test_formats_reject_a_mapping_without_event() -> None:
    """A mapping with no event kind is refused with UnsupportedEvent (a ValueError)."""
    for render in (format_cef, format_leef, to_ecs, to_ocsf):
        with pytest.raises(UnsupportedEvent):
            render({"node_name": NODE, "time": format_timestamp(T0)})
