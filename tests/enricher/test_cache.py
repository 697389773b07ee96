"""The process cache: exec ids, parent links, ancestry, lifetimes, the cap."""

from __future__ import annotations

import base64

import pytest

from schemas.events import GetEventsResponse, format_timestamp
from schemas.raw import RawClone, RawExec, RawExit
from services.enricher.cache import ProcessCache, Timestamps
from services.enricher.procfs import ProcSnapshot

NODE = "node-a"
BOOT = 1_700_000_000 * 10**9


def _base(pid: int, ppid: int, ktime: int) -> dict:
    return {
        "ktime": ktime,
        "pid": pid,
        "tid": pid,
        "ppid": ppid,
        "uid": 0,
        "gid": 0,
        "cgroup_id": 1,
        "comm": "x",
        "flags": 0,
    }


def clone(pid: int, ppid: int, ktime: int) -> RawClone:
    return RawClone(**_base(pid, ppid, ktime), parent_tid=ppid, clone_flags=0x11)


def exec_(pid: int, ppid: int, ktime: int, binary: str, *args: str) -> RawExec:
    return RawExec(**_base(pid, ppid, ktime), binary=binary, argv=[binary, *args])


def exit_(pid: int, ppid: int, ktime: int, code: int = 0, sig: int = 0) -> RawExit:
    return RawExit(**_base(pid, ppid, ktime), exit_code=code, signal=sig)


def snap(pid: int, ppid: int, binary: str) -> ProcSnapshot:
    return ProcSnapshot(
        pid=pid, ppid=ppid, start_ktime=pid * 1000, uid=0, binary=binary, argv=[binary], cwd="/"
    )


def fork_exec(cache: ProcessCache, pid: int, ppid: int, t: int, binary: str, *args: str) -> dict:
    cache.clone(clone(pid, ppid, t), BOOT)
    return cache.exec(exec_(pid, ppid, t + 1, binary, *args), BOOT, "/tmp", None)


def test_chain_links_parents_and_ancestors() -> None:
    """sh → sh → true: each exec names its parent's exec id and the ancestors above it."""
    cache = ProcessCache(NODE, max_entries=1000, ancestors_depth=10)
    cache.seed([snap(1, 0, "/sbin/init")], BOOT, {})
    e1 = fork_exec(cache, 100, 1, 10, "/bin/sh", "-c", "sh -c true")
    e2 = fork_exec(cache, 101, 100, 20, "/bin/sh", "-c", "true")
    e3 = fork_exec(cache, 102, 101, 30, "/bin/true")
    for event in (e1, e2, e3):
        GetEventsResponse.from_json_dict(event)  # valid Tetragon JSON
    p1, p2, p3 = (e["process_exec"]["process"] for e in (e1, e2, e3))
    assert p3["parent_exec_id"] == p2["exec_id"]
    assert p2["parent_exec_id"] == p1["exec_id"]
    assert e3["process_exec"]["parent"]["exec_id"] == p2["exec_id"]
    assert [a["pid"] for a in e3["process_exec"]["ancestors"]] == [100, 1]
    assert base64.b64decode(p3["exec_id"]).decode() == f"{NODE}:31:102"
    assert p3["flags"] == "execve clone"
    assert p1["arguments"] == "-c 'sh -c true'"
    assert e1["process_exec"]["parent"]["flags"] == "procFS"


def test_exit_carries_status_signal_and_parent() -> None:
    """An exit names the exec'd process, its parent, and its status or signal."""
    cache = ProcessCache(NODE, max_entries=1000, ancestors_depth=2)
    cache.seed([snap(1, 0, "/sbin/init")], BOOT, {})
    fork_exec(cache, 50, 1, 10, "/bin/false")
    ev = cache.exit(exit_(50, 1, 99, code=1), BOOT)
    body = GetEventsResponse.from_json_dict(ev).process_exit
    assert (body.process.binary, body.status, body.parent.pid) == ("/bin/false", 1, 1)
    fork_exec(cache, 51, 1, 100, "/bin/sleep", "9")
    ev = cache.exit(exit_(51, 1, 199, sig=9), BOOT)
    assert ev["process_exit"]["signal"] == "SIGKILL"
    assert "status" not in ev["process_exit"]


def test_exited_parent_is_kept_while_children_live_then_freed() -> None:
    """A parent's entry outlives it while a child lives, and goes with the last child."""
    cache = ProcessCache(NODE, max_entries=1000, ancestors_depth=10)
    cache.seed([snap(1, 0, "/sbin/init")], BOOT, {})
    fork_exec(cache, 10, 1, 1, "/bin/sh")
    fork_exec(cache, 11, 10, 2, "/bin/sleep")
    size = len(cache)
    cache.exit(exit_(10, 1, 3), BOOT)
    assert len(cache) == size  # the shell stays: its child still runs
    ev = cache.exit(exit_(11, 10, 4), BOOT)
    assert ev["process_exit"]["parent"]["binary"] == "/bin/sh"
    assert len(cache) == size - 2  # both gone now
    assert cache.live(10) is None


def test_cache_stays_under_its_cap_and_counts_evictions() -> None:
    """Past the cap the least recently used entries go, and are counted."""
    cache = ProcessCache(NODE, max_entries=1000, ancestors_depth=3)
    cache.seed([snap(1, 0, "/sbin/init")], BOOT, {})
    for pid in range(2, 3002):  # long-lived: nothing exits
        fork_exec(cache, pid, 1, pid * 10, "/bin/sleep")
    assert len(cache) <= 1000
    assert cache.counters["evicted"] >= 2000


def test_100k_short_lived_processes_leave_nothing_behind() -> None:
    """Fork, exec, exit 100,000 times: the cache returns to its size before."""
    cache = ProcessCache(NODE, max_entries=5000, ancestors_depth=3)
    cache.seed([snap(1, 0, "/sbin/init"), snap(2, 1, "/bin/bash")], BOOT, {})
    before = len(cache)
    for i in range(100_000):
        pid = 1000 + i % 30000
        fork_exec(cache, pid, 2, i * 10, "/bin/true")
        assert cache.exit(exit_(pid, 2, i * 10 + 5), BOOT) is not None
    assert len(cache) == before
    assert cache.counters["evicted"] == 0


def test_exit_of_unknown_process_says_what_it_knows() -> None:
    """An exit with no exec is emitted from the record alone, flagged `miss`."""
    cache = ProcessCache(NODE, max_entries=100, ancestors_depth=3)
    rec = exit_(77, 1, 5, code=3)
    assert cache.exit(rec, BOOT) is None
    ev = cache.exit_unknown(rec, BOOT)
    GetEventsResponse.from_json_dict(ev)
    assert ev["process_exit"]["process"]["flags"] == "miss"
    assert ev["process_exit"]["status"] == 3


def test_exec_after_parent_exited_still_names_the_parent() -> None:
    """A runtime forks, exits, then its child execs: the child's parent is still known."""
    cache = ProcessCache(NODE, max_entries=100, ancestors_depth=3)
    cache.seed([snap(1, 0, "/sbin/init")], BOOT, {})
    fork_exec(cache, 10, 1, 1, "/usr/sbin/runc", "create")
    cache.clone(clone(11, 10, 2), BOOT)
    cache.exit(exit_(10, 1, 3), BOOT)
    assert cache.live(10) is None
    ev = cache.exec(exec_(11, 10, 4, "/bin/sh"), BOOT, "/", None)
    assert ev["process_exec"]["parent"]["binary"] == "/usr/sbin/runc"
    assert (
        ev["process_exec"]["process"]["parent_exec_id"] == ev["process_exec"]["parent"]["exec_id"]
    )


@pytest.mark.parametrize(
    "ns",
    [
        pytest.param(0, id="epoch"),
        pytest.param(BOOT, id="whole-second"),
        pytest.param(BOOT + 120_000_000, id="millis"),
        pytest.param(BOOT + 120_000, id="micros"),
        pytest.param(BOOT + 1, id="nanos"),
        pytest.param(BOOT + 999_999_999, id="last-nano-of-a-second"),
        pytest.param(253_402_300_797 * 10**9 + 5, id="year-9999"),
        pytest.param(-1, id="before-the-epoch"),
    ],
)
def test_timestamps_match_format_timestamp(ns: int) -> None:
    """The per-second memo gives format_timestamp's string, whether the second is new,
    remembered, or comes back after the memo was cleared."""
    stamps = Timestamps(keep=2)
    assert stamps(ns) == format_timestamp(ns)
    assert stamps(ns) == format_timestamp(ns)  # remembered
    stamps(ns + 10**9)
    stamps(ns + 2 * 10**9)  # the memo is full: cleared
    assert stamps(ns) == format_timestamp(ns)
