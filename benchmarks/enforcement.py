"""Enforcement timings: how fast a denied exec dies, how fast a policy takes
effect, and how long a sensor restart leaves the kernel without its hooks.

    .venv/bin/python -m benchmarks.enforcement [--kills N] [--json PATH]

- kill latency: a Sigkill policy on execve of one binary; for N attempts, the
  kernel's own timestamps of the hook record (sys_enter_execve) and of the
  process's exit record (sched_process_exit), from the raw NATS records;
- apply → enforced: from the KV put of a policy (what `ocellus policy apply`
  does once it has checked it) to the first exec that dies, with a tight exec
  loop probing;
- the target (issue #5): `ocellus policy apply FILE` as a process, from its
  start to the first exec that dies (Python start-up, imports, NATS, the
  node's check, the KV put, the enforcer's maps), median of --cli-runs runs
  under 500 ms; also to the command's exit (it waits for the node to report
  the policy applied). The probe execs every PROBE_PAUSE seconds rather than
  in a tight loop, which would take one of a 2-vCPU machine's cores from the
  command it times: the kill time is late by at most a pause and an exec;
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
CLI_TARGET_MS = 500.0  # issue #5: `ocellus policy apply` to enforced
PROBE_PAUSE = 0.002  # seconds between execs when timing the CLI
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


def probe_until_killed(binary: Path, timeout: float, pause: float = 0.0) -> float:
    """Exec (``pause`` seconds apart; 0: a tight loop) until one dies by
    SIGKILL; the monotonic time then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exec_once(binary)[1] == -signal.SIGKILL:
            return time.monotonic()
        if pause:
            time.sleep(pause)
    raise TimeoutError("never enforced")


def probe_until_allowed(binary: Path, timeout: float) -> None:
    """Exec until one is not killed: the policy is gone from the maps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exec_once(binary)[1] == 0:
            return
        time.sleep(0.01)
    raise TimeoutError("still enforced")


def ocellus_command() -> list[str]:
    """`ocellus` as a user runs it: the venv's console script (its module when
    the venv has none)."""
    script = Path(sys.executable).parent / "ocellus"
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.cli.main"]


async def cli_apply(kv: Any, work: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    """``runs`` times: `ocellus policy apply` on a fresh node state; start to
    first kill and start to exit, milliseconds."""
    binary = work / "denied2"
    shutil.copy("/usr/bin/true", binary)
    policy = work / "p2.yaml"
    policy.write_text(POLICY.format(name="deny-cli", binary=binary))
    argv = [*ocellus_command(), "policy", "apply", str(policy)]
    to_kill, to_exit = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        t1 = await asyncio.to_thread(probe_until_killed, binary, 20.0, PROBE_PAUSE)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        t2 = time.monotonic()
        if proc.returncode != 0:
            raise RuntimeError(f"ocellus policy apply exited {proc.returncode}: {err.decode()}")
        to_kill.append((t1 - t0) * 1e3)
        to_exit.append((t2 - t0) * 1e3)
        await kv.delete("deny-cli")
        await asyncio.to_thread(probe_until_allowed, binary, 20.0)

    def spread(ms: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(ms), 1), "min": round(min(ms), 1),
                "max": round(max(ms), 1)}  # fmt: skip

    return {
        "runs": runs,
        "command": " ".join(argv[:-1]) + " FILE",
        "start_to_first_kill_ms": spread(to_kill),
        "start_to_exit_ms": spread(to_exit),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


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
            result["cli_apply"] = await cli_apply(kv, work, env, args.cli_runs)

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
        sensor.__exit__(None, None, None)
    finally:
        await nc.close()
        server.stop()
        shutil.rmtree(pins, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--cli-runs", type=int, default=9, help="`ocellus policy apply` runs")
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
    cli = result["cli_apply"]
    kill, done = cli["start_to_first_kill_ms"], cli["start_to_exit_ms"]
    met = kill["median"] < CLI_TARGET_MS
    print(f"`ocellus policy apply` -> enforced: median {kill['median']:.0f} ms "
          f"({kill['min']:.0f}-{kill['max']:.0f}) over {cli['runs']} runs, command exit "
          f"{done['median']:.0f} ms ({done['min']:.0f}-{done['max']:.0f}), load average "
          f"{cli['load_average'][0]}; {'meets' if met else 'MISSES'} the "
          f"{CLI_TARGET_MS:.0f} ms target")  # fmt: skip
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
