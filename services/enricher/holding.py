"""Out-of-order input, held briefly: a child's exec before its parent is
known, an exit before its exec. Released when the missing piece arrives, or
emitted with what is known when ``hold_seconds`` pass (counted). Hook records
of a process whose exec is held wait behind that exec (and leave with it)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.raw import RawExec, RawExit, RawHook


@dataclass(frozen=True, slots=True)
class HeldExec:
    deadline: float
    rec: RawExec
    boot_ns: int
    cwd: str | None
    container: Any
    nspid: int | None


@dataclass(frozen=True, slots=True)
class HeldExit:
    deadline: float
    rec: RawExit
    boot_ns: int


class Holding:
    def __init__(self, hold_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_seconds = hold_seconds
        self._clock = clock
        self._execs: dict[int, list[HeldExec]] = {}  # by the parent pid they wait for
        self._exits: dict[int, HeldExit] = {}  # by pid
        self._exec_pids: Counter[int] = Counter()  # pids with an exec held
        self._hooks: dict[int, list[tuple[RawHook, int, Any]]] = {}  # pid: (rec, boot_ns, plan)

    def __len__(self) -> int:
        held_hooks = sum(map(len, self._hooks.values()))
        return sum(map(len, self._execs.values())) + len(self._exits) + held_hooks

    def exec_held(self, pid: int) -> bool:
        return pid in self._exec_pids

    def hold_hook(self, rec: RawHook, boot_ns: int, plan: Any) -> None:
        """Behind the held exec of the same pid: released by ``hooks_of`` once it is out.
        The hook's plan is kept with it: its id may leave the registry meanwhile."""
        self._hooks.setdefault(rec.pid, []).append((rec, boot_ns, plan))

    def hooks_of(self, pid: int) -> list[tuple[RawHook, int, Any]]:
        return self._hooks.pop(pid, [])

    def hold_exec(
        self, rec: RawExec, boot_ns: int, cwd: str | None, container: Any, nspid: int | None
    ) -> None:
        held = HeldExec(self._clock() + self.hold_seconds, rec, boot_ns, cwd, container, nspid)
        self._execs.setdefault(rec.ppid, []).append(held)
        self._exec_pids[rec.pid] += 1

    def hold_exit(self, rec: RawExit, boot_ns: int) -> None:
        self._exits[rec.pid] = HeldExit(self._clock() + self.hold_seconds, rec, boot_ns)

    def execs_waiting_for(self, parent_pid: int) -> list[HeldExec]:
        released = self._execs.pop(parent_pid, [])
        self._released(released)
        return released

    def _released(self, execs: list[HeldExec]) -> None:
        for held in execs:
            self._exec_pids[held.rec.pid] -= 1
            if self._exec_pids[held.rec.pid] <= 0:
                del self._exec_pids[held.rec.pid]

    def exit_of(self, pid: int) -> HeldExit | None:
        return self._exits.pop(pid, None)

    def expired(self, *, everything: bool = False) -> tuple[list[HeldExec], list[HeldExit]]:
        """Everything past its deadline (or everything at all), removed from holding."""
        now = float("inf") if everything else self._clock()
        execs: list[HeldExec] = []
        for ppid in [p for p, held in self._execs.items() if held[0].deadline <= now]:
            waiting = self._execs.pop(ppid)
            execs += [h for h in waiting if h.deadline <= now]
            later = [h for h in waiting if h.deadline > now]
            if later:
                self._execs[ppid] = later
        self._released(execs)
        exits = [self._exits.pop(pid) for pid, h in list(self._exits.items()) if h.deadline <= now]
        return execs, exits
