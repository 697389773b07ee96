"""What a sink's worker counts; every event fetched ends in exactly one of
filtered, rate_limited, sent, dead_lettered or dropped (or is still in flight)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SinkCounters:
    received: int = 0  # messages fetched
    filtered: int = 0  # dropped by allow/deny, acked
    rate_limited: int = 0  # dropped by the rate limit, acked, reported
    sent: int = 0  # delivered to the sink, acked
    retried: int = 0  # events sent again after a failed attempt
    rejected: int = 0  # refused by the receiver as invalid
    malformed: int = 0  # not an event
    dead_lettered: int = 0  # published to ocellus.deadletter.<sink>, acked
    dropped: int = 0  # given up on with no dead letter (dead_letter: false), acked
    rate_limit_reports: int = 0  # rate_limit_info events sent
    lag: int = 0  # in the stream, not yet delivered to this sink (heartbeat)
    ack_pending: int = 0  # delivered, not yet acked (heartbeat)
