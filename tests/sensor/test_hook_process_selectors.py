"""Process selectors (matchBinaries, matchPIDs, matchNamespaces) against the real
kernel: policies compiled by the enforcer, placed with its HookTable, evaluated
by the sensor's generic program on real processes (tests/hook_engine.py)."""

from __future__ import annotations

import ctypes as ct
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import PolicyError
from services.enforcer.compile import compile_selectors
from services.enforcer.plan import plan_hooks
from services.sensor.hook_records import HOOK_SLOTS
from services.sensor.mounts import TRACEFS, ensure_mounted
from tests.hook_engine import NO_KPROBES, Engine, engine, policy, run

__all__ = ["engine"]  # the fixture, used by name

OPENAT = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{index: 6, type: string}, {index: 7, type: int}]
    selectors:
"""


def which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed on PATH")
    return path


def in_dir(d: Path) -> str:
    return f"      matchArgs: [{{index: 6, operator: Prefix, values: ['{d}/']}}]\n"


class Placed:
    """A compiled policy placed in the engine; its records."""

    def __init__(self, eng: Engine, selectors: str) -> None:
        p = policy(OPENAT + selectors)
        [planned] = plan_hooks("p", p.spec, NO_KPROBES)
        self.eng = eng
        self.hook_id = eng.table.attach(
            planned, compile_selectors("p", planned, p.spec.tracepoints[0])
        )

    def records(self, settle: float = 0.3) -> list[dict[str, Any]]:
        time.sleep(settle)
        self.eng.drain()
        return [r for r in self.eng.hooks if r["hook_id"] == self.hook_id]

    def close(self) -> None:
        if self.hook_id in self.eng.table.inner.hook_ids():
            self.eng.table.detach(self.hook_id)


@pytest.fixture
def place(engine: Engine) -> Iterator[Any]:
    placed: list[Placed] = []

    def make(selectors: str) -> Placed:
        placed.append(Placed(engine, selectors))
        return placed[-1]

    yield make
    for p in placed:
        p.close()


def opens(records: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    return [r for r in records if r["args"][0] == str(path)]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    f = tmp_path / "f"
    f.write_text("x\n")
    return f


@pytest.mark.parametrize(
    ("binary", "reported", "silent"),
    [
        pytest.param("{operator: In, values: ['{cat}']}", "cat", "head", id="in"),
        pytest.param("{operator: NotIn, values: ['{cat}']}", "head", "cat", id="not-in"),
        pytest.param("{operator: Prefix, values: ['{dir}/ca']}", "cat", "head", id="prefix"),
        pytest.param("{operator: NotPrefix, values: ['{dir}/ca']}", "head", "cat", id="not-prefix"),
        pytest.param("{operator: Postfix, values: ['/head']}", "head", "cat", id="postfix"),
        pytest.param("{operator: NotPostfix, values: ['/head']}", "cat", "head", id="not-postfix"),
    ],
)
def test_match_binaries_operators(
    place: Any, target: Path, binary: str, reported: str, silent: str
) -> None:
    """Each matchBinaries operator reports the opens of the binary it selects and not
    those of the other one."""
    cat = which("cat")
    selector = binary.replace("{cat}", cat).replace("{dir}", str(Path(cat).parent))
    hook = place(f"    - matchBinaries: [{selector}]\n{in_dir(target.parent)}")
    procs = {
        name: subprocess.run([which(name), str(target)], check=True) for name in ("cat", "head")
    }
    found = opens(hook.records(), target)
    assert {r["comm"] for r in found} == {reported}, found
    assert procs  # both ran (check=True)


def test_match_binaries_follow_children(place: Any, target: Path, tmp_path: Path) -> None:
    """followChildren: opens by the children of a matching shell (cat, head) are
    reported, and those of the same binaries outside it are not; without
    followChildren, the children are not reported."""
    sh = which("sh")
    follow = place(
        f"    - matchBinaries: [{{operator: In, values: ['{sh}'], followChildren: true}}]\n"
        + in_dir(tmp_path)
    )
    plain = place(f"    - matchBinaries: [{{operator: In, values: ['{sh}']}}]\n" + in_dir(tmp_path))
    outside = subprocess.run([which("cat"), str(target)], check=True)
    inside = subprocess.run(
        [sh, "-c", f"{which('cat')} {target}; {which('head')} {target}; : < {target}"],
        check=True,
    )
    got = opens(follow.records(), target)
    assert {r["comm"] for r in got} == {"cat", "head", "sh"}, got
    assert all(r["pid"] != outside.args and r["pid"] != os.getpid() for r in got)
    plain_got = opens(plain.records(settle=0), target)
    # The shell's own redirection only: its children run other binaries.
    assert [r["comm"] for r in plain_got] == ["sh"], plain_got
    assert inside.returncode == 0


def test_match_pids_follow_forks(place: Any, target: Path, tmp_path: Path) -> None:
    """matchPIDs In with followForks reports the shell and its children; without
    followForks, NotIn hides the shell itself but not its children; a cat outside
    the shell is reported only by NotIn."""
    sh = which("sh")
    shell = subprocess.Popen(
        [sh, "-c", f"read x; {which('cat')} {target}; : < {target}"], stdin=subprocess.PIPE
    )
    forks = place(
        f"    - matchPIDs: [{{operator: In, values: [{shell.pid}], followForks: true}}]\n"
        + in_dir(tmp_path)
    )
    not_in = place(
        f"    - matchPIDs: [{{operator: NotIn, values: [{shell.pid}]}}]\n" + in_dir(tmp_path)
    )
    outside = subprocess.Popen([which("cat"), str(target)], stdout=subprocess.DEVNULL)
    outside.wait()
    assert shell.stdin is not None
    shell.communicate(b"go\n", timeout=10)
    got = opens(forks.records(), target)
    assert {r["comm"] for r in got} == {"cat", "sh"}, got
    assert {r["pid"] for r in got if r["comm"] == "sh"} == {shell.pid}
    assert outside.pid not in {r["pid"] for r in got}
    hidden = opens(not_in.records(settle=0), target)
    assert shell.pid not in {r["pid"] for r in hidden}
    assert {r["comm"] for r in hidden} == {"cat"}
    assert outside.pid in {r["pid"] for r in hidden}


def test_match_pids_namespace_pid(place: Any, target: Path, tmp_path: Path) -> None:
    """isNamespacePID: pid 1 of a new pid namespace is matched by its namespace pid,
    and a host process with another pid is not."""
    hook = place(
        "    - matchPIDs: [{operator: In, values: [1], isNamespacePID: true}]\n" + in_dir(tmp_path)
    )
    # unshare --fork: the child is pid 1 of the new namespace and execs cat.
    boxed = run(which("unshare"), "--fork", "--pid", "--mount-proc", which("cat"), str(target))
    assert boxed.returncode == 0, boxed.stderr
    run(which("cat"), str(target))
    got = opens(hook.records(), target)
    assert len(got) == 1 and got[0]["comm"] == "cat", got


@pytest.mark.parametrize(
    ("operator", "boxed_reported"),
    [pytest.param("In", False, id="in-host"), pytest.param("NotIn", True, id="not-in-host")],
)
def test_match_namespaces_host_vs_container(
    place: Any, target: Path, tmp_path: Path, operator: str, boxed_reported: bool
) -> None:
    """Pid and Mnt host_ns: a cat in a new pid+mnt namespace and a cat on the host fall
    on opposite sides of In and NotIn."""
    hook = place(
        "    - matchNamespaces:\n"
        f"      - {{namespace: Pid, operator: {operator}, values: [host_ns]}}\n"
        f"      - {{namespace: Mnt, operator: {operator}, values: [host_ns]}}\n" + in_dir(tmp_path)
    )
    boxed = run(which("unshare"), "--fork", "--pid", "--mount-proc", which("cat"), str(target))
    assert boxed.returncode == 0, boxed.stderr
    host = subprocess.Popen([which("cat"), str(target)], stdout=subprocess.DEVNULL)
    host.wait()
    got = opens(hook.records(), target)
    host_seen = [r for r in got if r["pid"] == host.pid]
    boxed_seen = [r for r in got if r["pid"] != host.pid]
    assert bool(boxed_seen) == boxed_reported and bool(host_seen) != boxed_reported, got
    assert all(r["comm"] == "cat" for r in got)


def test_match_namespaces_explicit_inum(place: Any, target: Path, tmp_path: Path) -> None:
    """A namespace given by its inode number: the host's net namespace matches a
    host cat, another number matches nothing."""
    inum = Path("/proc/self/ns/net").stat().st_ino
    hit = place(
        f"    - matchNamespaces: [{{namespace: Net, operator: In, values: ['{inum}']}}]\n"
        + in_dir(tmp_path)
    )
    miss = place(
        f"    - matchNamespaces: [{{namespace: Net, operator: In, values: ['{inum + 1}']}}]\n"
        + in_dir(tmp_path)
    )
    run(which("cat"), str(target))
    assert [r["comm"] for r in opens(hit.records(), target)] == ["cat"]
    assert opens(miss.records(settle=0), target) == []


def test_seeded_process_matches_its_binary(engine: Engine, place: Any, target: Path) -> None:
    """A process the kernel has no entry for matches no matchBinaries filter; once
    seeded from /proc/<pid>/exe it does."""
    py = os.path.realpath(sys.executable)  # the binary itself: /proc/<pid>/exe is resolved
    hook = place(
        f"    - matchBinaries: [{{operator: In, values: ['{py}']}}]\n{in_dir(target.parent)}"
    )
    code = (
        "import sys\nprint(flush=True)\n"
        "for line in sys.stdin:\n    open(line.strip()).close()\n    print(flush=True)\n"
    )
    proc = subprocess.Popen(
        [py, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdout.readline()  # past its exec (Popen returns a little before the tracepoint)
        table = engine.probes.bpf[b"proc_sel"]
        del table[table.Key(proc.pid)]  # as if it had exec'd before the sensor
        proc.stdin.write(f"{target}\n")
        proc.stdin.flush()
        proc.stdout.readline()
        assert opens(hook.records(), target) == []
        assert engine.probes.seed_selectors() >= 1
        proc.stdin.write(f"{target}\n")
        proc.stdin.flush()
        proc.stdout.readline()
        got = opens(hook.records(), target)
        assert [r["pid"] for r in got] == [proc.pid]
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_five_selectors_per_hook(place: Any, target: Path, tmp_path: Path) -> None:
    """A hook takes HOOK_SLOTS (>= 5) selectors; the fifth one matches on its own."""
    assert HOOK_SLOTS >= 5
    never = "    - matchArgs: [{index: 6, operator: Equal, values: ['/nonexistent/x']}]\n"
    hook = place(
        never * (HOOK_SLOTS - 1)
        + f"    - matchBinaries: [{{operator: In, values: ['{which('cat')}']}}]\n"
        + in_dir(tmp_path)
    )
    run(which("cat"), str(target))
    run(which("head"), str(target))
    got = opens(hook.records(), target)
    assert [(r["comm"], r["selector"]) for r in got] == [("cat", HOOK_SLOTS - 1)]


@pytest.mark.parametrize(
    ("selector", "path", "message"),
    [
        pytest.param(
            "matchPIDs: [{operator: In, values: [1,2,3,4,5,6,7,8,9]}]",
            "matchPIDs[0].values",
            "at most 8",
            id="pids",
        ),
        pytest.param(
            "matchNamespaces: [{namespace: Net, operator: In, values: ['1','2','3','4','5']}]",
            "matchNamespaces[0].values",
            "at most 4",
            id="ns-values",
        ),
        pytest.param(
            "matchBinaries: [{operator: In, values: ['/" + "a" * 254 + "']}]",
            "matchBinaries[0].values[0]",
            "at most 254",
            id="binary-length",
        ),
    ],
)
def test_compile_process_selector_limits(selector: str, path: str, message: str) -> None:
    """Kernel limits of process selectors are errors naming the path, never truncation."""
    ensure_mounted("tracefs", TRACEFS)
    p = policy(OPENAT + f"    - {selector}\n")
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    with pytest.raises(PolicyError, match=message) as e:
        compile_selectors("p", planned, p.spec.tracepoints[0])
    assert f"spec.tracepoints[0].selectors[0].{path}" in str(e.value)


def test_binary_sets_leave_the_maps_with_their_hooks(engine: Engine, place: Any) -> None:
    """Two hooks naming the same value set share one bin_match entry; it goes with the
    last of them, and the epoch moved when the set got its bit."""
    state = engine.probes.bpf[b"bin_state"]
    trie = engine.probes.bpf[b"bin_match"]
    before = int(state[state.Key(0)].epoch)
    selector = "    - matchBinaries: [{operator: In, values: ['/opt/ocellus-test/x']}]\n"
    first, second = place(selector), place(selector)
    assert int(state[state.Key(0)].epoch) == before + 1

    def entries() -> list[bytes]:
        return [ct.string_at(ct.addressof(k) + 5, k.prefixlen // 8 - 1) for k in trie]

    assert entries().count(b"/opt/ocellus-test/x\0") == 1
    first.close()
    assert entries().count(b"/opt/ocellus-test/x\0") == 1
    second.close()
    assert b"/opt/ocellus-test/x\0" not in entries()
