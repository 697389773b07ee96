"""Counts what the sensor published for one storm: `python -m benchmarks.consumer URL PREFIX N`.

A process of its own so that its CPU is not charged to the bench process.
Line protocol with the bench (one JSON object per line on stdout):
  start            -> {"ready": true}          subscribed and flushed
  stdin "before"   -> {"counters": {...}}      the first heartbeat after the command
  stdin "after"    -> {"exec": ..., ...}       once all N execs and their exits arrived
                                               (or nothing new for QUIET s), then a
                                               fresh heartbeat's counters
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import nats

from schemas import codec, subjects

QUIET = 3.0  # seconds without a new matching record before giving up on stragglers
CAP = 30.0  # hard limit on waiting for stragglers


class Tally:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.execs = 0
        self.exits = 0  # exits of pids whose marked exec was seen first
        self.clones = 0  # clones (seen before the exec) of those pids
        self.no_argv = 0  # execs of /bin/true whose argv the kernel side could not read
        self.decode_errors = 0
        self.unmatched_exits: set[int] = set()
        self._live: Counter[int] = Counter()  # marked execs still waiting for their exit
        self._cloned: set[int] = set()  # recent clone children; pids wrap at pid_max

    def on_raw(self, data: bytes) -> None:
        try:
            body = codec.unpack(data)
        except codec.DecodeError:
            self.decode_errors += 1
            return
        kind, records = body.get("type"), body.get("records") or []
        if kind == subjects.PROCESS_CLONE:
            self._cloned.update(r["pid"] for r in records)
        elif kind == subjects.PROCESS_EXEC:
            for r in records:
                argv = r.get("argv") or []
                if len(argv) > 1 and argv[1].startswith(self.prefix):
                    self.execs += 1
                    self._live[r["pid"]] += 1
                    if r["pid"] in self._cloned:
                        self.clones += 1
                        self._cloned.discard(r["pid"])
                elif len(argv) < 2 and r.get("binary") == "/bin/true":
                    self.no_argv += 1
        elif kind == subjects.PROCESS_EXIT:
            for r in records:
                pid = r["pid"]
                if self._live[pid] > 0:
                    self._live[pid] -= 1
                    self.exits += 1
                else:
                    self.unmatched_exits.add(pid)

    def finish(self) -> dict[str, Any]:
        # An exit that overtook its exec would be a broken ordering promise:
        # count it rather than hide it.
        late = sum(1 for pid, n in self._live.items() if n > 0 and pid in self.unmatched_exits)
        return {"exec": self.execs, "exit": self.exits, "clone": self.clones,
                "exit_before_exec": late, "no_argv": self.no_argv,
                "decode_errors": self.decode_errors}  # fmt: skip


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(url: str, prefix: str, expected: int) -> None:
    nc = await nats.connect(url, name="ocellus-bench-consumer")
    tally = Tally(prefix)
    beats: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_raw(msg: Any) -> None:
        tally.on_raw(msg.data)

    async def on_status(msg: Any) -> None:
        beats.put_nowait(codec.unpack(msg.data).get("counters", {}))

    await nc.subscribe(subjects.raw_all(), cb=on_raw, pending_msgs_limit=1_000_000)
    await nc.subscribe(subjects.status("sensor", "bench"), cb=on_status)
    await nc.flush()
    emit({"ready": True})

    async def fresh_beat() -> dict[str, Any]:
        while not beats.empty():
            beats.get_nowait()
        return await asyncio.wait_for(beats.get(), 10.0)

    async def command() -> str:
        return (await asyncio.to_thread(sys.stdin.readline)).strip()

    while (cmd := await command()) not in ("", "quit"):
        if cmd == "before":
            emit({"counters": await fresh_beat()})
        elif cmd == "after":
            started = last_change = time.monotonic()
            seen = (-1, -1)
            while time.monotonic() - started < CAP:
                if tally.execs >= expected and tally.exits >= expected:
                    break
                if (tally.execs, tally.exits) != seen:
                    seen, last_change = (tally.execs, tally.exits), time.monotonic()
                elif time.monotonic() - last_change > QUIET:
                    break
                await asyncio.sleep(0.05)
            waited = time.monotonic() - started
            emit({**tally.finish(), "settle_s": round(waited, 3), "counters": await fresh_beat()})
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
