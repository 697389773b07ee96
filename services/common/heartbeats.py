"""What a service's heartbeat (``ocellus.status.<service>.<node>``) says, as
metric samples: read by the /metrics endpoint and OTLP metrics of the service
itself, and by `ocellus status` from the heartbeats on the bus, so both speak
of the same counters in the same terms.

Every counter a heartbeat carries appears as ``ocellus_counter_total{counter}``;
the families below give the ones that matter their meaning: events in and
out, drops by stage and reason, cache and queue sizes, lag, policy counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from nats.aio.client import Client as NATS

from schemas import codec, subjects

Kind = Literal["counter", "gauge"]


def heartbeat(service: str, node: str, started: float, **fields: Any) -> dict[str, Any]:
    """A heartbeat body: who, when, for how long (``started``: monotonic), and
    the service's own ``fields`` (counters, policies, sinks, ...)."""
    return {
        "service": service,
        "node": node,
        "time": time.time_ns(),
        "uptime": round(time.monotonic() - started, 3),
        **fields,
    }


async def publish(nc: NATS, body: dict[str, Any]) -> None:
    """Send a heartbeat on ocellus.status.<service>.<node> (nothing once closed)."""
    if nc.is_closed:
        return
    await nc.publish(subjects.status(body["service"], body["node"]), codec.pack(body))


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # Prometheus name; counters end in _total, OTLP drops the suffix
    kind: Kind
    help: str


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


FAMILIES = {
    f.name: f
    for f in (
        Family("ocellus_ready", "gauge", "1 when the service is ready (as /readyz says)"),
        Family("ocellus_nats_connected", "gauge", "1 while the NATS connection is up"),
        Family("ocellus_uptime_seconds", "gauge", "seconds since the service started"),
        Family("ocellus_events_in_total", "counter", "events the service took in"),
        Family("ocellus_events_out_total", "counter", "events the service passed on"),
        Family(
            "ocellus_dropped_total",
            "counter",
            "events dropped, by stage and reason (filtered and rate_limited are by configuration)",
        ),
        Family("ocellus_cache_entries", "gauge", "entries in a cache"),
        Family("ocellus_queue_depth", "gauge", "items waiting in a queue"),
        Family("ocellus_consumer_lag", "gauge", "events in the stream not yet delivered to a sink"),
        Family("ocellus_consumer_ack_pending", "gauge", "events delivered to a sink, not acked"),
        Family("ocellus_sink_state", "gauge", "1 for the state a sink is in"),
        Family("ocellus_counter_total", "counter", "every counter of the service's heartbeat"),
        Family("ocellus_sensor_hooks_attached", "gauge", "tracepoints the hook program is on"),
        Family("ocellus_sensor_hooks_failed", "gauge", "tracepoints the hook program is not on"),
        Family("ocellus_policy_state", "gauge", "1 for the state and mode a policy is in"),
        Family("ocellus_policy_matched_total", "counter", "hook hits whose selectors matched"),
        Family("ocellus_policy_posted_total", "counter", "events a policy posted"),
        Family("ocellus_policy_signalled_total", "counter", "signals a policy sent"),
        Family("ocellus_policy_filtered_total", "counter", "hook hits filtered out in the kernel"),
        Family("ocellus_policy_denied_total", "counter", "connects a policy denied (Override)"),
        Family("ocellus_policy_ratelimited_total", "counter", "posts a rateLimit suppressed"),
        Family(
            "ocellus_policy_monitored_total",
            "counter",
            "monitor mode: matches that would have signalled or denied",
        ),
        Family("ocellus_enforcer_sensor_answered", "gauge", "1 when the sensor answered a sync"),
        Family("ocellus_bpf_stats_enabled", "gauge", "1 while kernel.bpf_stats_enabled is on"),
        Family("ocellus_bpf_program_runs_total", "counter", "runs of a BPF program"),
        Family("ocellus_bpf_program_run_seconds_total", "counter", "time spent in a BPF program"),
    )
}

# Drops that configuration asks for: reported, never a sign of trouble.
INTENDED_DROPS = frozenset({"filtered", "rate_limited"})

# Heartbeat counters that are levels, not totals.
_GAUGE_KEYS = frozenset({"queued", "cache_size", "held", "hooks_known", "lag", "ack_pending"})

# (heartbeat counter, stage, reason)
_SENSOR_DROPS = (
    ("kernel_ringbuf_full", "kernel", "ringbuf_full"),
    ("kernel_return_lost", "kernel", "return_lost"),
    ("queue_dropped", "queue", "queue_full"),
    ("decode_errors", "decode", "undecodable"),
)
_ENRICHER_DROPS = (
    ("malformed_messages", "input", "malformed"),
    ("invalid_records", "input", "invalid"),
    ("hook_unknown", "hooks", "unknown_hook"),
    ("events_failed", "publish", "not_stored"),
)
# Every event an exporter fetched ends in one of these or is sent (counters.py);
# rejected and malformed are why something was dead-lettered or dropped.
_EXPORTER_DROPS = (
    ("filtered", "filter", "filtered"),
    ("rate_limited", "rate_limit", "rate_limited"),
    ("dead_lettered", "dead_letter", "dead_lettered"),
    ("dropped", "sink", "dropped"),
)
_POLICY_COUNTERS = (
    "matched", "posted", "signalled", "filtered", "denied", "ratelimited", "monitored",
)  # fmt: skip


def samples(body: dict[str, Any]) -> list[Sample]:
    """The samples a heartbeat body says, labelled with its service and node."""
    service = str(body.get("service", ""))
    base = {"service": service, "node": str(body.get("node", ""))}
    out = list(_samples(service, body))
    return [Sample(s.name, {**base, **s.labels}, s.value) for s in out]


def _samples(service: str, body: dict[str, Any]) -> Iterator[Sample]:
    if "uptime" in body:
        yield Sample("ocellus_uptime_seconds", {}, float(body["uptime"]))
    if service == "sensor":
        yield from _sensor(body)
    elif service == "enricher":
        yield from _enricher(body)
    elif service == "enforcer":
        yield from _enforcer(body)
    elif service == "exporter":
        yield from _exporter(body)


def _counters(counters: dict[str, Any], labels: dict[str, str] | None = None) -> Iterator[Sample]:
    for key, value in sorted(counters.items()):
        if isinstance(value, int | float) and key not in _GAUGE_KEYS:
            yield Sample("ocellus_counter_total", {**(labels or {}), "counter": key}, value)


def _drops(
    counters: dict[str, Any], table: tuple[tuple[str, str, str], ...], **labels: str
) -> Iterator[Sample]:
    for key, stage, reason in table:
        yield Sample(
            "ocellus_dropped_total",
            {**labels, "stage": stage, "reason": reason},
            counters.get(key, 0),
        )


def _sensor(body: dict[str, Any]) -> Iterator[Sample]:
    c = body.get("counters", {})
    yield from _counters(c)
    yield Sample("ocellus_events_in_total", {"type": "ringbuf"}, c.get("received", 0))
    for key, value in sorted(c.items()):
        if key.startswith("published_"):
            kind = key.removeprefix("published_")
            yield Sample("ocellus_events_out_total", {"type": kind}, value)
    yield from _drops(c, _SENSOR_DROPS)
    yield Sample("ocellus_queue_depth", {"queue": "publish"}, c.get("queued", 0))
    hooks = body.get("hooks") or {}
    attached = len(hooks.get("attached", [])) + len(hooks.get("attached_exit", []))
    yield Sample("ocellus_sensor_hooks_attached", {}, attached)
    yield Sample("ocellus_sensor_hooks_failed", {}, len(hooks.get("failed", {})))


def _enricher(body: dict[str, Any]) -> Iterator[Sample]:
    c = body.get("counters", {})
    yield from _counters(c)
    received = {k.removeprefix("received_"): v for k, v in c.items() if k.startswith("received_")}
    for kind, value in sorted(received.items()):
        yield Sample("ocellus_events_in_total", {"type": kind}, value)
    prefix = "events_published_"
    for key, value in sorted(c.items()):
        if key.startswith(prefix):
            yield Sample("ocellus_events_out_total", {"type": key.removeprefix(prefix)}, value)
    yield from _drops(c, _ENRICHER_DROPS)
    yield Sample("ocellus_cache_entries", {"cache": "process"}, c.get("cache_size", 0))
    yield Sample("ocellus_cache_entries", {"cache": "hooks"}, c.get("hooks_known", 0))
    yield Sample("ocellus_queue_depth", {"queue": "held"}, c.get("held", 0))


def _enforcer(body: dict[str, Any]) -> Iterator[Sample]:
    yield Sample("ocellus_enforcer_sensor_answered", {}, 1 if body.get("sensor") else 0)
    for policy in body.get("policies", []):
        name = str(policy.get("name", ""))
        state = {"policy": name, "state": str(policy.get("state", "")), "mode": policy.get("mode")}
        yield Sample("ocellus_policy_state", {k: str(v) for k, v in state.items()}, 1)
        counters = policy.get("counters") or {}
        for c in _POLICY_COUNTERS:
            yield Sample(f"ocellus_policy_{c}_total", {"policy": name}, counters.get(c, 0))


def _exporter(body: dict[str, Any]) -> Iterator[Sample]:
    for sink, c in sorted((body.get("sinks") or {}).items()):
        labels = {"sink": sink}
        yield from _counters(c, labels)
        yield Sample("ocellus_events_in_total", labels, c.get("received", 0))
        yield Sample("ocellus_events_out_total", labels, c.get("sent", 0))
        yield from _drops(c, _EXPORTER_DROPS, sink=sink)
        yield Sample("ocellus_consumer_lag", labels, c.get("lag", 0))
        yield Sample("ocellus_consumer_ack_pending", labels, c.get("ack_pending", 0))
        yield Sample("ocellus_sink_state", {**labels, "state": str(c.get("state", ""))}, 1)


@dataclass(frozen=True, slots=True)
class Vitals:
    """A heartbeat's totals, as `ocellus status` compares two of them."""

    events_in: float
    events_out: float
    flows: bool  # the service passes events at all (the enforcer does not)
    drops: dict[str, float]  # "stage/reason[/sink]" -> total
    levels: dict[str, float]  # caches, queues, lag: "process cache" -> size

    @property
    def lost(self) -> float:
        """Drops configuration did not ask for."""
        return sum(v for k, v in self.drops.items() if k.split("/")[1] not in INTENDED_DROPS)


def vitals(body: dict[str, Any]) -> Vitals:
    events_in = events_out = 0.0
    flows = False
    drops: dict[str, float] = {}
    levels: dict[str, float] = {}
    for s in _samples(str(body.get("service", "")), body):
        if s.name == "ocellus_events_in_total":
            events_in += s.value
            flows = True
        elif s.name == "ocellus_events_out_total":
            events_out += s.value
            flows = True
        elif s.name == "ocellus_dropped_total":
            parts = (s.labels["stage"], s.labels["reason"], s.labels.get("sink"))
            key = "/".join(p for p in parts if p)
            drops[key] = s.value
        elif s.name == "ocellus_cache_entries":
            levels[f"{s.labels['cache']} cache"] = s.value
        elif s.name == "ocellus_queue_depth":
            levels[s.labels["queue"]] = s.value
        elif s.name == "ocellus_consumer_lag":
            levels[f"lag {s.labels['sink']}"] = s.value
    return Vitals(events_in, events_out, flows, drops, levels)
