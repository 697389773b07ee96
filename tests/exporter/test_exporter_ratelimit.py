"""Rate limits are never silent: a rate_limit_info event carries the exact
number dropped; backoff is exponential with full jitter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from services.exporter.config import RetryPolicy, parse_config
from services.exporter.pipeline import EventPipeline, Verdict
from services.exporter.ratelimit import RateLimiter, TokenBucket, rate_limit_info_event
from services.exporter.retry import backoff_delay
from tests.exporter.exporter_helpers import (
    StatusCollector,
    create_stream,
    make_event,
    publish,
    read_lines,
    running_exporter,
    settings_for,
    wait_until,
    write_config,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_then_rate() -> None:
    """A full bucket passes `burst` at once, then `rate` per second."""
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.5
    assert sum(bucket.take() for _ in range(10)) == 5


@pytest.mark.parametrize(
    ("offered", "expected_dropped"),
    [
        pytest.param(5, 0, id="within-burst"),
        pytest.param(6, 1, id="one-over"),
        pytest.param(1000, 995, id="flood"),
    ],
)
def test_rate_limiter_reports_the_exact_number_dropped(offered: int, expected_dropped: int) -> None:
    """After the report interval, due_report() is exactly what was dropped, once."""
    clock = FakeClock()
    limiter = RateLimiter(events_per_second=1, burst=5, report_interval=10, clock=clock)
    admitted = sum(limiter.admit() for _ in range(offered))
    assert admitted + limiter.dropped == offered
    assert limiter.due_report() == 0  # the window is not over yet
    clock.now += 10
    assert limiter.due_report() == expected_dropped
    assert limiter.due_report() == 0  # reported once


def test_rate_limit_info_event_is_tetragons_shape() -> None:
    """`{"rate_limit_info": {"number_of_dropped_process_events": N}, "node_name", "time"}`."""
    event = rate_limit_info_event(42, "node-a", 1_764_327_600_123_000_000)
    assert json.dumps(event, separators=(",", ":")) == (
        '{"rate_limit_info":{"number_of_dropped_process_events":42},'
        '"node_name":"node-a","time":"2025-11-28T11:00:00.123Z"}'
    )


def test_pipeline_turns_drops_into_one_info_event_per_window() -> None:
    """The pipeline counts rate-limited events and hands out one info event per window."""
    clock = FakeClock()
    sink = {"name": "s", "type": "json_file", "options": {"path": "/tmp/x"}}
    sink["rate_limit"] = {"events_per_second": 2, "burst": 2, "report_interval": 1}
    spec = parse_config({"sinks": [sink]}).sinks[0].spec
    pipeline = EventPipeline(spec, "node-a", clock=clock)
    verdicts = [pipeline.process(make_event(i)) for i in range(10)]
    assert verdicts.count(Verdict.SEND) == 2 and verdicts.count(Verdict.RATE_LIMITED) == 8
    assert pipeline.rate_limit_report() is None
    clock.now += 1
    report = pipeline.rate_limit_report()
    assert report is not None
    assert report["rate_limit_info"] == {"number_of_dropped_process_events": 8}
    assert pipeline.rate_limit_report() is None


@pytest.mark.parametrize("attempt", [1, 2, 5, 30])
def test_backoff_is_full_jitter_under_an_exponential_ceiling(attempt: int) -> None:
    """Delays lie in [0, min(max, initial·2^(n-1))]; the extremes are reachable."""
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=8)
    ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
    assert backoff_delay(attempt, policy, rand=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, policy, rand=lambda: 1.0) == ceiling
    assert 0 <= backoff_delay(attempt, policy) <= ceiling


async def test_exporter_rate_limit_emits_rate_limit_info_with_exact_count(
    nc: NATS, nats_url: str, tmp_path: Path
) -> None:
    """Through the service: events beyond the limit are replaced by info events whose
    counts add up exactly to what was dropped."""
    await create_stream(nc)
    out = tmp_path / "out"
    sink = {
        "name": "file",
        "type": "json_file",
        "options": {"path": str(out / "events.json")},
        "rate_limit": {"events_per_second": 20, "burst": 20, "report_interval": 0.5},
    }
    config = write_config(tmp_path / "exporter.yaml", [sink])
    status = await StatusCollector.subscribe(nc)
    await publish(nc, [make_event(i) for i in range(400)])
    async with running_exporter(settings_for(nats_url, config)):
        await wait_until(lambda: status.sink("file").get("received") == 400)

        def reported() -> int:
            infos = [e for e in read_lines(out) if "rate_limit_info" in e]
            return sum(e["rate_limit_info"]["number_of_dropped_process_events"] for e in infos)

        def infos_sent() -> int:
            return sum("rate_limit_info" in e for e in read_lines(out))

        await wait_until(lambda: reported() == status.sink("file").get("rate_limited"))
        await wait_until(lambda: status.sink("file").get("rate_limit_reports") == infos_sent())
    lines = read_lines(out)
    events = [e for e in lines if "process_exec" in e]
    infos = [e for e in lines if "rate_limit_info" in e]
    dropped = sum(e["rate_limit_info"]["number_of_dropped_process_events"] for e in infos)
    assert infos and len(events) + dropped == 400
    assert all(e["node_name"] == "test.node" for e in infos)
