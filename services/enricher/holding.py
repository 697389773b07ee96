"""Out-of-order input, held briefly: a child's exec before its parent is
known, an exit before its exec. Released when the missing piece arrives, or
emitted with what is known when ``hold_seconds`` pass (counted)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.raw import RawExec, RawExit


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

    def __len__(self) -> int:
        return sum(map(len, self._execs.values())) + len(self._exits)

    def hold_exec(
        self, rec: RawExec, boot_ns: int, cwd: str | None, container: Any, nspid: int | None
    ) -> None:
        held = HeldExec(self._clock() + self.hold_seconds, rec, boot_ns, cwd, container, nspid)
        self._execs.setdefault(rec.ppid, []).append(held)

    def hold_exit(self, rec: RawExit, boot_ns: int) -> None:
        self._exits[rec.pid] = HeldExit(self._clock() + self.hold_seconds, rec, boot_ns)

    def execs_waiting_for(self, parent_pid: int) -> list[HeldExec]:
        return self._execs.pop(parent_pid, [])

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
        exits = [self._exits.pop(pid) for pid, h in list(self._exits.items()) if h.deadline <= now]
        return execs, exits
