"""Out-of-order records wait for what they need, then go out anyway."""

from __future__ import annotations

from schemas.raw import RawExec, RawExit
from services.enricher.holding import Holding

BASE = {"ktime": 1, "tid": 5, "uid": 0, "gid": 0, "cgroup_id": 1, "comm": "x", "flags": 0}


def test_held_records_are_released_by_key_or_deadline() -> None:
    """An exec waits for its parent pid, an exit for its pid; both expire on time."""
    now = [100.0]
    holding = Holding(1.0, clock=lambda: now[0])
    ex = RawExec(**BASE, pid=5, ppid=4, binary="/x", argv=["x"])
    ez = RawExit(**BASE, pid=6, ppid=4, exit_code=0, signal=0)
    holding.hold_exec(ex, 0, "/", None, None)
    holding.hold_exit(ez, 0)
    assert len(holding) == 2
    assert [h.rec for h in holding.execs_waiting_for(4)] == [ex]
    assert holding.expired() == ([], [])
    now[0] += 1.5
    execs, exits = holding.expired()
    assert execs == [] and [h.rec for h in exits] == [ez]
    assert len(holding) == 0


def test_everything_is_released_at_shutdown() -> None:
    """expired(everything=True) empties the holding whatever the deadlines."""
    holding = Holding(60.0)
    holding.hold_exec(RawExec(**BASE, pid=5, ppid=4, binary="/x", argv=["x"]), 0, None, None, None)
    execs, exits = holding.expired(everything=True)
    assert len(execs) == 1 and exits == []
