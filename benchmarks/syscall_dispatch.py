"""Syscall dispatch: what a hook on one syscall costs that syscall, and every other.

    .venv/bin/python -m benchmarks.syscall_dispatch [--rounds R] [--json PATH]

Why the sensor hooks syscalls on their own tracepoints (syscalls:sys_enter_*)
and not on the raw tracepoint raw_syscalls:sys_enter, which skips the perf
record and is cheaper for the hooked syscall: every syscall of the node runs
a raw sys_enter program, hooked or not. Two workloads, pinned to one CPU: an
openat+close storm (the hooked syscall; benchmarks/open_driver.py) and a
getppid storm (a syscall nothing hooks). Configurations: no program; a program
on sys_enter_openat that only counts, and the path filter of
bpf/bench/reference_filter.bpf.c there; the same two on raw_syscalls:sys_enter.
Each configured storm sits between two without a program, as in open_storm.

x86_64 only (the raw form reads openat's number and registers itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.open_driver import compile_open_driver, open_storm
from benchmarks.procs import compile_c
from benchmarks.reference_filter import ReferenceFilter

PREFIX = "/nonexistent-ocellus/"  # matches nothing the storm opens
SETTLE = 0.5
# name -> (dispatch_only, raw)
CONFIGS = {
    "sys_enter_openat, program only counts": (True, False),
    "sys_enter_openat, path filter": (False, False),
    "raw sys_enter, program only counts": (True, True),
    "raw sys_enter, path filter": (False, True),
}

# getppid in a loop, timed around the loop: ns per call.
GETPPID_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);  /* not the libc wrapper: no caching, a syscall each */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.2f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
    return 0;
}
"""


class Workloads:
    def __init__(self, workdir: Path, opens: int, calls: int, cpu: int) -> None:
        self.open_driver = compile_open_driver(workdir)
        self.getppid = compile_c(workdir, "getppid", GETPPID_C)
        self.target = workdir / "file"
        self.target.write_text("x")
        self.opens, self.calls, self.cpu = opens, calls, cpu

    def run(self) -> dict[str, float]:
        """ns per openat+close, ns per getppid."""
        time.sleep(SETTLE)
        st = open_storm(self.open_driver, self.opens, self.target, 0, self.cpu)
        out = subprocess.run(["taskset", "-c", str(self.cpu), str(self.getppid), str(self.calls)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        return {"open_ns": st.seconds / st.n * 1e9, "getppid_ns": float(out)}


def run_rounds(w: Workloads, rounds: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    before = w.run()
    for rnd in range(rounds):
        for name, (dispatch_only, raw) in CONFIGS.items():
            with ReferenceFilter(PREFIX, dispatch_only, raw) as ref:
                traced = w.run()
                filtered, matched = ref.counts()
            after = w.run()
            if matched or filtered < w.opens:
                raise RuntimeError(f"{name}: the program saw {filtered:,} opens, {matched} matched")
            delta = {k: traced[k] - (before[k] + after[k]) / 2 for k in traced}
            out[name].append({**traced, **{f"{k}_added": v for k, v in delta.items()}})
            print(f"round {rnd + 1}/{rounds} {name}: openat+close {traced['open_ns']:.0f} ns "
                  f"({delta['open_ns']:+.0f}), getppid {traced['getppid_ns']:.1f} ns "
                  f"({delta['getppid_ns']:+.1f})", flush=True)  # fmt: skip
            before = after
    return out


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for name, rs in results.items()
    }


def print_table(summary: dict[str, dict[str, float]], rounds: int) -> None:
    print(f"\n== syscall dispatch: medians of {rounds} rounds, ns added per call "
          "against no program ==")  # fmt: skip
    print(f"{'configuration':<40}{'openat+close':>14}{'getppid (not hooked)':>22}")
    for name, s in summary.items():
        print(f"{name:<40}{s['open_ns_added']:>+11.0f} ns{s['getppid_ns_added']:>+19.1f} ns")
    print("  the raw sys_enter forms are cheaper for the hooked syscall and dearer for every "
          "other:\n  a node-wide cost the sensor does not pay (it hooks syscalls on their own "
          "tracepoints)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--opens", type=int, default=1_000_000, help="openat+close per storm")
    ap.add_argument("--calls", type=int, default=5_000_000, help="getppid per storm")
    ap.add_argument("--cpu", type=int, default=1, help="the CPU the workloads run on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if platform.machine() != "x86_64":  # informative, no target: not a failure of `make bench`
        print("syscall_dispatch: x86_64 only, skipped", file=sys.stderr)
        return 0
    header = {"kernel": platform.release(), "cpus": os.cpu_count(),
              "date": datetime.now().astimezone().isoformat(timespec="seconds"),
              "rounds": args.rounds, "opens": args.opens, "calls": args.calls}  # fmt: skip
    print(f"kernel {header['kernel']}, {header['cpus']} CPUs, {header['date']}")
    with tempfile.TemporaryDirectory(prefix="ocellus-dispatch-", dir="/dev/shm") as tmp:
        w = Workloads(Path(tmp), args.opens, args.calls, args.cpu)
        w.run()  # warm-up: page cache, clocks
        results = run_rounds(w, args.rounds)
    summary = summarise(results)
    print_table(summary, args.rounds)
    if args.json:
        args.json.write_text(json.dumps({**header, "summary": summary, "rounds": results},
                                        indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
