"""Syslog sink: RFC 5424 messages over UDP, TCP or TLS, with a CEF, LEEF or
JSON payload.

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`` where
TIMESTAMP is the event's time (RFC 5424 allows at most microseconds, so
nanoseconds are cut), HOSTNAME the event's node (or ``hostname``), MSGID the
event kind, PROCID and STRUCTURED-DATA the nil value ``-``, and the severity in
PRI follows the event: informational for process events, notice for a policy
match, warning for a policy that killed or signalled.

Transports: UDP (RFC 5426) sends one datagram per event and cannot know whether
it arrived. TCP and TLS (RFC 5425) frame messages by octet counting (RFC 6587,
``LEN SP MSG``), so a payload may hold any byte. A failed connect or write raises
``TransientSinkError`` and the next send reconnects. Plain syslog over TCP has
no application acknowledgement: a batch written into a connection that the
receiver has just closed can be lost without an error; the sink notices a closed
connection before each batch and reconnects, which narrows that window but
cannot close it (RELP would).
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from services.exporter.formats import format_cef, format_leef
from services.exporter.formats.common import extract
from services.exporter.formats.facts import EventFacts
from services.exporter.sinks.base import (
    BatchResult,
    Event,
    Rejection,
    Sink,
    SinkConfig,
    TransientSinkError,
)
from services.exporter.sinks.siem_options import ReadableFile, client_tls_context

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13,
    "console": 14, "solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18,
    "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
SEVERITY_INFO, SEVERITY_NOTICE, SEVERITY_WARNING = 6, 5, 4
NIL = "-"


class SyslogConfig(SinkConfig):
    type: Literal["syslog"] = "syslog"
    host: str = "127.0.0.1"
    port: int = Field(514, ge=1, le=65535)
    protocol: Literal["udp", "tcp", "tls"] = "udp"
    format: Literal["cef", "leef", "json"] = "cef"
    facility: int | str = "local0"  # a number 0-23 or a name (local0, authpriv, ...)
    app_name: str = Field("ocellus", min_length=1, max_length=48)
    hostname: str | None = None  # HOSTNAME field; default: the event's node_name
    tls_ca_file: ReadableFile | None = None  # CA bundle for the server; default: system CAs
    tls_verify: bool = True  # verify the server's certificate and name
    tls_cert_file: ReadableFile | None = None  # client certificate, for receivers that ask
    tls_key_file: ReadableFile | None = None  # its key, if not in tls_cert_file
    timeout: float = Field(5.0, gt=0)  # connect and write, seconds

    @field_validator("facility")
    @classmethod
    def _facility_known(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 23:
            raise ValueError("facility must be 0-23")
        if isinstance(value, str) and value not in FACILITIES:
            raise ValueError(f"unknown facility {value!r} (known: {', '.join(FACILITIES)})")
        return value

    @property
    def facility_code(self) -> int:
        return self.facility if isinstance(self.facility, int) else FACILITIES[self.facility]


def _header_token(value: str, max_len: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, or ``-``."""
    cleaned = "".join(c if "!" <= c <= "~" else "_" for c in value)[:max_len]
    return cleaned or NIL


def _timestamp(rfc3339: str) -> str:
    """RFC 3339 with at most 6 fractional digits (RFC 5424 TIME-SECFRAC)."""
    if not rfc3339:
        return NIL
    head, dot, rest = rfc3339.partition(".")
    if not dot:
        return rfc3339
    digits = rest.rstrip("Z")
    return f"{head}.{digits[:6]}Z" if rest.endswith("Z") else rfc3339


def _severity(facts: EventFacts) -> int:
    if not facts.is_policy_hit:
        return SEVERITY_INFO
    return SEVERITY_WARNING if facts.enforced else SEVERITY_NOTICE


PAYLOAD_FORMATS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "cef": format_cef,
    "leef": format_leef,
    "json": lambda event: json.dumps(event, separators=(",", ":"), ensure_ascii=False),
}


def format_message(config: SyslogConfig, event: Mapping[str, Any]) -> bytes:
    """One RFC 5424 message (UTF-8, no framing) for an event."""
    facts = extract(event)
    pri = config.facility_code * 8 + _severity(facts)
    header = " ".join(
        (
            f"<{pri}>1",
            _timestamp(facts.time),
            _header_token(config.hostname or facts.node, 255),
            _header_token(config.app_name, 48),
            NIL,  # PROCID
            _header_token(facts.kind, 32),
            NIL,  # STRUCTURED-DATA
        )
    )
    return f"{header} {PAYLOAD_FORMATS[config.format](event)}".encode()


class SyslogSink(Sink):
    config_type = SyslogConfig
    config: SyslogConfig

    def __init__(self, name: str, config: SyslogConfig) -> None:
        super().__init__(name, config)
        self._udp: socket.socket | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        await self._ensure_connected()

    async def send(self, events: Sequence[Event]) -> BatchResult:
        result = BatchResult()
        messages: list[tuple[int, bytes]] = []
        for index, event in enumerate(events):
            try:
                messages.append((index, format_message(self.config, event)))
            except ValueError as e:  # an event no format can render (no event kind)
                result.rejected.append(Rejection(index, f"cannot format: {e}"))
        await self._ensure_connected()
        if self.config.protocol == "udp":
            result.rejected += self._send_datagrams(messages)
        else:
            await self._send_stream(b"".join(b"%d %s" % (len(m), m) for _, m in messages))
        return result

    async def close(self) -> None:
        self._drop_connection()

    # -- transports -------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self.config.protocol == "udp":
            if self._udp is None:
                self._udp = await self._connect_udp()
            return
        # A receiver that closed the connection shows as EOF on our read side.
        if self._reader is not None and self._reader.at_eof():
            self._drop_connection()
        if self._writer is None:
            self._reader, self._writer = await self._connect_stream()

    async def _connect_udp(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self.config.host, self.config.port, type=socket.SOCK_DGRAM
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.connect(address)  # a connected UDP socket reports ICMP errors on send
        except OSError as e:
            raise TransientSinkError(self.name, f"udp {self._target}: {e}") from e
        return sock

    async def _connect_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        cfg = self.config
        try:
            tls = None
            if cfg.protocol == "tls":
                tls = client_tls_context(
                    cfg.tls_ca_file, cfg.tls_verify, cfg.tls_cert_file, cfg.tls_key_file
                )
            connecting = asyncio.open_connection(
                cfg.host, cfg.port, ssl=tls, server_hostname=cfg.host if tls else None
            )
            return await asyncio.wait_for(connecting, cfg.timeout)
        except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
            raise TransientSinkError(
                self.name, f"{cfg.protocol} connect {self._target}: {e!r}"
            ) from e

    def _send_datagrams(self, messages: list[tuple[int, bytes]]) -> list[Rejection]:
        assert self._udp is not None
        rejected = []
        for index, message in messages:
            try:
                self._udp.send(message)
            except OSError as e:
                if e.errno == errno.EMSGSIZE:  # this event can never fit in a datagram
                    rejected.append(Rejection(index, f"{len(message)} bytes: too large for UDP"))
                    continue
                # ICMP port unreachable from an earlier datagram, or a full buffer.
                self._drop_connection()
                raise TransientSinkError(self.name, f"udp send {self._target}: {e}") from e
        return rejected

    async def _send_stream(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.config.timeout)
        except (OSError, TimeoutError) as e:
            self._drop_connection()
            raise TransientSinkError(
                self.name, f"{self.config.protocol} write {self._target}: {e!r}"
            ) from e

    def _drop_connection(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._writer is not None:
            self._writer.close()  # no wait_closed: a dead peer must not stall us
            self._writer = None
            self._reader = None

    @property
    def _target(self) -> str:
        return f"{self.config.host}:{self.config.port}"
