"""The syslog sink against a real rsyslogd (tests/rsyslog_fixture.py) over UDP,
TCP and TLS: the received line is RFC 5424 and its CEF/LEEF/JSON payload parses
back to the same fields. Failure handling against plain loopback sockets."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from services.exporter.formats import format_cef
from services.exporter.sinks import sink_class
from services.exporter.sinks.base import TransientSinkError
from services.exporter.sinks.syslog import SyslogConfig, SyslogSink, format_message
from tests.exporter.siem_samples import (
    NODE,
    exec_event,
    kprobe_event,
    parse_cef,
    parse_leef,
    process,
)

if TYPE_CHECKING:
    from tests.rsyslog_fixture import Rsyslog

RFC5424 = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) (.*)", re.DOTALL)


def parse_rfc5424(line: str) -> dict[str, str]:
    match = RFC5424.fullmatch(line)
    assert match, f"not RFC 5424: {line!r}"
    keys = ("pri", "timestamp", "hostname", "app_name", "procid", "msgid", "sd", "msg")
    return dict(zip(keys, match.groups(), strict=True))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def marked_event(arguments: str = "", **kw: Any) -> tuple[str, dict[str, Any]]:
    """An exec event whose arguments carry a unique marker to find it by."""
    marker = f"m-{uuid.uuid4().hex[:12]}"
    return marker, exec_event(process(arguments=f"{marker} {arguments}".strip(), **kw))


def sink(rs: Rsyslog, protocol: str, port: int, **options: Any) -> SyslogSink:
    config = SyslogConfig(host="127.0.0.1", port=port, protocol=protocol, **options)
    return SyslogSink("siem", config)


TRICKY = "--sql='a|b' pass=x\\y" + "\nsecond line"


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
async def test_rsyslog_receives_cef_that_parses_back(rsyslog: Rsyslog, protocol: str) -> None:
    """rsyslog writes the CEF line, which parses back to the fields we formatted."""
    port = {"udp": rsyslog.udp_port, "tcp": rsyslog.tcp_port, "tls": rsyslog.tls_port}[protocol]
    syslog = sink(rsyslog, protocol, port, tls_ca_file=str(rsyslog.tls.ca_cert))
    marker, event = marked_event(TRICKY)
    await syslog.start()
    assert (await syslog.send([event])).rejected == []
    await syslog.close()
    [line] = rsyslog.wait_for(marker)
    message = parse_rfc5424(line)
    assert message["pri"] == str(16 * 8 + 6)  # local0.info
    assert message["timestamp"] == "2023-11-14T22:13:20.123456Z"  # ns cut to RFC 5424's µs
    assert (message["hostname"], message["app_name"]) == (NODE, "ocellus")
    assert (message["procid"], message["msgid"], message["sd"]) == ("-", "process_exec", "-")
    assert parse_cef(message["msg"]) == parse_cef(format_cef(event))
    assert parse_cef(message["msg"])[1]["msg"] == f"/usr/bin/curl {marker} {TRICKY}"


async def test_rsyslog_tcp_batch_arrives_as_separate_messages(rsyslog: Rsyslog) -> None:
    """Octet counting frames every event of a batch as its own message."""
    syslog = sink(rsyslog, "tcp", rsyslog.tcp_port)
    batch = [marked_event(f"n={n}") for n in range(20)]
    await syslog.send([event for _, event in batch])
    await syslog.close()
    for marker, event in batch:
        [line] = rsyslog.wait_for(marker)
        assert parse_cef(parse_rfc5424(line)["msg"]) == parse_cef(format_cef(event))


async def test_rsyslog_receives_leef_with_tabs(rsyslog: Rsyslog) -> None:
    """LEEF's tab delimiter arrives intact and the attributes parse back."""
    syslog = sink(rsyslog, "tcp", rsyslog.tcp_port, format="leef")
    marker, event = marked_event("tab\there")
    await syslog.send([event])
    await syslog.close()
    [line] = rsyslog.wait_for(marker)
    header, attrs = parse_leef(parse_rfc5424(line)["msg"])
    assert header[4] == "process_exec"
    assert attrs["args"] == f"{marker} tab\there"


async def test_rsyslog_receives_json_event_and_policy_severity(rsyslog: Rsyslog) -> None:
    """format json sends the Tetragon event line; a SIGKILL policy hit is a warning."""
    syslog = sink(rsyslog, "udp", rsyslog.udp_port, format="json", facility="authpriv")
    marker = f"m-{uuid.uuid4().hex[:12]}"
    event = kprobe_event(path=f"/etc/{marker}")
    await syslog.send([event])
    await syslog.close()
    [line] = rsyslog.wait_for(marker)
    message = parse_rfc5424(line)
    assert message["pri"] == str(10 * 8 + 4)  # authpriv.warning
    assert message["msgid"] == "process_kprobe"
    assert json.loads(message["msg"]) == event


async def test_tls_with_untrusted_server_certificate_is_transient(rsyslog: Rsyslog) -> None:
    """Without the test CA the handshake fails: a transient error, nothing sent."""
    syslog = sink(rsyslog, "tls", rsyslog.tls_port)  # system CAs only
    with pytest.raises(TransientSinkError, match="tls connect"):
        await syslog.send([exec_event()])


async def test_tls_verify_off_accepts_any_certificate(rsyslog: Rsyslog) -> None:
    """tls_verify false encrypts without checking the server (an explicit opt-out)."""
    syslog = sink(rsyslog, "tls", rsyslog.tls_port, tls_verify=False)
    marker, event = marked_event()
    await syslog.send([event])
    await syslog.close()
    assert rsyslog.wait_for(marker)


async def test_tcp_connection_refused_then_reconnects() -> None:
    """A receiver that is down raises TransientSinkError; the next send connects."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    syslog = SyslogSink("siem", SyslogConfig(port=port, protocol="tcp", timeout=2))
    with pytest.raises(TransientSinkError, match="connect"):
        await syslog.send([exec_event()])

    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()  # the receiver drops every connection after one read

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        for _ in range(2):
            await syslog.send([exec_event()])
            await asyncio.sleep(0.2)  # let the close reach us: the next send reconnects
        await syslog.close()
    assert len(received) == 2
    assert all(re.fullmatch(rb"\d+ <134>1 .*", data, re.DOTALL) for data in received)


async def test_udp_port_unreachable_is_transient() -> None:
    """ICMP port unreachable from an earlier datagram makes a later send transient."""
    syslog = SyslogSink("siem", SyslogConfig(port=free_udp_port(), protocol="udp"))
    with pytest.raises(TransientSinkError, match="udp send"):
        for _ in range(5):
            await syslog.send([exec_event()])
            await asyncio.sleep(0.05)
    await syslog.close()


async def test_udp_oversized_event_is_rejected_not_retried() -> None:
    """An event too large for any datagram is rejected; the rest of the batch goes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        config = SyslogConfig(port=receiver.getsockname()[1], protocol="udp")
        syslog = SyslogSink("siem", config)
        huge = exec_event(process(arguments="x" * 70_000))
        result = await syslog.send([exec_event(), huge, exec_event()])
        await syslog.close()
        assert [r.index for r in result.rejected] == [1]
        assert "too large" in result.rejected[0].reason


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"hostname": "my host\n"}, "my_host_", id="hostname-sanitised"),
        pytest.param({}, NODE, id="hostname-from-event"),
    ],
)
def test_message_hostname(options: dict[str, Any], expected: str) -> None:
    """HOSTNAME is printable ASCII without spaces, taken from the event by default."""
    message = parse_rfc5424(format_message(SyslogConfig(**options), exec_event()).decode())
    assert message["hostname"] == expected


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"facility": "local9"}, id="unknown-facility-name"),
        pytest.param({"facility": 24}, id="facility-out-of-range"),
        pytest.param({"protocol": "sctp"}, id="unknown-protocol"),
        pytest.param({"format": "xml"}, id="unknown-format"),
        pytest.param({"app_name": "x" * 49}, id="app-name-too-long"),
        pytest.param({"protocol": "tls", "tls_ca_file": "/nonexistent/ca.pem"}, id="missing-ca"),
    ],
)
def test_config_rejects(options: dict[str, Any]) -> None:
    """Bad options fail validation with the field named."""
    with pytest.raises(ValidationError):
        SyslogConfig(**options)


def test_registered_as_syslog() -> None:
    """The `syslog` type resolves to SyslogSink."""
    assert sink_class("syslog") is SyslogSink
