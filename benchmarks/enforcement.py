"""Enforcement timings: how fast a denied exec dies, how fast a policy takes
effect, and how long a sensor restart leaves the kernel without its hooks.

    .venv/bin/python -m benchmarks.enforcement [--kills N] [--json PATH]

- kill latency: a Sigkill policy on execve of one binary; for N attempts, the
  kernel's own timestamps of the hook record (sys_enter_execve) and of the
  process's exit record (sched_process_exit), from the raw NATS records;
- apply → enforced: from the KV put of a policy (what `ocellus policy apply`
  does once it has checked it) to the first exec that dies, with a tight exec
  loop probing; and the whole CLI command (Python start-up included);
- sensor restart gap: the tracepoint links belong to the sensor process and
  go with it, the pinned maps stay; a restarted sensor attaches what they name
  as soon as it has loaded. Measured: the sensor's start time, and the time
  from its exit to the first kill after the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from benchmarks.procs import Tracer
from schemas import codec, subjects
from services.common.natsserver import EmbeddedNats

NODE = "bench"
POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  kprobes:
  - call: sys_execve
    syscall: true
    args:
    - {{index: 0, type: string}}
    selectors:
    - matchArgs:
      - {{index: 0, operator: Equal, values: ["{binary}"]}}
      matchActions:
      - {{action: Sigkill}}
"""


class RawTimes:
    """Kernel timestamps of hook and exit records, by pid."""

    def __init__(self) -> None:
        self.hooks: dict[int, int] = {}
        self.exits: dict[int, tuple[int, int]] = {}  # pid -> (ktime, signal)

    async def on_batch(self, msg: Any) -> None:
        batch = codec.unpack(msg.data)
        for rec in batch["records"]:
            if batch["type"] == subjects.PROCESS_HOOK:
                self.hooks.setdefault(rec["pid"], rec["ktime"])
            elif batch["type"] == subjects.PROCESS_EXIT:
                self.exits[rec["pid"]] = (rec["ktime"], rec.get("signal", 0))


def exec_once(binary: Path) -> tuple[int, int]:
    proc = subprocess.Popen([str(binary)], stderr=subprocess.DEVNULL)
    return proc.pid, proc.wait()


def probe_until_killed(binary: Path, timeout: float) -> float:
    """Exec in a tight loop until one dies by SIGKILL; the monotonic time then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exec_once(binary)[1] == -signal.SIGKILL:
            return time.monotonic()
    raise TimeoutError("never enforced")


async def kill_latency(raw: RawTimes, binary: Path, n: int) -> dict[str, Any]:
    pids = []
    for _ in range(n):
        pid, code = await asyncio.to_thread(exec_once, binary)
        assert code == -signal.SIGKILL, code
        pids.append(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(p in raw.exits for p in pids):
        await asyncio.sleep(0.05)
    lat = [
        (raw.exits[p][0] - raw.hooks[p]) / 1e3 for p in pids if p in raw.exits and p in raw.hooks
    ]
    return {
        "attempts": n,
        "measured": len(lat),
        "median_us": round(statistics.median(lat), 1),
        "p99_us": round(statistics.quantiles(lat, n=100)[98], 1),
        "max_us": round(max(lat), 1),
    }


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server = EmbeddedNats(work / "nats", port=0)
    url = server.start()
    pins = Path(f"/sys/fs/bpf/ocellus-bench-{os.getpid()}")
    policy_dir = work / "policies"
    policy_dir.mkdir()
    env = {
        "OCELLUS_NATS_URL": url,
        "OCELLUS_NODE_NAME": NODE,
        "OCELLUS_LOG_FORMAT": "json",
        "OCELLUS_BPF_PIN_DIR": str(pins),
        "OCELLUS_ENFORCER_POLICY_DIR": str(policy_dir),
    }
    denied = work / "denied"
    shutil.copy("/usr/bin/true", denied)
    py = [sys.executable, "-m"]
    result: dict[str, Any] = {}
    nc = await nats.connect(url)
    raw = RawTimes()
    await nc.subscribe(subjects.raw_all(NODE), cb=raw.on_batch)
    try:
        sensor = Tracer("sensor", [*py, "services.sensor"], work, ready="sensor running",
                        ready_in="stderr", env=env).__enter__()  # fmt: skip
        with Tracer("enforcer", [*py, "services.enforcer"], work, ready="enforcer running",
                    ready_in="stderr", env=env):  # fmt: skip
            # apply -> enforced, through KV as `ocellus policy apply` stores it
            kv = await nc.jetstream().key_value(subjects.POLICY_BUCKET)
            t0 = time.monotonic()
            await kv.put("deny-bench", POLICY.format(name="deny-bench", binary=denied).encode())
            t1 = await asyncio.to_thread(probe_until_killed, denied, 10.0)
            result["kv_put_to_enforced_ms"] = round((t1 - t0) * 1e3, 1)
            result["kill_latency"] = await kill_latency(raw, denied, args.kills)

            # the whole CLI command, on a second binary
            other = work / "denied2"
            shutil.copy("/usr/bin/true", other)
            (work / "p2.yaml").write_text(POLICY.format(name="deny-cli", binary=other))
            cli = [*py, "services.cli.main", "policy", "apply", str(work / "p2.yaml")]
            t0 = time.monotonic()
            cli_proc = subprocess.Popen(cli, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            t1 = await asyncio.to_thread(probe_until_killed, other, 20.0)
            cli_proc.wait(30)
            result["cli_apply_to_enforced_ms"] = round((t1 - t0) * 1e3, 1)

            # sensor restart: stop, start, first kill again
            t0 = time.monotonic()
            sensor.__exit__(None, None, None)
            t_down = time.monotonic()
            sensor = Tracer("sensor", [*py, "services.sensor"], work, ready="sensor running",
                            ready_in="stderr", env=env).__enter__()  # fmt: skip
            t_ready = time.monotonic()
            t1 = await asyncio.to_thread(probe_until_killed, denied, 30.0)
            result["sensor_restart"] = {
                "stop_ms": round((t_down - t0) * 1e3, 1),
                "start_ms": round((t_ready - t_down) * 1e3, 1),
                "unenforced_gap_ms": round((t1 - t_down) * 1e3, 1),
            }
            for f in policy_dir.iterdir():
                f.unlink()
            await kv.delete("deny-bench")
            await kv.delete("deny-cli")
        sensor.__exit__(None, None, None)
    finally:
        await nc.close()
        server.stop()
        shutil.rmtree(pins, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("enforcement bench: needs root (BPF)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ocellus-enf-", dir="/dev/shm") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
