"""Counts what reached NATS in one open storm: `python -m benchmarks.open_consumer URL NODE PREFIX`.

A process of its own, so that its CPU is not charged to the bench process and
it can be pinned away from the sensor. Line protocol with the bench (one JSON
object per line on stdout):
  start               -> {"ready": true}         subscribed and flushed
  stdin "before"      -> {"counters", "hooks"}   tallies reset; the first heartbeat after
  stdin "after N"     -> {"hook_mine": ..., ...} once N process_hook records whose path
                                                 starts with PREFIX arrived (or no new
                                                 process_hook record for QUIET s), then a
                                                 fresh heartbeat
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import nats
import nats.errors

from schemas import codec, subjects

QUIET = 3.0  # seconds without a new record before giving up on stragglers
CAP = 120.0  # hard limit on waiting for stragglers


class Tally:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.reset()

    def reset(self) -> None:
        self.mine = 0  # process_hook records of the storm's file
        self.hooks = 0  # process_hook records of anything (other hooks, other paths)
        self.by_type: Counter[str] = Counter()
        self.messages = 0
        self.decode_errors = 0
        self.first_mine: float | None = None  # time.monotonic() of the first / last
        self.last_mine: float | None = None  # message holding a record of ours
        self.last_hook = time.monotonic()  # of a process_hook record, or the reset

    def on_raw(self, data: bytes) -> None:
        now = time.monotonic()
        self.messages += 1
        try:
            body = codec.unpack(data)
        except codec.DecodeError:
            self.decode_errors += 1
            return
        kind, records = body.get("type"), body.get("records") or []
        self.by_type[str(kind)] += len(records)
        if kind != subjects.PROCESS_HOOK:
            return
        self.hooks += len(records)
        self.last_hook = now
        prefix, mine = self.prefix, 0
        for r in records:
            args = r.get("args") or ()
            if len(args) > 1 and isinstance(args[1], str) and args[1].startswith(prefix):
                mine += 1
        if mine:
            self.mine += mine
            if self.first_mine is None:
                self.first_mine = now
            self.last_mine = now

    def finish(self) -> dict[str, Any]:
        return {"hook_mine": self.mine, "hook_all": self.hooks, "by_type": dict(self.by_type),
                "messages": self.messages, "decode_errors": self.decode_errors,
                "first_mine": self.first_mine, "last_mine": self.last_mine}  # fmt: skip


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(url: str, node: str, prefix: str) -> None:
    errors: Counter[str] = Counter()

    async def on_error(e: Exception) -> None:
        # A slow consumer here would be a loss the sensor never saw: count it.
        errors[type(e).__name__] += 1

    nc = await nats.connect(url, name="ocellus-bench-open-consumer", error_cb=on_error)
    tally = Tally(prefix)
    beats: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_raw(msg: Any) -> None:
        tally.on_raw(msg.data)

    async def on_status(msg: Any) -> None:
        body = codec.unpack(msg.data)
        beats.put_nowait({"counters": body.get("counters", {}), "hooks": body.get("hooks", {})})

    await nc.subscribe(subjects.raw_all(node), cb=on_raw, pending_msgs_limit=1_000_000,
                       pending_bytes_limit=2**31)  # fmt: skip
    await nc.subscribe(subjects.status("sensor", node), cb=on_status)
    await nc.flush()
    emit({"ready": True})

    async def fresh_beat() -> dict[str, Any]:
        while not beats.empty():
            beats.get_nowait()
        return await asyncio.wait_for(beats.get(), 10.0)

    async def command() -> str:
        return (await asyncio.to_thread(sys.stdin.readline)).strip()

    while (cmd := await command()) not in ("", "quit"):
        verb, _, arg = cmd.partition(" ")
        if verb == "before":
            tally.reset()
            errors.clear()
            emit(await fresh_beat())
        elif verb == "after":
            # Other processes' exec/exit records never stop: quiet means no
            # process_hook record for QUIET s (or at least QUIET s of waiting).
            expected = int(arg or 0)
            started = tally.last_hook = time.monotonic()
            while time.monotonic() - started < CAP:
                if expected and tally.mine >= expected:
                    break
                if time.monotonic() - tally.last_hook > QUIET:
                    break
                await asyncio.sleep(0.05)
            waited = time.monotonic() - started
            # The sensor publishes its counters after the records they count:
            # a beat from now on has them all.
            emit({**tally.finish(), "settle_s": round(waited, 3), "nats_errors": dict(errors),
                  **await fresh_beat()})  # fmt: skip
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
