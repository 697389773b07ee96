"""Drains the BPF ring buffer on a thread of its own, off the event loop.

The ring is read straight from its memory mapping (the layout libbpf reads:
a consumer-position page we write, then the producer-position page and the
data pages, mapped twice so that a record that wraps is contiguous): no
libbpf callback per record, just a slice per record.

The kernel side wakes us only every N records (BPF_RB_NO_WAKEUP otherwise),
so the thread sleeps up to ``interval_ms`` in an edge-triggered epoll (a
forced wakeup ends the sleep early) and then takes everything there, in
batches of at most ``batch_max`` handed to ``deliver`` (thread-safe).
"""

from __future__ import annotations

import mmap
import select
import struct
import threading
from collections.abc import Callable

from services.common.logging import get_logger

log = get_logger("ocellus.sensor.reader")

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8  # struct bpf_ringbuf_hdr { u32 len; u32 pg_off; }
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class RingBuffer:
    """A BPF_MAP_TYPE_RINGBUF map of ``size`` bytes, consumed from user space."""

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self._mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)  # fmt: skip
        self._data = memoryview(self._producer)[page:]

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` records, oldest first; their space goes back to the kernel."""
        out: list[bytes] = []
        cons = _U64.unpack_from(self._consumer, 0)[0]
        prod = _U64.unpack_from(self._producer, 0)[0]
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
        _U64.pack_into(self._consumer, 0, cons)
        return out

    def close(self) -> None:
        self._data.release()
        self._producer.close()
        self._consumer.close()


class RingBufferReader:
    def __init__(
        self,
        map_fd: int,
        size: int,
        deliver: Callable[[list[bytes]], None],
        *,
        interval_ms: int = 10,
        batch_max: int = 4096,
    ) -> None:
        self._ring = RingBuffer(map_fd, size)
        self._deliver = deliver
        self._interval = interval_ms / 1000
        self._batch_max = batch_max
        self._epoll = select.epoll()
        # Edge-triggered: wake on the kernel's forced wakeups only, not
        # whenever some data is there (which would undo the batching).
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)
        self._stopping = threading.Event()
        self._closed = False
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="ringbuf-reader", daemon=True)

    def _drain(self) -> None:
        while batch := self._ring.take(self._batch_max):
            self.records += len(batch)
            self._deliver(batch)
            if len(batch) < self._batch_max:
                return

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._epoll.poll(self._interval)
                self._drain()
        except Exception:
            log.exception("ring buffer reader failed")
            raise

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop polling, then drain what is left; idempotent."""
        if self._closed:
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._drain()  # what the programs wrote before they were detached
        self._epoll.close()
        self._ring.close()
        self._closed = True
