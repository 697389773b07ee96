"""Coalescing: a sink that pays per send (json_file: an fdatasync) gets the
batches that queued up while it was busy in one send; every event still
arrives once and in order, rejections still hit exactly the rejected events,
and a sink that does not ask for it never gets more than batch_size."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from nats.aio.client import Client as NATS

from services.exporter.sinks import SINK_TYPES
from services.exporter.sinks.base import BatchResult, Event, Rejection, Sink, SinkConfig
from tests.exporter.exporter_helpers import (
    StatusCollector,
    create_stream,
    make_event,
    marker_of,
    publish,
    running_exporter,
    settings_for,
    wait_until,
    write_config,
)

BATCH, INFLIGHT, EVENTS = 10, 60, 300


class GatedSink(Sink):
    """Test sink: its first send waits for ``gate`` (a receiver busy for a
    while); records every send; refuses events whose arguments hold "bad"."""

    config_type = SinkConfig
    coalesce = True
    gate: ClassVar[asyncio.Event]
    sends: ClassVar[list[list[str]]]

    async def send(self, events: Sequence[Event]) -> BatchResult:
        if not self.sends:
            await self.gate.wait()
        markers = [marker_of(dict(e)) for e in events]
        self.sends.append(markers)
        return BatchResult([Rejection(i, "bad") for i, m in enumerate(markers) if "bad" in m])


class UncoalescedSink(GatedSink):
    coalesce = False


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> type[GatedSink]:
    monkeypatch.setitem(SINK_TYPES, "test_gated", f"{__name__}:GatedSink")
    monkeypatch.setitem(SINK_TYPES, "test_uncoalesced", f"{__name__}:UncoalescedSink")
    GatedSink.gate = asyncio.Event()
    GatedSink.sends = []
    return GatedSink


@pytest.mark.parametrize(
    ("sink_type", "coalesced"), [("test_gated", True), ("test_uncoalesced", False)]
)
async def test_batches_waiting_for_a_busy_sink_go_in_one_send(
    nc: NATS,
    nats_url: str,
    tmp_path: Path,
    gated: type[GatedSink],
    sink_type: str,
    coalesced: bool,
) -> None:
    """Held-up batches arrive together (coalesce) or one by one; none lost or reordered."""
    await create_stream(nc)
    limits = {"batch_size": BATCH, "max_inflight": INFLIGHT, "dead_letter": False}
    sink = {"name": "gated", "type": sink_type, **limits}
    config = write_config(tmp_path / "exporter.yaml", [sink])
    events = [make_event(i, arguments=f"bad-{i}" if i % 7 == 3 else None) for i in range(EVENTS)]
    status = await StatusCollector.subscribe(nc)
    async with running_exporter(settings_for(nats_url, config)):
        await publish(nc, events)
        # The first send holds the gate; the fetcher fills what max_inflight allows.
        await wait_until(lambda: status.sink("gated").get("ack_pending") == INFLIGHT)
        gated.gate.set()
        await wait_until(lambda: status.sink("gated").get("lag") == 0)
        await wait_until(lambda: status.sink("gated").get("ack_pending") == 0)
    sizes = [len(s) for s in gated.sends]
    assert (max(sizes) > BATCH) is coalesced, sizes
    assert max(sizes) <= INFLIGHT
    delivered = [m for s in gated.sends for m in s]
    assert delivered == [marker_of(e) for e in events]  # once each, in order
    bad = sum(1 for m in delivered if "bad" in m)
    counters = status.sink("gated")
    assert (counters["sent"], counters["dropped"]) == (EVENTS - bad, bad)
