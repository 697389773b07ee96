"""The sensor's BPF object (process lifecycle + the generic hook engine):
compile, attach, seed, count, detach."""

from __future__ import annotations

import ctypes as ct
import re
from pathlib import Path
from typing import Any

from schemas.raw import KernelStat
from services.common import bpfsys
from services.common.errors import OcellusError
from services.common.logging import get_logger
from services.sensor.btf import sensor_cflags
from services.sensor.hook_records import POLICY_MAPS
from services.sensor.namespaces import NamespaceError, namespace_cflags
from services.sensor.proc_seed import seed_proc_sel

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
_BPF_NOEXIST = 1
GENERIC_PROGRAM = b"ocellus_generic_tp"  # bpf/generic.bpf.c
# Its entry for records that hold a syscall's first two args (bpf/process.bpf.c).
GENERIC_ARGS_PROGRAM = b"ocellus_generic_args_tp"
GENERIC_EXIT_PROGRAM = b"ocellus_generic_exit_tp"  # bpf/hook_return.bpf.c
log = get_logger("ocellus.sensor")


class ProbeError(OcellusError):
    """The BPF programs could not be compiled or attached."""


class ProcessProbes:
    """bpf/process.bpf.c (which includes generic.bpf.c) loaded with BCC: the
    process tracepoints attach on load; the generic hook program is loaded
    (verified) too, and attached to the tracepoints the policy maps (pinned
    in ``pin_dir``) name by services.sensor.attachments."""

    def __init__(
        self,
        *,
        ringbuf_pages: int,
        args_max: int,
        procs_max: int,
        wakeup_bytes: int,
        pin_dir: Path,
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
            f'-DOCELLUS_PIN_DIR="{pin_dir}"',
            *(f"-D{m.define}={m.max_entries}" for m in POLICY_MAPS),
        ]
        self.pin_dir = pin_dir
        self.bpf: Any = None

    def load(self) -> None:
        from bcc import BPF  # imported late: only the sensor needs BCC

        try:
            cflags = [*self.cflags, *sensor_cflags(), *namespace_cflags()]
        except NamespaceError as e:
            raise ProbeError(str(e)) from e
        prepare_pins(self.pin_dir)
        try:
            self.bpf = BPF(src_file=str(self.source).encode(), cflags=cflags)
            # Verified now, at start, rather than at the first policy.
            engine = self.bpf.load_func(GENERIC_PROGRAM, BPF.TRACEPOINT)
            self.bpf.load_func(GENERIC_ARGS_PROGRAM, BPF.TRACEPOINT)
            self.bpf[b"generic_engine"][ct.c_int(0)] = ct.c_int(engine.fd)
            self.bpf.load_func(GENERIC_EXIT_PROGRAM, BPF.TRACEPOINT)
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

    def seed_selectors(self, proc: Path = Path("/proc")) -> int:
        """Process-selector state (binary, ancestors) of every process alive now,
        so that processes older than the sensor match matchBinaries and matchPIDs
        followForks; entries the kernel already wrote win."""
        return seed_proc_sel(self.bpf[b"proc_sel"], self.bpf[b"bin_state"], proc)

    def kernel_counters(self) -> dict[str, int]:
        stats = self.bpf[b"stats"]
        return {stat.name.lower(): int(sum(stats[ct.c_int(stat)])) for stat in KernelStat}

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()  # detaches every tracepoint
            self.bpf = None


_LAYOUT_DIR = re.compile(r"[0-9a-f]{12}")  # hook_records.layout_id()
_MAP_NAMES = {m.name for m in POLICY_MAPS}


def prepare_pins(pin_dir: Path) -> None:
    """The pin directory exists; pins there that do not have the layout
    POLICY_MAPS says go (BCC would reuse them as they are); other layouts'
    directories of this node go too (no program of this version reads them)."""
    pin_dir.mkdir(parents=True, exist_ok=True)
    for sibling in pin_dir.parent.iterdir():
        # Only what looks like another layout of ours (a layout id, holding
        # nothing but our maps' names): never another tool's pins, whatever
        # directory the settings point at.
        if sibling == pin_dir or not _LAYOUT_DIR.fullmatch(sibling.name) or not sibling.is_dir():
            continue
        pins = list(sibling.iterdir())
        if any(p.name not in _MAP_NAMES or p.is_dir() for p in pins):
            log.warning("left a layout-like directory with foreign pins", path=str(sibling))
            continue
        for pin in pins:
            pin.unlink()
        sibling.rmdir()
        log.warning("removed policy maps of another layout", path=str(sibling))
    for spec in POLICY_MAPS:
        pin = pin_dir / spec.name
        if not pin.exists():
            continue
        try:
            m = bpfsys.PinnedMap(pin)
        except OSError as e:
            raise ProbeError(f"pinned map {pin} cannot be opened: {e}") from e
        info = m.info
        m.close()
        want = (spec.type, ct.sizeof(spec.key), ct.sizeof(spec.value), spec.max_entries,
                info.flags if spec.flags is None else spec.flags)  # fmt: skip
        have = (info.type, info.key_size, info.value_size, info.max_entries, info.flags)
        if have != want:
            pin.unlink()
            log.warning("removed a pinned map of another layout", path=str(pin), have=have,
                        want=want)  # fmt: skip


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
