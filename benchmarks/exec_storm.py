"""Exec storm: what tracing costs a fork+exec-heavy workload, Ocellus vs its peers.

    .venv/bin/python -m benchmarks.exec_storm [--execs N] [--rounds R] [--json PATH]

Each round runs N sequential fork+exec of /bin/true (a C driver, compiled
here) under every configuration: no tracer, bpftrace's execsnoop.bt, bcc's
execsnoop, and the Ocellus sensor (with a consumer counting what reached
NATS). Configurations are interleaved, their order rotates per round, and
every traced storm sits between two no-tracer storms it is compared with:
drift (thermal, noisy neighbours) hits all configurations alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.procs import Consumer, Tracer, Unavailable, compile_driver, cpu_seconds, storm
from services.common.natsserver import EmbeddedNats

NONE, BT, BCC, OCELLUS = "no tracer", "execsnoop.bt", "execsnoop-bpfcc", "ocellus"
CONFIGS = (NONE, BT, BCC, OCELLUS)
SETTLE = 1.0  # seconds of quiet before each storm (a stopped tracer's teardown, page cache)


@dataclass(frozen=True)
class Bench:
    driver: Path
    n: int
    work: Path
    url: str
    nats_pid: int


def _peer_storm(tracer: Tracer, b: Bench, prefix: str) -> dict[str, Any]:
    """A storm under a peer tracer, with the tracer's own CPU per exec."""
    n = b.n
    time.sleep(SETTLE)
    cpu0 = cpu_seconds(tracer.pid)
    res = storm(b.driver, n, prefix)
    time.sleep(0.5)  # let it print the tail of its buffer
    cpu = cpu_seconds(tracer.pid) - cpu0
    return {**res, "tracer_cpu_us_per_exec": cpu / n * 1e6}


def run_bpftrace(b: Bench, prefix: str) -> dict[str, Any]:
    # Output goes to a file on tmpfs (as cheap as /dev/null, and we can see
    # the header that BEGIN prints once every probe is attached).
    argv = ["bpftrace", "/usr/sbin/execsnoop.bt"]
    with Tracer("execsnoop.bt", argv, b.work, ready="TIME(ms)", timeout=30) as bt:
        res = _peer_storm(bt, b, prefix)
    text = bt.out.read_text(errors="replace")
    res["seen"] = len(re.findall(re.escape(prefix) + r"\d", text))
    res["lost_lines"] = sum(1 for ln in text.splitlines() if ln.startswith("Lost"))
    return res


def run_bcc(b: Bench, prefix: str) -> dict[str, Any]:
    # bcc's execsnoop attaches kprobes; PYTHONUNBUFFERED so its header shows.
    argv = ["/usr/sbin/execsnoop-bpfcc"]
    env = {"PYTHONUNBUFFERED": "1"}
    with Tracer("execsnoop-bpfcc", argv, b.work, ready="PCOMM", env=env, timeout=60) as bcc:
        res = _peer_storm(bcc, b, prefix)
    res["seen"] = len(re.findall(re.escape(prefix) + r"\d", bcc.out.read_text(errors="replace")))
    return res


def run_ocellus(b: Bench, prefix: str) -> dict[str, Any]:
    n = b.n
    env = {"OCELLUS_NATS_URL": b.url, "OCELLUS_NODE_NAME": "bench",
           "OCELLUS_LOG_FORMAT": "json", "OCELLUS_STATUS_INTERVAL": "1"}  # fmt: skip
    argv = [sys.executable, "-m", "services.sensor"]
    # The consumer subscribes first, so nothing the sensor publishes is missed.
    with Consumer(b.url, prefix, n) as consumer, Tracer(
        "sensor", argv, b.work, ready='"sensor running"', ready_in="stderr",
        stop_signal=signal.SIGTERM, env=env, timeout=90,
    ) as sensor:  # fmt: skip
        time.sleep(SETTLE)
        before = consumer.ask("before")["counters"]
        # The rest of the pipeline (nats-server, our consumer) shares the
        # machine too: measured alongside, for the record.
        others = (b.nats_pid, consumer.proc.pid)
        cpu0, others0 = cpu_seconds(sensor.pid), sum(map(cpu_seconds, others))
        t0 = time.monotonic()
        res = storm(b.driver, n, prefix)
        storm_s = time.monotonic() - t0
        cpu_storm = cpu_seconds(sensor.pid) - cpu0
        others_storm = sum(map(cpu_seconds, others)) - others0
        got = consumer.ask("after")  # waits for stragglers, then a fresh heartbeat
        cpu = cpu_seconds(sensor.pid) - cpu0
    after = got["counters"]

    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    published = delta("published")
    return {
        **res, "expected": n,
        "exec": got["exec"], "exit": got["exit"], "clone": got["clone"],
        "exit_before_exec": got["exit_before_exec"], "no_argv": got["no_argv"],
        "decode_errors": got["decode_errors"],
        "settle_s": got["settle_s"],
        "published": published, "received": delta("received"),
        "kernel_ringbuf_full": delta("kernel_ringbuf_full"),
        "queue_dropped": delta("queue_dropped"),
        "sensor_decode_errors": delta("decode_errors"),
        "sensor_cpu_s": cpu,
        "sensor_cpu_us_per_event": cpu / published * 1e6 if published else None,
        "tracer_cpu_us_per_exec": cpu / n * 1e6,
        "sensor_cpu_pct_during_storm": cpu_storm / storm_s * 100,
        "nats_and_consumer_cpu_pct_during_storm": others_storm / storm_s * 100,
    }  # fmt: skip


RUNNERS = {BT: run_bpftrace, BCC: run_bcc, OCELLUS: run_ocellus}


def lost(r: dict[str, Any]) -> int:
    """Everything the Ocellus run lost, by any count."""
    return ((r["expected"] - r["exec"]) + (r["expected"] - r["exit"]) + r["kernel_ringbuf_full"]
            + r["queue_dropped"] + r["sensor_decode_errors"] + r["decode_errors"])  # fmt: skip


def summarise(results: dict[str, list[dict[str, Any]]],
              unavailable: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    base = statistics.median(r["execs_per_s"] for r in results[NONE])
    base_cpu = statistics.median(r["workload_cpu_us_per_exec"] for r in results[NONE])
    out: dict[str, Any] = {}
    for name in CONFIGS:
        if name in unavailable or not results.get(name):
            out[name] = {"available": False, "reason": unavailable.get(name, "not run")}
            continue
        rs = results[name]
        rates = [r["execs_per_s"] for r in rs]
        med = statistics.median(rates)
        cpu = statistics.median(r["workload_cpu_us_per_exec"] for r in rs)
        s: dict[str, Any] = {
            "available": True, "median_execs_per_s": med,
            "spread_pct": (max(rates) - min(rates)) / med * 100,  # the noise to judge by
            "median_workload_cpu_us_per_exec": cpu,
            "overhead_vs_median_pct": (1 - med / base) * 100,
            "workload_cpu_overhead_vs_median_pct": (cpu / base_cpu - 1) * 100,
            "rounds": rs,
        }  # fmt: skip
        if name != NONE:
            s["overhead_pct"] = statistics.median(r["paired_overhead_pct"] for r in rs)
            s["workload_cpu_overhead_pct"] = statistics.median(
                r["paired_workload_cpu_overhead_pct"] for r in rs
            )
            s["median_tracer_cpu_us_per_exec"] = statistics.median(
                r["tracer_cpu_us_per_exec"] for r in rs
            )
        if name == OCELLUS:
            per_event = [r["sensor_cpu_us_per_event"] for r in rs if r["sensor_cpu_us_per_event"]]
            s["median_sensor_cpu_us_per_event"] = statistics.median(per_event or [0.0])
            s["zero_loss"] = all(lost(r) == 0 for r in rs)
        out[name] = s
    ratios: dict[str, float] = {}
    oc = out[OCELLUS]
    for peer in (BT, BCC):
        p = out[peer]
        if not (oc["available"] and p["available"]):
            continue
        ratios[f"ocellus_vs_{peer}_execs_per_s"] = (
            oc["median_execs_per_s"] / p["median_execs_per_s"]
        )
        if p["overhead_pct"] > 0:
            ratios[f"ocellus_vs_{peer}_overhead"] = oc["overhead_pct"] / p["overhead_pct"]
        if p["workload_cpu_overhead_pct"] > 0:
            ratios[f"ocellus_vs_{peer}_workload_cpu_overhead"] = (
                oc["workload_cpu_overhead_pct"] / p["workload_cpu_overhead_pct"]
            )
        if p["median_tracer_cpu_us_per_exec"] > 0:
            ratios[f"ocellus_vs_{peer}_tracer_cpu_per_exec"] = (
                oc["median_tracer_cpu_us_per_exec"] / p["median_tracer_cpu_us_per_exec"]
            )
    return {"configs": out, "ratios": ratios}


def print_table(summary: dict[str, Any], header: dict[str, Any]) -> None:
    cfg = summary["configs"]
    print(f"\n== exec storm: {header['execs']} x fork+exec /bin/true, {header['rounds']} rounds, "
          "configurations interleaved ==")  # fmt: skip
    print(f"{'configuration':<17}{'execs/s (median)':>17}{'overhead':>10}{'spread':>8}"
          f"{'workload CPU/exec':>22}{'tracer CPU/exec':>17}   per storm (execs/s)")  # fmt: skip
    for name in CONFIGS:
        s = cfg[name]
        if not s["available"]:
            print(f"{name:<17}{'unavailable':>17}   ({s['reason']})")
            continue
        over = "-" if name == NONE else f"{s['overhead_pct']:+.1f} %"
        cpu = "-" if name == NONE else f"{s['median_tracer_cpu_us_per_exec']:.1f} µs"
        rounds = " ".join(f"{r['execs_per_s']:.0f}" for r in s["rounds"])
        work = f"{s['median_workload_cpu_us_per_exec']:.0f} µs"
        if name != NONE:
            work += f" ({s['workload_cpu_overhead_pct']:+.1f} %)"
        print(f"{name:<17}{s['median_execs_per_s']:>17.0f}{over:>10}{s['spread_pct']:>6.0f} %"
              f"{work:>22}{cpu:>17}   {rounds}")  # fmt: skip
    print("  overhead: median over rounds of execs/s below the mean of the no-tracer storms right"
          " before and after\n  (vs the no-tracer median instead: "
          + ", ".join(f"{n} {cfg[n]['overhead_vs_median_pct']:+.1f} %" for n in CONFIGS[1:]
                      if cfg[n]["available"])
          + ");\n  spread: (max - min) / median of the storms, the noise to judge by;"
          "\n  workload CPU: driver + children utime+stime per exec, BPF programs included,"
          " paired the same way")  # fmt: skip
    if cfg[BT]["available"]:
        seen = ", ".join(f"{r['seen']}/{header['execs']}" for r in cfg[BT]["rounds"])
        lost_bt = sum(r["lost_lines"] for r in cfg[BT]["rounds"])
        print(
            f"  execsnoop.bt lines with the marker, per round: {seen} ('Lost' notices: {lost_bt})"
        )
    oc = cfg[OCELLUS]
    if oc["available"]:
        print("\nOcellus sensor, per round:")
        print(f"{'round':>5}{'exec recv/exp':>16}{'exit recv/exp':>16}{'clone':>7}"
              f"{'ringbuf_full':>14}{'queue_drop':>12}{'published':>11}"
              f"{'CPU µs/event':>14}{'CPU % storm':>13}{'nats+cons %':>13}"
              f"{'settle s':>10}")  # fmt: skip
        for i, r in enumerate(oc["rounds"], 1):
            per = r["sensor_cpu_us_per_event"]
            print(f"{i:>5}{r['exec']:>9}/{r['expected']:<6}{r['exit']:>9}/{r['expected']:<6}"
                  f"{r['clone']:>7}{r['kernel_ringbuf_full']:>14}{r['queue_dropped']:>12}"
                  f"{r['published']:>11}{(f'{per:.1f}' if per else '-'):>14}"
                  f"{r['sensor_cpu_pct_during_storm']:>13.1f}"
                  f"{r['nats_and_consumer_cpu_pct_during_storm']:>13.1f}"
                  f"{r['settle_s']:>10.2f}")  # fmt: skip
        print(f"  median sensor CPU per event: {oc['median_sensor_cpu_us_per_event']:.1f} µs "
              "(utime+stime over storm + stragglers, / records published)")  # fmt: skip
        print(
            f"  zero loss: {'yes' if oc['zero_loss'] else 'NO'};  overhead "
            f"{oc['overhead_pct']:+.1f} % execs/s, {oc['workload_cpu_overhead_pct']:+.1f} %"
            f" workload CPU: {'within' if oc['overhead_pct'] <= 3 else 'OVER'} the 3 % budget"
        )
        if any(r["no_argv"] or r["exit_before_exec"] for r in oc["rounds"]):
            print("  execs of /bin/true without argv, per round: "
                  + ", ".join(str(r["no_argv"]) for r in oc["rounds"])
                  + "; exits before their exec: "
                  + ", ".join(str(r["exit_before_exec"]) for r in oc["rounds"]))  # fmt: skip
    if summary["ratios"]:
        print("\nOcellus vs peers (ratio; execs/s > 1 is better, the others < 1 are better):")
        for k, v in summary["ratios"].items():
            print(f"  {k:<52}{v:>8.2f}")


def run_rounds(b: Bench, rounds: int, results: dict[str, list[dict[str, Any]]],
               unavailable: dict[str, str]) -> None:  # fmt: skip
    """Per round: none, tracer, none, tracer, ..., none. The host's load drifts by
    tens of % over tens of seconds here, so each traced storm is compared with
    the no-tracer storms right before and after it (a paired overhead)."""
    tracers = [c for c in CONFIGS if c != NONE]
    seq = 0

    def run(rnd: int, name: str) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        prefix = f"ocellus-bench-{rnd}-{seq}-"  # unique per storm
        if name == NONE:
            time.sleep(SETTLE)
            res = storm(b.driver, b.n, prefix)
        else:
            res = RUNNERS[name](b, prefix)
        results[name].append(res)
        print(f"round {rnd + 1}/{rounds}  {name:<16} {res['execs_per_s']:8.0f} execs/s "
              f"{res['workload_cpu_us_per_exec']:6.0f} µs CPU/exec", flush=True)  # fmt: skip
        return res

    for rnd in range(rounds):
        k = rnd % len(tracers)
        before = run(rnd, NONE)
        for name in tracers[k:] + tracers[:k]:  # the order rotates per round
            if name in unavailable:
                continue
            try:
                res = run(rnd, name)
            except Unavailable as e:
                unavailable[name] = str(e)
                print(f"{name}: unavailable ({e})", flush=True)
                continue
            after = run(rnd, NONE)
            rate = (before["execs_per_s"] + after["execs_per_s"]) / 2
            cpu = (before["workload_cpu_us_per_exec"] + after["workload_cpu_us_per_exec"]) / 2
            res["paired_overhead_pct"] = (1 - res["execs_per_s"] / rate) * 100
            res["paired_workload_cpu_overhead_pct"] = (
                res["workload_cpu_us_per_exec"] / cpu - 1
            ) * 100
            before = after


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--execs", type=int, default=20_000, help="fork+execs per storm")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all configurations")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    header = {"kernel": platform.release(), "cpus": os.cpu_count(),
              "date": datetime.now().astimezone().isoformat(timespec="seconds"),
              "execs": args.execs, "rounds": args.rounds}  # fmt: skip
    print(f"kernel {header['kernel']}, {header['cpus']} CPUs, {header['date']}")
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108  tmpfs for outputs
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    unavailable: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ocellus-bench-", dir=shm) as tmp, \
            contextlib.ExitStack() as stack:  # fmt: skip
        work = Path(tmp)
        driver = compile_driver(work)
        nats = EmbeddedNats(work / "nats", port=0)
        stack.callback(nats.stop)
        url = nats.start()
        assert nats.proc is not None
        bench = Bench(driver, args.execs, work, url, nats.proc.pid)
        storm(driver, min(500, args.execs), "ocellus-bench-warmup-")  # page cache, CPU clocks
        run_rounds(bench, args.rounds, results, unavailable)
    summary = summarise(results, unavailable)
    print_table(summary, header)
    if args.json:
        args.json.write_text(json.dumps({**header, **summary}, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
