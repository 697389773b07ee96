"""`ocellus status`: every service on every node, from their heartbeats.

Heartbeats (``ocellus.status.<service>.<node>``) are kept in the JetStream
stream OCELLUS_STATUS, the last two per service and node (created here on
first use): one read gives each service's latest beat, its age, and the rates
between its last two beats; a stopped service's last beat stays there and
ages. Unhealthy, and exit 1: a heartbeat older than 3 status intervals, drops
that configuration did not ask for increasing between the two beats, a policy
in error (or stale: a refused change), a hook the sensor could not attach, a
sink not running; or no heartbeat at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy, StorageType, StreamConfig

from schemas import codec, subjects
from services.cli import connection
from services.cli.settings import Settings
from services.common import bus
from services.common.heartbeats import vitals
from services.common.logging import get_logger

log = get_logger("ocellus.status")

STATUS_STREAM = "OCELLUS_STATUS"
STATUS_MAX_AGE = 86400.0  # a node gone for a day drops off the screen
STALE_INTERVALS = 3
EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1
SERVICE_ORDER = ("sensor", "enricher", "enforcer", "exporter")


def add_status_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser(
        "status",
        parents=[common],
        help="every service on every node: heartbeats, rates, drops, policies (exit 1: unhealthy)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="redraw every SECONDS (2) until Ctrl-C",
    )


@dataclass
class ServiceRow:
    node: str
    service: str
    age: float  # seconds since the latest heartbeat
    uptime: float
    in_rate: float | None  # events/s between the last two heartbeats
    out_rate: float | None
    dropped: float  # drops configuration did not ask for, in total
    dropped_since: float | None  # of which since the previous heartbeat
    intended_drops: float  # filtered, rate-limited
    levels: dict[str, float]
    problems: list[str] = field(default_factory=list)


@dataclass
class PolicyRow:
    node: str
    name: str
    state: str
    mode: str
    counters: dict[str, int]
    error: str | None


@dataclass
class Report:
    services: list[ServiceRow]
    policies: list[PolicyRow]
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, **asdict(self)}


async def run_status(settings: Settings, args: argparse.Namespace) -> int:
    refused = connection.Refused()
    nc = await connection.connect(settings, "status", refused)
    try:
        if await ensure_status_stream(nc):
            # Nothing kept yet: wait for two beats of every running service.
            await refused.sleep(2 * settings.status_interval + 0.5)
        while not refused.reason:
            try:
                beats = await read_heartbeats(nc)
            except nats.errors.Error as e:
                if refused.reason:  # the read failed because of it
                    break
                if not args.watch:
                    raise
                # A watch outlives a NATS restart: the next round tries again.
                log.warning("reading the heartbeats failed; retrying",
                            reason=str(e) or type(e).__name__)  # fmt: skip
                await refused.sleep(args.watch)
                continue
            report = build_report(beats, settings.status_interval, time.time())
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(json.dumps(report.as_dict()) if args.json else render(report), flush=True)
            if not args.watch:
                return EXIT_HEALTHY if report.healthy else EXIT_UNHEALTHY
            await refused.sleep(args.watch)
        return refused.report("status", settings.nats_url)
    finally:
        await bus.drain(nc, settings.drain_timeout)


async def ensure_status_stream(nc: NATS) -> bool:
    """OCELLUS_STATUS exists; True when it was created now (it holds nothing yet)."""
    js = nc.jetstream()
    try:
        await js.stream_info(STATUS_STREAM)
        return False
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(
        name=STATUS_STREAM,
        subjects=[subjects.status_all()],
        storage=StorageType.MEMORY,
        max_msgs_per_subject=2,
        max_age=STATUS_MAX_AGE,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        return False  # created meanwhile by another `ocellus status`
    return True


async def read_heartbeats(nc: NATS) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(service, node) -> its kept heartbeats, oldest first."""
    js = nc.jetstream()
    info = await js.stream_info(STATUS_STREAM)
    beats: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if not info.state.messages:
        return beats
    sub = await js.subscribe(
        subjects.status_all(),
        stream=STATUS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=2.0)
            except nats.errors.TimeoutError:
                break
            try:
                body = codec.unpack(msg.data)
            except codec.DecodeError:
                body = None
            if isinstance(body, dict) and "service" in body and "node" in body:
                beats.setdefault((str(body["service"]), str(body["node"])), []).append(body)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return beats


def build_report(
    beats: dict[tuple[str, str], list[dict[str, Any]]], interval: float, now: float
) -> Report:
    """What the kept heartbeats say, at wall time ``now``."""
    services: list[ServiceRow] = []
    policies: list[PolicyRow] = []
    for (service, node), kept in sorted(beats.items(), key=_order):
        latest = kept[-1]
        row = _service_row(service, node, latest, kept[-2] if len(kept) > 1 else None, now)
        if row.age > STALE_INTERVALS * interval:
            row.problems.append(
                f"last heartbeat {row.age:.1f}s ago (more than {STALE_INTERVALS} intervals)"
            )
        if row.dropped_since:
            row.problems.append(f"{row.dropped_since:g} events dropped since the last heartbeat")
        row.problems.extend(_own_problems(service, latest))
        services.append(row)
        for p in latest.get("policies", []) if service == "enforcer" else []:
            policies.append(
                PolicyRow(
                    node,
                    str(p.get("name", "")),
                    str(p.get("state", "")),
                    str(p.get("mode", "")),
                    {k: int(v) for k, v in (p.get("counters") or {}).items()},
                    p.get("error"),
                )
            )
    problems = [f"{r.service} on {r.node}: {p}" for r in services for p in r.problems]
    for p in policies:
        if p.state not in ("applied",):
            problems.append(f"policy {p.name!r} on {p.node}: {p.state}: {p.error or ''}".rstrip())
    if not services:
        problems.append("no heartbeat from any service")
    return Report(services, policies, problems)


def _order(item: tuple[tuple[str, str], Any]) -> tuple[str, int, str]:
    service, node = item[0]
    rank = SERVICE_ORDER.index(service) if service in SERVICE_ORDER else len(SERVICE_ORDER)
    return node, rank, service


def _service_row(
    service: str, node: str, latest: dict[str, Any], previous: dict[str, Any] | None, now: float
) -> ServiceRow:
    v = vitals(latest)
    in_rate = out_rate = dropped_since = None
    # A restart between the beats resets the counters: no rates across it.
    if previous is not None and previous.get("uptime", 0) <= latest.get("uptime", 0):
        dt = (latest["time"] - previous["time"]) / 1e9
        p = vitals(previous)
        if dt > 0 and v.flows:
            in_rate = (v.events_in - p.events_in) / dt
            out_rate = (v.events_out - p.events_out) / dt
        dropped_since = max(0.0, v.lost - p.lost)
    return ServiceRow(
        node=node,
        service=service,
        age=max(0.0, now - latest.get("time", 0) / 1e9),
        uptime=float(latest.get("uptime", 0)),
        in_rate=in_rate,
        out_rate=out_rate,
        dropped=v.lost,
        dropped_since=dropped_since,
        intended_drops=sum(v.drops.values()) - v.lost,
        levels=v.levels,
    )


def _own_problems(service: str, body: dict[str, Any]) -> list[str]:
    if service == "sensor":
        failed = (body.get("hooks") or {}).get("failed") or {}
        return [f"hook on tracepoint {tp} not attached: {why}" for tp, why in failed.items()]
    if service == "exporter":
        return [
            f"sink {name!r} {c.get('state')}"
            for name, c in sorted((body.get("sinks") or {}).items())
            if c.get("state") != "running"
        ]
    return []


def render(report: Report) -> str:
    """One screen: services, then policies, then what is wrong."""
    lines = []
    header = ("NODE", "SERVICE", "AGE", "UPTIME", "IN/s", "OUT/s", "DROPPED", "CACHES & QUEUES")
    rows: list[tuple[str, ...]] = [header]
    for r in report.services:
        dropped = f"{r.dropped:g}"
        if r.dropped_since:
            dropped += f" (+{r.dropped_since:g})"
        if r.intended_drops:
            dropped += f", {r.intended_drops:g} by config"
        levels = ", ".join(f"{k} {v:g}" for k, v in r.levels.items()) or "-"
        rows.append(
            (
                r.node,
                r.service,
                _seconds(r.age),
                _seconds(r.uptime),
                _rate(r.in_rate),
                _rate(r.out_rate),
                dropped,
                levels,
            )
        )
    lines.extend(_table(rows))
    if report.policies:
        lines.append("")
        rows = [("NODE", "POLICY", "STATE", "MODE", "MATCHED", "POSTED", "SIGNALLED", "ERROR")]
        for p in report.policies:
            c = p.counters
            rows.append(
                (
                    p.node,
                    p.name,
                    p.state,
                    p.mode,
                    str(c.get("matched", 0)),
                    str(c.get("posted", 0)),
                    str(c.get("signalled", 0)),
                    p.error or "",
                )
            )
        lines.extend(_table(rows))
    lines.append("")
    if report.healthy:
        lines.append("healthy")
    else:
        lines.append("unhealthy:")
        lines.extend(f"  {p}" for p in report.problems)
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
