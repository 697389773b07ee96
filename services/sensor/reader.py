"""Drains the BPF ring buffer on a thread of its own, off the event loop.

The kernel side wakes us only every N records (BPF_RB_NO_WAKEUP otherwise),
so the thread polls with a timeout and then consumes whatever is there: a
burst is drained within ``interval_ms``, and a quiet system costs one
wakeup per interval. Records are copied out as bytes in batches of at most
``batch_max`` and handed to ``deliver`` (which must be thread-safe).
"""

from __future__ import annotations

import ctypes as ct
import threading
from collections.abc import Callable

from services.common.logging import get_logger

log = get_logger("ocellus.sensor.reader")


class RingBufferReader:
    def __init__(
        self,
        map_fd: int,
        deliver: Callable[[list[bytes]], None],
        *,
        interval_ms: int = 10,
        batch_max: int = 4096,
    ) -> None:
        from bcc.libbcc import _RINGBUF_CB_TYPE, lib

        self._lib = lib
        self._deliver = deliver
        self._interval_ms = interval_ms
        self._batch_max = batch_max
        self._batch: list[bytes] = []
        self._stopping = threading.Event()
        self.records = 0
        # Keep a reference: ctypes frees the trampoline with the object.
        self._callback = _RINGBUF_CB_TYPE(self._on_record)
        self._manager = lib.bpf_new_ringbuf(map_fd, self._callback, None)
        if not self._manager:
            raise OSError(f"cannot open ring buffer (map fd {map_fd})")
        self._thread = threading.Thread(target=self._run, name="ringbuf-reader", daemon=True)

    def _on_record(self, _ctx: object, data: int, size: int) -> int:
        self._batch.append(ct.string_at(data, size))
        # A negative return stops libbpf's consume loop after this record
        # (which is consumed): it keeps the batch bounded.
        return -1 if len(self._batch) >= self._batch_max else 0

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.records += len(batch)
            self._deliver(batch)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._lib.bpf_poll_ringbuf(self._manager, self._interval_ms)
                self._lib.bpf_consume_ringbuf(self._manager)
                while len(self._batch) >= self._batch_max:  # more may be waiting
                    self._flush()
                    self._lib.bpf_consume_ringbuf(self._manager)
                self._flush()
        except Exception:
            log.exception("ring buffer reader failed")
            raise

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop polling, then drain what is left; idempotent."""
        if self._manager is None:
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # Whatever the programs wrote before they were detached.
        self._lib.bpf_consume_ringbuf(self._manager)
        while self._batch:
            self._flush()
            self._lib.bpf_consume_ringbuf(self._manager)
        self._lib.bpf_free_ringbuf(self._manager)
        self._manager = None
