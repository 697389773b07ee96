"""The ring buffer reader against the real kernel: draining never makes the
kernel drop a record it had room for. The consumer position is read by the
kernel at every reserve; a store of it that is not one 8-byte write (as
struct.pack_into's, which zero-fills first) shows the kernel a position of 0
and a full ring for a moment, and records are dropped and counted
ringbuf_full although the ring is all but empty."""

from __future__ import annotations

import mmap
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.open_driver import compile_open_driver
from services.enforcer.compile import compile_selectors
from services.enforcer.plan import plan_hooks
from services.sensor.reader import RingBuffer
from tests.hook_engine import NO_KPROBES, Engine, loaded_engine, policy

RING_PAGES = 4096  # 16 MiB, the sensor's default: ~1 s of these records at RATE
OPENS = 300_000  # the ring wraps twice: the position the bug showed is past a lap
RATE = 100_000  # opens/s: a drain every few records, so only the bug can fill it


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """A ring that a reader thread descheduled for a while on a busy machine
    does not really fill."""
    yield from loaded_engine(RING_PAGES)


@pytest.mark.bpf
def test_draining_drops_nothing_the_ring_had_room_for(engine: Engine, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("x")
    p = policy(
        "  tracepoints:\n  - subsystem: syscalls\n    event: sys_enter_openat\n"
        "    args: [{index: 6, type: string}]\n    selectors:\n"
        f"    - matchArgs: [{{index: 6, operator: Prefix, values: ['{tmp_path}/']}}]\n"
    )
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    hook_id = engine.table.attach(planned, compile_selectors("p", planned, p.spec.tracepoints[0]))
    # A reader of its own on the same ring, draining as fast as it can: every
    # take that finds records stores the consumer position.
    ring = RingBuffer(engine.probes.ringbuf_fd, RING_PAGES * mmap.PAGESIZE)
    stop = threading.Event()
    drained = [0, 0]  # records, takes that stored a position

    def drain() -> None:
        while not stop.is_set():
            if batch := ring.take(256):
                drained[0] += len(batch)
                drained[1] += 1
            else:
                time.sleep(0)

    full_before = engine.probes.kernel_counters()["ringbuf_full"]
    reader = threading.Thread(target=drain)
    reader.start()
    try:
        driver = compile_open_driver(tmp_path)
        subprocess.run([str(driver), str(OPENS), str(target), str(RATE)], check=True, timeout=60)
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
        ring.close()
        stats = engine.table.stats(hook_id)
        engine.table.detach(hook_id)
    dropped = engine.probes.kernel_counters()["ringbuf_full"] - full_before
    assert stats["matched"] >= OPENS
    assert drained[1] > 1000  # the position was stored often
    assert dropped == 0 and stats["posted"] == stats["matched"], (stats, dropped)
