"""Enricher hook path, in process: raw process_hook batches → process_kprobe events.

    .venv/bin/python -m benchmarks.enricher_hooks [--records N] [--batches B] [--rounds R]
        [--profile] [--json PATH]

No NATS: `Pipeline.handle` is called directly with msgpack batches of N openat
hook records (dfd, filename, flags: what the sensor publishes for a file
policy on sys_enter_openat), from 64 processes the cache knows (every tenth
record from a thread of its own). Each event is packed with the codec as the
enricher's publisher packs it before its JetStream publish, so what is timed
is everything from the raw message to the bytes sent: unpacking, validation,
the hook plan, the process, the args, the event and its encoding. A round
is B batches; the reported rate is the median of R rounds, with the spread.

The sensor delivers ~180k hook records/s (benchmarks/open_storm): the target
is to keep up with half of that on one core, 90k/s. The enricher's GC thresholds
(services/enricher/service.py) are set as its __main__ sets them (`--gc-default`
leaves Python's). `--profile` prints a cProfile of one round instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from schemas import codec, subjects
from schemas.hooks import HookArgInfo, HookInfo, HookRegistry
from schemas.raw import RawExec
from services.common.containers import ContainerResolver
from services.enricher.cache import ProcessCache
from services.enricher.holding import Holding
from services.enricher.hooks import HookRegistryView
from services.enricher.pipeline import Pipeline
from services.enricher.service import tune_gc

NODE = "bench-node"
TOKEN = subjects.node_token(NODE)
BOOT_NS = 1_764_327_600_000_000_000
HOOK_ID = 7
PIDS = range(200_000, 200_064)
TARGET = 90_000  # records/s: half the sensor's delivery, on one core
OPENAT = HookInfo(
    policy="file-monitor",
    kind="process_kprobe",
    subsys="syscalls",
    event="sys_enter_openat",
    function_name="__x64_sys_openat",
    args=[
        HookArgInfo(index=0, type="int"),
        HookArgInfo(index=1, type="filename", label="path"),
        HookArgInfo(index=2, type="uint32"),
    ],
    message="file opened",
    tags=["observability.filesystem"],
)


def hook_record(i: int) -> dict[str, Any]:
    """One record as services/sensor/records.py decode_hook builds it."""
    pid = PIDS[i % len(PIDS)]
    return {
        "ktime": 5_000_000_000 + i * 1_337,
        "pid": pid,
        "tid": pid + 1 if i % 10 == 0 else pid,
        "ppid": 0,
        "uid": 1000,
        "gid": 1000,
        "cgroup_id": 4242,
        "comm": "python3",
        "flags": 0,
        "hook_id": HOOK_ID,
        "slot": 0,
        "selector": 0,
        "action": 1,
        "args": [4294967196, f"/srv/app/data/shard-{i % 512:03d}/part.parquet", 0o2000000],
    }


def batches(records: int, count: int) -> list[bytes]:
    out = []
    for b in range(count):
        recs = [hook_record(b * records + i) for i in range(records)]
        batch = {"node": NODE, "type": "process_hook", "boot_ns": BOOT_NS, "records": recs}
        out.append(codec.pack(batch))
    return out


class Sink:
    """The publisher's work short of the network: each event packed to bytes."""

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        self.bytes += len(codec.pack(event))
        self.events += 1


def pipeline(sink: Sink) -> Pipeline:
    cache = ProcessCache(NODE, max_entries=100_000, ancestors_depth=2)
    parent = RawExec(ktime=1_000, pid=1999, tid=1999, ppid=0, uid=0, gid=0, cgroup_id=4242,
                     comm="sh", flags=0, binary="/bin/sh", argv=["/bin/sh", "-c"])  # fmt: skip
    cache.exec(parent, BOOT_NS, "/srv/app", None)
    for pid in PIDS:
        rec = RawExec(ktime=2_000 + pid, pid=pid, tid=pid, ppid=1999, uid=1000, gid=1000,
                      cgroup_id=4242, comm="python3", flags=0, binary="/usr/bin/python3",
                      argv=["/usr/bin/python3", "worker.py", f"--shard={pid}"])  # fmt: skip
        cache.exec(rec, BOOT_NS, "/srv/app", None)
    hooks = HookRegistryView(None)  # type: ignore[arg-type]  # no bucket: apply() only
    hooks.apply(TOKEN, 1, HookRegistry(node=NODE, hooks={HOOK_ID: OPENAT}).pack())
    return Pipeline(cache, ContainerResolver(), Holding(0.0), sink.publish, hooks)


async def one_round(p: Pipeline, data: list[bytes]) -> float:
    subject = subjects.raw(NODE, subjects.PROCESS_HOOK)
    t0 = time.perf_counter()
    for payload in data:
        await p.handle(subject, payload)
    return time.perf_counter() - t0


async def run(args: argparse.Namespace) -> int:
    data = batches(args.records, args.batches)
    total = args.records * args.batches
    sink = Sink()
    p = pipeline(sink)
    await one_round(p, data)  # warm up
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        await one_round(p, data)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return 0
    rates = []
    for _ in range(args.rounds):
        rates.append(total / await one_round(p, data))
    expected = total * (args.rounds + 1)
    if sink.events != expected or p.counters["invalid_records"]:
        print(f"published {sink.events} of {expected} events: {dict(p.counters)}")
        return 1
    median = statistics.median(rates)
    result = {
        "records_per_s": round(median),
        "us_per_record": round(1e6 / median, 2),
        "min_per_s": round(min(rates)),
        "max_per_s": round(max(rates)),
        "event_bytes": sink.bytes // sink.events,
        "target_per_s": TARGET,
    }
    print(
        f"enricher hooks: {median:,.0f} records/s ({1e6 / median:.2f} µs/record), "
        f"rounds {min(rates):,.0f}..{max(rates):,.0f}/s, {result['event_bytes']} B/event; "
        f"target {TARGET:,}/s: {'met' if median >= TARGET else 'MISSED'}"
    )
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(result, indent=2) + "\n")
    return 0 if median >= TARGET else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=4096, help="records per batch")
    ap.add_argument("--batches", type=int, default=8, help="batches per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="cProfile one round")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--gc-default", action="store_true", help="not the enricher's GC thresholds")
    args = ap.parse_args()
    if not args.gc_default:
        tune_gc()  # as python -m services.enricher does
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
