"""The sensor's BPF object (process lifecycle + the generic hook engine):
compile, attach, seed, count, detach."""

from __future__ import annotations

import ctypes as ct
from pathlib import Path
from typing import Any

from schemas.raw import KernelStat
from services.common.errors import OcellusError
from services.sensor.btf import sensor_cflags

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
_BPF_NOEXIST = 1
GENERIC_PROGRAM = b"ocellus_generic_tp"  # bpf/generic.bpf.c


class ProbeError(OcellusError):
    """The BPF programs could not be compiled or attached."""


class ProcessProbes:
    """bpf/process.bpf.c (which includes generic.bpf.c) loaded with BCC: the
    process tracepoints attach on load; the generic hook program is loaded
    (verified) too, and attached to tracepoints later by
    services.sensor.hooks.HookTable."""

    def __init__(
        self,
        *,
        ringbuf_pages: int,
        args_max: int,
        procs_max: int,
        wakeup_bytes: int,
        bpf_dir: Path = BPF_DIR,
    ) -> None:
        if ringbuf_pages & (ringbuf_pages - 1):
            raise ProbeError(f"ringbuf_pages must be a power of two, got {ringbuf_pages}")
        if args_max <= 0 or args_max & (args_max - 1):
            raise ProbeError(f"args_max must be a power of two, got {args_max}")
        self.source = bpf_dir / "process.bpf.c"
        self.cflags = [
            f"-I{bpf_dir}",
            f"-DOCELLUS_RINGBUF_PAGES={ringbuf_pages}",
            f"-DOCELLUS_ARGS_MAX={args_max}",
            f"-DOCELLUS_PROCS_MAX={procs_max}",
            f"-DOCELLUS_WAKEUP_BYTES={wakeup_bytes}",
        ]
        self.bpf: Any = None

    def load(self) -> None:
        from bcc import BPF  # imported late: only the sensor needs BCC

        cflags = [*self.cflags, *sensor_cflags()]
        try:
            self.bpf = BPF(src_file=str(self.source).encode(), cflags=cflags)
            # Verified now, at start, rather than at the first policy.
            self.bpf.load_func(GENERIC_PROGRAM, BPF.TRACEPOINT)
        except Exception as e:  # BCC raises bare Exception for compile and load errors
            raise ProbeError(f"loading {self.source.name}: {e}") from e

    @property
    def ringbuf_fd(self) -> int:
        return int(self.bpf[b"events"].map_fd)

    def seed_parents(self, proc: Path = Path("/proc")) -> int:
        """Record the parent of every process alive now, so that processes older
        than the sensor have a ppid; entries the kernel already wrote win."""
        from bcc import libbcc

        procs = self.bpf[b"procs"]
        seeded = 0
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            ppid = read_ppid(entry)
            if ppid is None:
                continue
            key = procs.Key(int(entry.name))
            leaf = procs.Leaf()
            leaf.ppid = ppid
            if (
                libbcc.lib.bpf_update_elem(
                    procs.map_fd, ct.byref(key), ct.byref(leaf), _BPF_NOEXIST
                )
                == 0
            ):
                seeded += 1
        return seeded

    def kernel_counters(self) -> dict[str, int]:
        stats = self.bpf[b"stats"]
        return {stat.name.lower(): int(sum(stats[ct.c_int(stat)])) for stat in KernelStat}

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()  # detaches every tracepoint
            self.bpf = None


def read_ppid(proc_dir: Path) -> int | None:
    """Field 4 of /proc/<pid>/stat; comm (field 2) may hold spaces and parens."""
    try:
        stat = (proc_dir / "stat").read_bytes()
    except OSError:
        return None  # exited meanwhile
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def detach_all(probes: ProcessProbes) -> None:
    """Detach the tracepoints but keep the maps, so the ring can still be drained."""
    if probes.bpf is not None:
        for tp in list(probes.bpf.tracepoint_fds):
            probes.bpf.detach_tracepoint(tp)
