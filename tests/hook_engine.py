"""The generic hook engine in the test process: the sensor's BPF object
loaded with its policy maps pinned in a bpffs directory of the test's own,
the enforcer's HookTable writing those maps, the sensor's HookAttachments
following them, and a reader of the real ring buffer decoding records as
the sensor does. For tests of the kernel side (tests/sensor, tests/policies)."""

from __future__ import annotations

import mmap
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import subjects
from schemas.policy import load_policy
from services.enforcer.hooktable import HookTable
from services.enforcer.plan import PlannedHook, plan_hooks
from services.sensor.attachments import HookAttachments
from services.sensor.hook_records import SlotConfig
from services.sensor.mounts import BPFFS, TRACEFS, ensure_mounted
from services.sensor.probes import GENERIC_PROGRAM, ProcessProbes
from services.sensor.reader import RingBuffer
from services.sensor.records import RecordError, decode
from tests.conftest import require_root

PAGES = 256
NO_KPROBES = {"kprobes": "absent", "bpf_lsm": "absent", "uprobes": "absent"}


def policy(spec: str, name: str = "p") -> Any:
    return load_policy(
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: {name}}}\n"
        "spec:\n" + spec
    )


class SyncedTable:
    """HookTable whose every change is followed by the sensor's sync, as the
    enforcer's request does in the services."""

    def __init__(self, table: HookTable, attachments: HookAttachments) -> None:
        self.inner, self.attachments = table, attachments

    def attach(self, planned: PlannedHook, slots: list[SlotConfig]) -> int:
        hook_id = self.inner.attach(planned, slots)
        self.attachments.sync()
        return hook_id

    def update(self, hook_id: int, slots: list[SlotConfig]) -> None:
        self.inner.update(hook_id, slots)
        self.attachments.sync()

    def detach(self, hook_id: int) -> None:
        self.inner.detach(hook_id)
        self.attachments.sync()

    def stats(self, hook_id: int) -> dict[str, int]:
        return self.inner.stats(hook_id)

    def attached(self) -> set[int]:
        return self.attachments.attached


class Engine:
    """The loaded object, its hook table and a reader of its ring buffer."""

    def __init__(self, probes: ProcessProbes) -> None:
        self.probes = probes
        self.attachments = HookAttachments(probes)
        self.table = SyncedTable(HookTable(probes.pin_dir), self.attachments)
        self.ring = RingBuffer(probes.ringbuf_fd, PAGES * mmap.PAGESIZE)
        self.hooks: list[dict[str, Any]] = []

    def plan(self, spec: str) -> tuple[PlannedHook, Any]:
        p = policy(spec)
        [planned] = plan_hooks("p", p.spec, NO_KPROBES)
        return planned, next(h for _, h in p.spec.hooks())

    def drain(self) -> None:
        while batch := self.ring.take(4096):
            for data in batch:
                try:
                    kind, rec = decode(data)
                except RecordError:
                    continue
                if kind == subjects.PROCESS_HOOK:
                    self.hooks.append(rec)

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 2.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            found = [r for r in self.hooks if pred(r)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def prog_id(self) -> int:
        fd = self.probes.bpf.funcs[GENERIC_PROGRAM].fd
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        return int(next(ln for ln in info.splitlines() if ln.startswith("prog_id:")).split()[1])

    def close(self) -> None:
        self.attachments.close()
        self.table.inner.close()
        self.ring.close()
        self.probes.close()


def fresh_pin_dir() -> Path:
    """A bpffs directory of this test run's own (removed by the fixture)."""
    ensure_mounted("bpf", BPFFS)
    return BPFFS / f"ocellus-test-{uuid.uuid4().hex[:12]}" / "maps"


def loaded_engine(pages: int = PAGES) -> Iterator[Engine]:
    """The sensor's object loaded with a ring of ``pages`` and pins of its own,
    for a fixture to yield."""
    require_root()
    ensure_mounted("tracefs", TRACEFS)
    pin_dir = fresh_pin_dir()
    probes = ProcessProbes(
        ringbuf_pages=pages, args_max=4096, procs_max=4096, wakeup_bytes=4096, pin_dir=pin_dir
    )
    probes.load()
    eng = Engine(probes)
    yield eng
    eng.close()
    shutil.rmtree(pin_dir.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    yield from loaded_engine()


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, check=False, timeout=10)
