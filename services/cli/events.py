"""`ocellus events`: print enriched events from the bus (or a JSON-lines
file), one per line, filtered."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from schemas import codec, subjects
from schemas.events import GetEventsResponse, Process, event_type
from services.cli.render import compact
from services.common.logging import get_logger

log = get_logger("ocellus.events")


def _process(resp: GetEventsResponse) -> Process | None:
    kind = getattr(resp, event_type(resp))
    return getattr(kind, "process", None)


@dataclass(frozen=True)
class EventFilter:
    """All given conditions must hold (Tetragon's allow-list semantics)."""

    types: frozenset[str] = frozenset()
    binary: re.Pattern[str] | None = None
    namespace: str | None = None
    pod: re.Pattern[str] | None = None
    container: str | None = None  # name, or a prefix of the id
    policies: frozenset[str] = frozenset()  # events of these tracing policies only

    def accepts(self, resp: GetEventsResponse) -> bool:
        if self.types and event_type(resp) not in self.types:
            return False
        if self.policies:
            hook = resp.process_kprobe or resp.process_tracepoint
            if hook is None or hook.policy_name not in self.policies:
                return False
        process = _process(resp)
        if self.binary is not None and not self.binary.search(process.binary if process else ""):
            return False
        pod = process.pod if process is not None else None
        if self.namespace is not None and (pod is None or pod.namespace != self.namespace):
            return False
        if self.pod is not None and (pod is None or not self.pod.search(pod.name)):
            return False
        if self.container is not None:
            c = pod.container if pod is not None else None
            if c is None:
                return False
            bare_id = c.id.split("://", 1)[-1]
            if c.name != self.container and not bare_id.startswith(self.container):
                return False
        return True


@dataclass
class EventPrinter:
    output: str = "compact"
    event_filter: EventFilter = field(default_factory=EventFilter)
    out: TextIO = sys.stdout
    malformed: int = 0

    def print(self, resp: GetEventsResponse) -> None:
        if not self.event_filter.accepts(resp):
            return
        line = resp.to_json_line() if self.output == "json" else compact(resp)
        if line is not None:
            self.out.write(line + "\n")
            self.out.flush()

    def print_lines(self, lines: Iterable[str]) -> None:
        """Events from a JSON-lines file (Tetragon's export format)."""
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                resp = GetEventsResponse.from_json_line(line)
            except ValidationError as e:
                self.malformed += 1
                log.warning(
                    "skipping line that is not an event", line=number, reason=str(e).splitlines()[0]
                )
                continue
            self.print(resp)


def decode_event(data: bytes) -> GetEventsResponse:
    body = codec.unpack(data)
    body.pop(codec.VERSION_KEY)
    return GetEventsResponse.from_json_dict(body)


async def subscribe_events(nc: NATS, printer: EventPrinter) -> Subscription:
    """Print enriched events as they are published."""

    async def on_message(msg: Msg) -> None:
        try:
            resp = decode_event(msg.data)
        except (codec.DecodeError, ValidationError) as e:
            printer.malformed += 1
            log.warning(
                "skipping malformed event", subject=msg.subject, reason=str(e).splitlines()[0]
            )
            return
        printer.print(resp)

    return await nc.subscribe(subjects.events_all(), cb=on_message)


async def run_events(nc: NATS, printer: EventPrinter, stop: asyncio.Event) -> None:
    sub = await subscribe_events(nc, printer)
    await stop.wait()
    if not nc.is_closed:  # the server may have ended it (Refused)
        await sub.unsubscribe()
