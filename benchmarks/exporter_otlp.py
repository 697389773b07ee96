"""Events/s through the OTLP sinks: `python -m benchmarks.exporter_otlp [--events N]
[--batch B] [--protocol grpc|http] [--sink logs|traces]`.

The sink runs here, alone on this process's core, as in an exporter process; the receiver
(tests/otlp_receiver.py, counting only) runs in a process of its own, so its CPU is not
charged to the sink. Events are realistic process_exec events (half in a pod's container),
or exec+exit pairs for the traces sink, built once with the schemas models. Prints one JSON
object: events/s over the wall clock, CPU µs per event in this process, and whether every
record arrived. Target (issue 6): 5,000 events/s per exporter process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from schemas.events import (
    Container,
    GetEventsResponse,
    Image,
    Pod,
    Process,
    ProcessExec,
    ProcessExit,
    exec_id,
)
from services.exporter.sinks.base import Sink
from services.exporter.sinks.otlp import (
    OtlpLogsConfig,
    OtlpLogsSink,
    OtlpTracesConfig,
    OtlpTracesSink,
)
from services.exporter.sinks.otlp_mapping import event_kind

REPO = Path(__file__).resolve().parents[1]
NODE = "bench-node"
T0 = 1_700_000_000 * 10**9
DISTINCT_LOGS = 2_000  # the logs stream cycles through these; traces need fresh exec ids


def _process(i: int, parent: Process | None) -> Process:
    """Process number ``i``: a worker; the odd ones in a pod's container."""
    pod = None
    if i % 2:
        container = Container(
            id=f"containerd://{i:064x}",
            name="app",
            image=Image(id=f"sha256:{i:064x}", name="registry.local/shop/app:1.4"),
            pid=i % 100 + 1,
        )
        pod = Pod(namespace="shop", name=f"app-{i % 50}", uid=f"uid-{i % 50}", container=container)
    ktime = 1_000 + i
    return Process(
        exec_id=exec_id(NODE, ktime, 10_000 + i),
        pid=10_000 + i,
        tid=10_000 + i,
        uid=1000,
        cwd="/srv/app",
        binary="/usr/bin/python3",
        arguments=f"-m worker --queue jobs-{i} --config '/etc/app/config file.yaml'",
        flags="execve clone",
        start_time=T0 + ktime,
        parent_exec_id=parent.exec_id if parent else "",
        pod=pod,
    )


def build_events(sink: str, count: int, first: int = 1) -> list[dict[str, Any]]:
    """``count`` events (logs: at most DISTINCT_LOGS, cycled); traces: exec+exit pairs of
    processes numbered from ``first``."""
    init = Process(exec_id=exec_id(NODE, 1, 1), pid=1, binary="/sbin/init", start_time=T0)
    shell = _process(0, init)
    events = []
    processes = min(count, DISTINCT_LOGS) if sink == "logs" else count // 2 + 1
    for i in range(first, first + processes):
        p = _process(i, shell)
        body = ProcessExec(process=p, parent=shell, ancestors=[init])
        events.append(GetEventsResponse(process_exec=body, node_name=NODE, time=T0 + i))
        if sink == "traces":
            end = ProcessExit(process=p, parent=shell, ancestors=[init], time=T0 + 10**6 + i)
            events.append(GetEventsResponse(process_exit=end, node_name=NODE, time=T0 + 10**6 + i))
    return [e.to_json_dict() for e in events]


def make_sink(sink: str, protocol: str, endpoint: str) -> Sink:
    if sink == "logs":
        return OtlpLogsSink("bench", OtlpLogsConfig(endpoint=endpoint, protocol=protocol))
    return OtlpTracesSink("bench", OtlpTracesConfig(endpoint=endpoint, protocol=protocol))


async def run(args: argparse.Namespace, endpoint: str) -> dict[str, Any]:
    warmup = build_events(args.sink, args.batch, first=10_000_000)
    events = build_events(args.sink, args.events)
    sink = make_sink(args.sink, args.protocol, endpoint)
    await sink.start()
    await sink.send(warmup)  # the channel, lazy imports, the first resource
    sent, exec_ids = 0, set[str]()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while sent < args.events:
        start = sent % len(events)
        batch = events[start : start + args.batch]
        await sink.send(batch)
        sent += len(batch)
        if args.sink == "traces":  # one span per process, complete or (at close) not
            exec_ids.update(e[event_kind(e) or ""]["process"]["exec_id"] for e in batch)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await sink.close()
    return {
        "sink": f"otlp_{args.sink}",
        "protocol": args.protocol,
        "events": sent,
        "batch": args.batch,
        "events_per_s": round(sent / wall),
        "cpu_us_per_event": round(cpu / sent * 1e6, 1),
        "expected_records": len(warmup) // 2 + len(exec_ids)
        if args.sink == "traces"
        else len(warmup) + sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256, help="the core's default batch_size")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--sink", choices=("logs", "traces"), default="logs")
    args = parser.parse_args()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "tests.otlp_receiver", args.protocol],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdin is not None and receiver.stdout is not None
        endpoint = json.loads(receiver.stdout.readline())["endpoint"]
        result = asyncio.run(run(args, endpoint))
        receiver.stdin.write("count\n")
        receiver.stdin.flush()
        received = json.loads(receiver.stdout.readline())["records"]
        result["all_received"] = received == result.pop("expected_records")
        print(json.dumps(result))
    finally:
        if receiver.stdin:
            receiver.stdin.close()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    main()
