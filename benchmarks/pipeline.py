"""End to end: the exec storm through sensor and enricher to a JetStream
consumer — events/s, loss, kernel→consumer latency at a steady rate, and the
enricher's memory with 100,000 processes cached.

    .venv/bin/python -m benchmarks.pipeline [--execs 20000] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from benchmarks.procs import Tracer, compile_driver, storm
from schemas import codec
from schemas.events import parse_timestamp
from services.common.natsserver import EmbeddedNats

PACED_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
/* n fork+execs of /bin/true at `rate` per second (children reaped as they go). */
int main(int argc, char **argv)
{
    long n = atol(argv[1]), rate = atol(argv[2]);
    char prog[] = "/bin/true", marker[256];
    char *args[] = { prog, marker, NULL }, *envp[] = { NULL };
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        long long due = (long long)i * 1000000000LL / rate;
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long long at = (now.tv_sec - t0.tv_sec) * 1000000000LL + (now.tv_nsec - t0.tv_nsec);
            if (at >= due) break;
            struct timespec d = { 0, (long)(due - at) };
            nanosleep(&d, NULL);
        }
        snprintf(marker, sizeof(marker), "%s%ld", argv[3], i);
        pid_t pid = fork();
        if (pid == 0) { execve(args[0], args, envp); _exit(127); }
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
    while (wait(NULL) > 0) {}
    return 0;
}
"""


class Receiver:
    """A JetStream consumer of the enriched events: counts and latencies."""

    def __init__(self) -> None:
        self.prefix = ""
        self.execs = 0
        self.exits = 0
        self.pids: set[int] = set()
        self.latency_ms: list[float] = []
        self.first = self.last = 0.0

    async def on_event(self, msg: Any) -> None:
        now = time.time_ns()
        body = codec.unpack(msg.data)
        await msg.ack()
        if "process_exec" in body:
            process = body["process_exec"]["process"]
            if not process.get("arguments", "").startswith(self.prefix):
                return
            self.execs += 1
            self.pids.add(process["pid"])
        elif "process_exit" in body:
            process = body["process_exit"]["process"]
            if process["pid"] not in self.pids or not process.get("arguments", "").startswith(
                self.prefix
            ):
                return
            self.exits += 1
        else:
            return
        self.latency_ms.append((now - parse_timestamp(body["time"])) / 1e6)
        self.first = self.first or time.monotonic()
        self.last = time.monotonic()

    def reset(self, prefix: str) -> None:
        self.__init__()  # type: ignore[misc]
        self.prefix = prefix

    async def wait(self, expected: int, idle: float = 5.0) -> None:
        """Until `expected` events came, or nothing came for `idle` seconds."""
        seen, since = -1, time.monotonic()
        while self.execs + self.exits < expected and time.monotonic() - since < idle:
            if self.execs + self.exits != seen:
                seen, since = self.execs + self.exits, time.monotonic()
            await asyncio.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cache_rss_mb(processes: int) -> dict[str, float]:
    """RSS of a Python process holding an enricher cache of `processes` live entries."""
    code = f"""
import os
from schemas.raw import RawClone, RawExec
from services.enricher.cache import ProcessCache
from services.enricher.procfs import ProcSnapshot
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
base = rss()
cache = ProcessCache("bench-node", max_entries=200_000, ancestors_depth=10)
cache.seed([ProcSnapshot(1, 0, 1000, 0, "/sbin/init", ["/sbin/init"], "/")], 0, {{}})
for i in range({processes}):
    pid, ppid = 1000 + i, (1000 + i // 10) if i >= 10 else 1
    h = dict(ktime=i * 10, pid=pid, tid=pid, ppid=ppid, uid=1000, gid=1000, cgroup_id=1,
             comm="python3", flags=0)
    cache.clone(RawClone(**h, parent_tid=ppid, clone_flags=0x11), 0)
    cache.exec(RawExec(**h, binary="/usr/bin/python3",
                       argv=["python3", "-m", "worker", "--queue", f"jobs-{{i}}", "--verbose"]),
               0, "/srv/app/current", None)
print(len(cache), (rss() - base) / 1024, rss() / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()  # fmt: skip
    return {"entries": int(out[0]), "cache_mb": float(out[1]), "process_rss_mb": float(out[2])}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server = EmbeddedNats(work / "nats", port=0)
    url = server.start()
    env = {"OCELLUS_NATS_URL": url, "OCELLUS_NODE_NAME": "bench", "OCELLUS_LOG_FORMAT": "json"}
    storm_exe, paced = work / "storm", work / "paced"
    py = [sys.executable, "-m"]
    result: dict[str, Any] = {}
    try:
        with Tracer("enricher", [*py, "services.enricher"], work, ready="enricher running",
                    ready_in="stderr", env=env) as enricher, \
             Tracer("sensor", [*py, "services.sensor"], work, ready="sensor running",
                    ready_in="stderr", env=env):  # fmt: skip
            nc = await nats.connect(url)
            js = nc.jetstream()
            receiver = Receiver()
            await js.subscribe("ocellus.events.>", cb=receiver.on_event, manual_ack=True,
                               deliver_policy=DeliverPolicy.NEW)  # fmt: skip
            # Throughput: the storm at full speed.
            receiver.reset("pipe-storm-")
            t0 = time.monotonic()
            s = await asyncio.to_thread(storm, storm_exe, args.execs, "pipe-storm-")
            await receiver.wait(2 * args.execs)
            span = max(receiver.last - t0, 1e-9)
            result["storm"] = {
                "execs_per_s": round(s["execs_per_s"]),
                "expected_events": 2 * args.execs,
                "received_exec": receiver.execs,
                "received_exit": receiver.exits,
                "events_per_s": round((receiver.execs + receiver.exits) / span),
                "latency_p50_ms": round(percentile(receiver.latency_ms, 50), 1),
                "latency_p99_ms": round(percentile(receiver.latency_ms, 99), 1),
            }
            # Latency at a steady rate: rate execs/s = 2 x rate events/s.
            receiver.reset("pipe-paced-")
            n = args.rate * args.seconds
            await asyncio.to_thread(
                subprocess.run, [str(paced), str(n), str(args.rate), "pipe-paced-"], check=True
            )
            await receiver.wait(2 * n)
            result["steady"] = {
                "events_per_s": 2 * args.rate,
                "expected_events": 2 * n,
                "received": receiver.execs + receiver.exits,
                "latency_p50_ms": round(percentile(receiver.latency_ms, 50), 1),
                "latency_p99_ms": round(percentile(receiver.latency_ms, 99), 1),
                "latency_max_ms": round(max(receiver.latency_ms, default=float("nan")), 1),
            }
            result["enricher_rss_mb"] = round(rss_mb(enricher.proc.pid), 1)  # type: ignore[union-attr]
            await nc.close()
    finally:
        server.stop()
    result["cache_100k"] = cache_rss_mb(100_000)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000, help="execs/s of the steady phase")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("pipeline bench: needs root (BPF)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ocellus-pipe-", dir="/dev/shm") as tmp:
        work = Path(tmp)
        compile_driver(work)
        (work / "paced.c").write_text(PACED_C)
        subprocess.run(["cc", "-O2", "-o", str(work / "paced"), str(work / "paced.c")], check=True)
        result = asyncio.run(run(args, work))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    storm_ok = result["storm"]["received_exec"] + result["storm"]["received_exit"]
    return 0 if storm_ok == result["storm"]["expected_events"] else 1


if __name__ == "__main__":
    sys.exit(main())
