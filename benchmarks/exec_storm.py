"""Exec storm: what tracing costs a fork+exec-heavy workload, Ocellus vs its peers.

    .venv/bin/python -m benchmarks.exec_storm [--execs N] [--rounds R] [--json PATH]

Each round runs N sequential fork+exec of /bin/true (a C driver, compiled
here) under every configuration: no tracer, bpftrace's execsnoop.bt, bcc's
execsnoop, and the Ocellus sensor (with a consumer counting what reached
NATS). Configurations are interleaved, and their order rotates per round,
so that drift (thermal, noisy neighbours) hits all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.procs import Consumer, Tracer, Unavailable, compile_driver, cpu_seconds, storm
from services.common.natsserver import EmbeddedNats

NONE, BT, BCC, OCELLUS = "no tracer", "execsnoop.bt", "execsnoop-bpfcc", "ocellus"
CONFIGS = (NONE, BT, BCC, OCELLUS)
SETTLE = 1.0  # seconds of quiet before each storm (a stopped tracer's teardown, page cache)


def _ctx_cpu(tracer: Tracer, driver: Path, n: int, prefix: str) -> dict[str, Any]:
    """A storm under a peer tracer, with the tracer's own CPU per exec."""
    time.sleep(SETTLE)
    cpu0 = cpu_seconds(tracer.pid)
    rate = storm(driver, n, prefix)
    time.sleep(0.5)  # let it print the tail of its buffer
    cpu = cpu_seconds(tracer.pid) - cpu0
    return {"execs_per_s": rate, "tracer_cpu_us_per_exec": cpu / n * 1e6}


def run_bpftrace(driver: Path, n: int, prefix: str, work: Path, _url: str) -> dict[str, Any]:
    # Output goes to a file on tmpfs (as cheap as /dev/null, and we can see
    # the header that BEGIN prints once every probe is attached).
    argv = ["bpftrace", "/usr/sbin/execsnoop.bt"]
    with Tracer("execsnoop.bt", argv, work, ready="TIME(ms)", timeout=30) as bt:
        res = _ctx_cpu(bt, driver, n, prefix)
    text = bt.out.read_text(errors="replace")
    res["seen"] = text.count(prefix)
    res["lost_lines"] = sum(1 for ln in text.splitlines() if ln.startswith("Lost"))
    return res


def run_bcc(driver: Path, n: int, prefix: str, work: Path, _url: str) -> dict[str, Any]:
    # bcc's execsnoop attaches kprobes; PYTHONUNBUFFERED so its header shows.
    argv = ["/usr/sbin/execsnoop-bpfcc"]
    env = {"PYTHONUNBUFFERED": "1"}
    with Tracer("execsnoop-bpfcc", argv, work, ready="PCOMM", env=env, timeout=60) as bcc:
        res = _ctx_cpu(bcc, driver, n, prefix)
    res["seen"] = bcc.out.read_text(errors="replace").count(prefix)
    return res


def run_ocellus(driver: Path, n: int, prefix: str, work: Path, url: str) -> dict[str, Any]:
    env = {"OCELLUS_NATS_URL": url, "OCELLUS_NODE_NAME": "bench",
           "OCELLUS_LOG_FORMAT": "json", "OCELLUS_STATUS_INTERVAL": "1"}  # fmt: skip
    argv = [sys.executable, "-m", "services.sensor"]
    # The consumer subscribes first, so nothing the sensor publishes is missed.
    with Consumer(url, prefix, n) as consumer, Tracer(
        "sensor", argv, work, ready='"sensor running"', ready_in="stderr",
        stop_signal=signal.SIGTERM, env=env, timeout=90,
    ) as sensor:  # fmt: skip
        time.sleep(SETTLE)
        before = consumer.ask("before")["counters"]
        cpu0 = cpu_seconds(sensor.pid)
        t0 = time.monotonic()
        rate = storm(driver, n, prefix)
        storm_s = time.monotonic() - t0
        cpu_storm = cpu_seconds(sensor.pid) - cpu0
        got = consumer.ask("after")  # waits for stragglers, then a fresh heartbeat
        cpu = cpu_seconds(sensor.pid) - cpu0
    after = got["counters"]

    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    published = delta("published")
    return {
        "execs_per_s": rate, "expected": n,
        "exec": got["exec"], "exit": got["exit"], "clone": got["clone"],
        "exit_before_exec": got["exit_before_exec"], "decode_errors": got["decode_errors"],
        "settle_s": got["settle_s"],
        "published": published, "received": delta("received"),
        "kernel_ringbuf_full": delta("kernel_ringbuf_full"),
        "queue_dropped": delta("queue_dropped"),
        "sensor_decode_errors": delta("decode_errors"),
        "sensor_cpu_s": cpu,
        "sensor_cpu_us_per_event": cpu / published * 1e6 if published else None,
        "tracer_cpu_us_per_exec": cpu / n * 1e6,
        "sensor_cpu_pct_during_storm": cpu_storm / storm_s * 100,
    }  # fmt: skip


RUNNERS = {BT: run_bpftrace, BCC: run_bcc, OCELLUS: run_ocellus}


def lost(r: dict[str, Any]) -> int:
    """Everything the Ocellus run lost, by any count."""
    return ((r["expected"] - r["exec"]) + (r["expected"] - r["exit"]) + r["kernel_ringbuf_full"]
            + r["queue_dropped"] + r["sensor_decode_errors"] + r["decode_errors"])  # fmt: skip


def summarise(results: dict[str, list[dict[str, Any]]],
              unavailable: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    base = statistics.median(r["execs_per_s"] for r in results[NONE])
    out: dict[str, Any] = {}
    for name in CONFIGS:
        if name in unavailable or not results.get(name):
            out[name] = {"available": False, "reason": unavailable.get(name, "not run")}
            continue
        rs = results[name]
        med = statistics.median(r["execs_per_s"] for r in rs)
        s: dict[str, Any] = {"available": True, "median_execs_per_s": med,
                             "overhead_pct": (1 - med / base) * 100, "rounds": rs}  # fmt: skip
        if name != NONE:
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
        if p["median_tracer_cpu_us_per_exec"] > 0:
            ratios[f"ocellus_vs_{peer}_tracer_cpu_per_exec"] = (
                oc["median_tracer_cpu_us_per_exec"] / p["median_tracer_cpu_us_per_exec"]
            )
    return {"configs": out, "ratios": ratios}


def print_table(summary: dict[str, Any], header: dict[str, Any]) -> None:
    cfg = summary["configs"]
    print(f"\n== exec storm: {header['execs']} x fork+exec /bin/true, {header['rounds']} rounds, "
          "configurations interleaved ==")  # fmt: skip
    print(f"{'configuration':<17}{'execs/s (median)':>17}{'overhead':>10}"
          f"{'tracer CPU/exec':>17}   per round (execs/s)")  # fmt: skip
    for name in CONFIGS:
        s = cfg[name]
        if not s["available"]:
            print(f"{name:<17}{'unavailable':>17}   ({s['reason']})")
            continue
        over = "-" if name == NONE else f"{s['overhead_pct']:+.1f} %"
        cpu = "-" if name == NONE else f"{s['median_tracer_cpu_us_per_exec']:.1f} µs"
        rounds = " ".join(f"{r['execs_per_s']:.0f}" for r in s["rounds"])
        print(f"{name:<17}{s['median_execs_per_s']:>17.0f}{over:>10}{cpu:>17}   {rounds}")
    if cfg[BT]["available"]:
        seen = ", ".join(f"{r['seen']}/{header['execs']}" for r in cfg[BT]["rounds"])
        print(f"  execsnoop.bt lines with the marker, per round: {seen}")
    oc = cfg[OCELLUS]
    if oc["available"]:
        print("\nOcellus sensor, per round:")
        print(f"{'round':>5}{'exec recv/exp':>16}{'exit recv/exp':>16}{'clone':>7}"
              f"{'ringbuf_full':>14}{'queue_drop':>12}{'published':>11}"
              f"{'CPU µs/event':>14}{'CPU % storm':>13}{'settle s':>10}")  # fmt: skip
        for i, r in enumerate(oc["rounds"], 1):
            per = r["sensor_cpu_us_per_event"]
            print(f"{i:>5}{r['exec']:>9}/{r['expected']:<6}{r['exit']:>9}/{r['expected']:<6}"
                  f"{r['clone']:>7}{r['kernel_ringbuf_full']:>14}{r['queue_dropped']:>12}"
                  f"{r['published']:>11}{(f'{per:.1f}' if per else '-'):>14}"
                  f"{r['sensor_cpu_pct_during_storm']:>13.1f}{r['settle_s']:>10.2f}")  # fmt: skip
        print(f"  median sensor CPU per event: {oc['median_sensor_cpu_us_per_event']:.1f} µs "
              "(utime+stime over storm + stragglers, / records published)")  # fmt: skip
        print(f"  zero loss: {'yes' if oc['zero_loss'] else 'NO'}")
    if summary["ratios"]:
        print("\nOcellus vs peers (ratio; execs/s > 1 is better, the others < 1 are better):")
        for k, v in summary["ratios"].items():
            print(f"  {k:<52}{v:>8.2f}")


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
        storm(driver, min(500, args.execs), "ocellus-bench-warmup-")  # page cache, CPU clocks
        for rnd in range(args.rounds):
            order = CONFIGS[rnd % len(CONFIGS) :] + CONFIGS[: rnd % len(CONFIGS)]
            for name in order:
                if name in unavailable:
                    continue
                prefix = f"ocellus-bench-r{rnd}c{CONFIGS.index(name)}-"
                try:
                    if name == NONE:
                        time.sleep(SETTLE)
                        res = {"execs_per_s": storm(driver, args.execs, prefix)}
                    else:
                        res = RUNNERS[name](driver, args.execs, prefix, work, url)
                except Unavailable as e:
                    unavailable[name] = str(e)
                    print(f"{name}: unavailable ({e})", flush=True)
                    continue
                results[name].append(res)
                print(f"round {rnd + 1}/{args.rounds}  {name:<16} "
                      f"{res['execs_per_s']:8.0f} execs/s", flush=True)  # fmt: skip
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
