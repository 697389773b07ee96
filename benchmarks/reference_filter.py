"""Target A's reference: bpf/bench/reference_filter.bpf.c loaded in the
bench's own process, the floor any in-kernel path-prefix filter pays here;
or, with ``dispatch_only``, a program on the same tracepoint that only
counts, what the tracepoint path itself costs before any filter; with
``raw``, either on the raw tracepoint raw_syscalls:sys_enter."""

from __future__ import annotations

import ctypes as ct
from types import TracebackType
from typing import Any

from benchmarks.procs import REPO

SOURCE = REPO / "bpf" / "bench" / "reference_filter.bpf.c"


class ReferenceFilter:
    """The reference program attached to sys_enter_openat while in a ``with``,
    its trie holding ``prefix``; ``counts()`` says what it saw (a program that
    only counts sees every open as filtered)."""

    def __init__(self, prefix: str, dispatch_only: bool = False, raw: bool = False) -> None:
        self.prefix = prefix.encode()
        self.cflags = [f"-DOCELLUS_BENCH_{name}" for name, on in
                       (("DISPATCH_ONLY", dispatch_only), ("RAW", raw)) if on]  # fmt: skip
        self._bpf: Any = None

    def __enter__(self) -> ReferenceFilter:
        from bcc import BPF  # only this configuration needs it

        # TRACEPOINT_PROBE and RAW_TRACEPOINT_PROBE: attached on load
        self._bpf = BPF(src_file=str(SOURCE), cflags=self.cflags)
        trie = self._bpf["reference_prefixes"]
        key = trie.Key()
        key.prefixlen = 8 * len(self.prefix)
        key.data = self.prefix
        trie[key] = ct.c_uint8(1)
        return self

    def counts(self) -> tuple[int, int]:
        """(filtered, matched), summed over CPUs."""
        table = self._bpf["reference_counts"]
        return tuple(sum(table[ct.c_int(i)]) for i in (0, 1))  # type: ignore[return-value]

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bpf.cleanup()
