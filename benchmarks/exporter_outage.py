"""Exporter memory through a sink outage: events keep arriving at a steady
rate while the sink is down; the exporter's RSS must stay bounded (the
backlog waits in JetStream, not in the exporter), and when the sink returns
every event is delivered.

    .venv/bin/python -m benchmarks.exporter_outage [--seconds 300] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from benchmarks.exporter_json import event
from services.common.natsserver import EmbeddedNats
from services.enricher.service import ensure_stream
from services.enricher.settings import Settings as EnricherSettings

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    server = EmbeddedNats(work / "nats", port=0)
    url = server.start()
    out_dir = work / "sink"
    out_dir.write_text("")  # a file where the directory should be: the sink is down
    config = work / "exporter.yaml"
    config.write_text(
        "sinks:\n"
        # No rotation: the delivered count is the line count of one file.
        f"  - {{name: file, type: json_file,\n"
        f"     options: {{path: '{out_dir}/events.json', max_size_mb: 0}},\n"
        "     retry: {initial_backoff: 0.5, max_backoff: 2}}\n"
    )
    nc = await nats.connect(url)
    await ensure_stream(nc.jetstream(), EnricherSettings(nats_url=url, node_name="bench"))
    env = {
        **os.environ,
        "OCELLUS_NATS_URL": url,
        "OCELLUS_NODE_NAME": "bench",
        "OCELLUS_EXPORTER_CONFIG_FILE": str(config),
        "OCELLUS_LOG_FORMAT": "json",
    }
    log = (work / "exporter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.exporter"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    samples: list[tuple[float, float]] = []
    try:
        while b"exporter running" not in (work / "exporter.log").read_bytes():
            await asyncio.sleep(0.1)
        js = nc.jetstream()
        payloads = [event(i) for i in range(1000)]
        sent, started = 0, time.monotonic()
        next_sample = started
        while (elapsed := time.monotonic() - started) < args.seconds:
            due = int(elapsed * args.rate)
            while sent < due:
                ack = await js.publish_async(
                    "ocellus.events.bench.process_exec", payloads[sent % len(payloads)]
                )
                del ack
                sent += 1
            if time.monotonic() >= next_sample:
                samples.append((round(elapsed, 1), round(rss_mb(proc.pid), 1)))
                next_sample += 5
            await asyncio.sleep(0.01)
        await js.publish_async_completed()
        out_dir.unlink()
        out_dir.mkdir()  # the sink comes back
        back = time.monotonic()
        lines = 0
        while lines < sent and time.monotonic() - back < args.drain_timeout:
            await asyncio.sleep(0.5)
            lines = (
                sum(1 for _ in (out_dir / "events.json").open())
                if (out_dir / "events.json").exists()
                else 0
            )
        drained = time.monotonic() - back
        stream = await js.stream_info("OCELLUS_EVENTS")
        consumer = await js.consumer_info("OCELLUS_EVENTS", "exporter_file")
        stored, pending = stream.state.messages, consumer.num_pending
        unacked, redelivered = consumer.num_ack_pending, consumer.num_redelivered
    finally:
        proc.terminate()
        proc.wait(30)
        await nc.close()
        server.stop()
    rss = [r for _, r in samples]
    first_minute = [r for t, r in samples if t < 60] or rss
    return {
        "outage_seconds": args.seconds,
        "rate": args.rate,
        "published": sent,
        "delivered_lines": lines,
        "stream_messages": stored,
        "consumer_pending": pending,
        "consumer_ack_pending": unacked,
        "consumer_redelivered": redelivered,
        "drain_seconds": round(drained, 1),
        "rss_mb_first_minute_max": max(first_minute),
        "rss_mb_max": max(rss),
        "rss_mb_last": rss[-1],
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--drain-timeout", type=float, default=600)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ocellus-outage-") as tmp:
        print("work dir", tmp, flush=True)
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    print("RSS samples (s, MB):", result["samples"])
    ok = result["delivered_lines"] >= result["published"]
    print("every event delivered after the outage:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
