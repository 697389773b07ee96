"""`ocellus events`: subscribe to the bus and print events, one per line."""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass, field
from typing import TextIO

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from schemas import codec, subjects
from schemas.events import GetEventsResponse, event_type
from services.cli.rawview import RawView
from services.cli.render import compact
from services.common.logging import get_logger

log = get_logger("ocellus.events")


@dataclass(frozen=True)
class EventFilter:
    types: frozenset[str] = frozenset()
    binary: re.Pattern[str] | None = None

    def accepts(self, resp: GetEventsResponse) -> bool:
        if self.types and event_type(resp) not in self.types:
            return False
        if self.binary is not None:
            kind = resp.process_exec or resp.process_exit
            binary = kind.process.binary if kind is not None else ""
            if not self.binary.search(binary):
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


async def subscribe_raw(nc: NATS, printer: EventPrinter) -> Subscription:
    """Print events built from the sensor's raw records."""
    view = RawView()

    async def on_message(msg: Msg) -> None:
        try:
            batch = codec.unpack(msg.data)
            events = view.events(batch)
        except (codec.DecodeError, KeyError, TypeError, ValueError) as e:
            printer.malformed += 1
            log.warning("skipping malformed message", subject=msg.subject, reason=str(e))
            return
        for resp in events:
            printer.print(resp)

    return await nc.subscribe(subjects.raw_all(), cb=on_message)


async def run_events(nc: NATS, printer: EventPrinter, stop: asyncio.Event) -> None:
    sub = await subscribe_raw(nc, printer)
    await stop.wait()
    await sub.unsubscribe()
