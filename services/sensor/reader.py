"""Drains the BPF ring buffer: a non-blocking read on a timer.

The ring is read straight from its memory mapping (the layout libbpf reads:
a consumer-position page we write, then the producer-position page and the
data pages, mapped twice so that a record that wraps is contiguous): no
libbpf callback per record and no poll thread, just a slice per record. The
bench showed where the time went before: a ctypes callback per record, and
a thread hand-off (GIL convoy, loop wake-up) per small batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import select
import struct
from collections.abc import Callable

from services.common.logging import get_logger

log = get_logger("ocellus.sensor.reader")

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8  # struct bpf_ringbuf_hdr { u32 len; u32 pg_off; }
_U32 = struct.Struct("<I")


class RingBuffer:
    """A BPF_MAP_TYPE_RINGBUF map of ``size`` bytes, consumed from user space."""

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self._mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)  # fmt: skip
        self._data = memoryview(self._producer)[page:]
        # The positions as u64 views: an item store is one aligned 8-byte
        # write (CPython copies the item with an 8-byte memcpy, a single mov
        # on x86-64; tests/sensor/test_ring_reader.py would see otherwise).
        # struct.pack_into zero-fills its target before packing, so
        # the kernel could read a consumer position of 0 in between, see the
        # ring as full and drop records (~50 per million at 100k/s).
        self._consumer_pos = memoryview(self._consumer).cast("Q")
        self._producer_pos = memoryview(self._producer)[:8].cast("Q")

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` records, oldest first; their space goes back to the kernel."""
        out: list[bytes] = []
        cons = start = self._consumer_pos[0]
        prod = self._producer_pos[0]
        data, mask = self._data, self._mask
        while cons < prod and len(out) < limit:
            off = cons & mask
            length = _U32.unpack_from(data, off)[0]
            if length & _BUSY:
                break  # reserved, not yet committed
            size = length & ~(_BUSY | _DISCARD)
            if not length & _DISCARD:
                out.append(bytes(data[off + _HDR : off + _HDR + size]))
            cons += (size + _HDR + 7) & ~7
        # x86 is TSO: a plain store publishes the new position after our reads.
        if cons != start:
            self._consumer_pos[0] = cons
        return out

    def close(self) -> None:
        self._consumer_pos.release()
        self._producer_pos.release()
        self._data.release()
        self._producer.close()
        self._consumer.close()


class RingBufferReader:
    """Drains the ring on the event loop without ever blocking it: a timer
    every ``interval_ms``, and early when the kernel forces a wakeup (it does
    every OCELLUS_WAKEUP_BYTES per CPU). Each drain takes at most ``batch_max``
    records at a time and yields between batches."""

    def __init__(
        self,
        map_fd: int,
        size: int,
        deliver: Callable[[list[bytes]], None],
        *,
        interval_ms: int = 20,
        batch_max: int = 4096,
    ) -> None:
        self._ring = RingBuffer(map_fd, size)
        self._deliver = deliver
        self._interval = interval_ms / 1000
        self._batch_max = batch_max
        # Edge-triggered, inside an epoll of our own that the loop watches:
        # the loop's own (level-triggered) epoll would fire whenever any data
        # is there, draining one record at a time and undoing the batching.
        self._wakeups = select.epoll()
        self._wakeups.register(map_fd, select.EPOLLIN | select.EPOLLET)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self.records = 0
        self.drains = 0

    def _drain(self) -> None:
        self.drains += 1
        while batch := self._ring.take(self._batch_max):
            self.records += len(batch)
            self._deliver(batch)
            if len(batch) < self._batch_max:
                return

    def _on_wakeup(self) -> None:
        self._wakeups.poll(0)  # consume the edge
        self._drain()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._drain()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._wakeups.fileno(), self._on_wakeup)
        self._timer = self._loop.create_task(self._tick(), name="ringbuf-drain")

    async def stop(self) -> None:
        """Stop draining on schedule, then take what is left; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._wakeups.fileno())
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        self._drain()  # what the programs wrote before they were detached
        self._wakeups.close()
        self._ring.close()
