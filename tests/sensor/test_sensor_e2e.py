"""The sensor against the real kernel and a real nats-server: what a process
does comes out on ocellus.raw.<node>.<type>, exactly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid

import pytest

from schemas.raw import RawBatch, RawExec, RawExit, RecordFlag

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("sensor")]


# A shell that carries the tag in its argv, then becomes sleep (same pid).
SLEEPER = ["/bin/sh", "-c", "exec /bin/sleep 30"]


def marker() -> str:
    return f"ocellus-test-{uuid.uuid4().hex[:12]}"


def has_arg(arg: str):
    return lambda r: arg in r.get("argv", ())


async def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, list(argv), check=False, **kwargs)


async def test_exec_reports_pid_ppid_uid_binary_and_exact_argv(raw) -> None:
    """An exec's record carries its pid, parent, uid, binary and argv byte for byte."""
    tag = marker()
    argv = ["/bin/sh", "-c", "exit 0", tag, "with spaces", "", "ünïcødé", "--flag=1"]
    proc = await asyncio.to_thread(subprocess.Popen, argv, user=65534, group=65534)
    await asyncio.to_thread(proc.wait)
    [rec] = await raw.wait_for("process_exec", has_arg(tag))
    exec_ = RawExec.model_validate(rec)
    assert exec_.pid == proc.pid
    assert exec_.tid == proc.pid
    assert exec_.ppid == os.getpid()
    assert (exec_.uid, exec_.gid) == (65534, 65534)
    assert exec_.binary == "/bin/sh"
    assert exec_.argv == argv
    assert exec_.flags == 0
    assert exec_.cgroup_id > 0


@pytest.mark.parametrize(
    ("argv_tail", "kept_prefix"),
    [
        pytest.param(["x" * 3000], ["x" * 1024], id="one-argument-over-the-per-argument-limit"),
        pytest.param([f"{i:04d}" + "y" * 995 for i in range(10)], None, id="argv-over-the-total"),
        # argc_max (128) counts argv[0] and the tag too.
        pytest.param([str(i) for i in range(200)], [str(i) for i in range(126)], id="too-many"),
    ],
)
async def test_exec_marks_overlong_argv_truncated(raw, argv_tail, kept_prefix) -> None:
    """argv past a limit is cut and flagged, never silently shortened."""
    tag = marker()
    argv = ["/bin/true", tag, *argv_tail]
    await run(*argv)
    [rec] = await raw.wait_for("process_exec", has_arg(tag))
    assert rec["flags"] & RecordFlag.ARGS_TRUNCATED
    assert rec["argv"][:2] == argv[:2]
    kept = rec["argv"][2:]
    assert len("\0".join(rec["argv"])) <= 4096
    if kept_prefix is not None:
        assert kept[: len(kept_prefix)] == kept_prefix
    for got, sent in zip(kept, argv_tail, strict=False):
        assert sent.startswith(got)


async def test_exec_at_the_limit_is_not_marked_truncated(raw) -> None:
    """An argument of exactly the per-argument limit (1024 bytes) is whole, not flagged."""
    tag = marker()
    await run("/bin/true", tag, "z" * 1024)
    [rec] = await raw.wait_for("process_exec", has_arg(tag))
    assert rec["argv"][2] == "z" * 1024
    assert not rec["flags"] & RecordFlag.ARGS_TRUNCATED


async def test_exec_argv_in_pages_the_child_never_touched(raw, tmp_path) -> None:
    """argv in read-only data of a freshly forked child (pages not yet faulted in)
    is still captured: it is read from the new program's stack at exec."""
    tag = marker()
    src = tmp_path / "spawn.c"
    src.write_text(
        "#include <unistd.h>\n#include <sys/wait.h>\n"
        "int main(void) { pid_t p = fork(); if (p == 0) {"
        f' execl("/bin/true", "/bin/true", "{tag}", "literal arg", (char *)0); _exit(9); }}'
        " int st; waitpid(p, &st, 0); return 0; }\n"
    )
    exe = tmp_path / "spawn"
    assert (await run("cc", "-O2", "-o", str(exe), str(src))).returncode == 0
    await run(str(exe))
    [rec] = await raw.wait_for("process_exec", has_arg(tag))
    assert rec["argv"] == ["/bin/true", tag, "literal arg"]
    assert rec["flags"] == 0


async def test_exit_reports_exit_code(raw) -> None:
    """A process's exit record has its exit_group status."""
    tag = marker()
    done = await run("/bin/sh", "-c", "exit 7", tag)
    assert done.returncode == 7
    [exec_] = await raw.wait_for("process_exec", has_arg(tag))
    [rec] = await raw.wait_for("process_exit", lambda r: r["pid"] == exec_["pid"])
    exit_ = RawExit.model_validate(rec)
    assert (exit_.exit_code, exit_.signal) == (7, 0)
    assert exit_.ppid == os.getpid()
    assert not exit_.has(RecordFlag.NO_STATUS)


async def test_exit_reports_the_killing_signal(raw) -> None:
    """A process killed by SIGKILL reports signal 9."""
    tag = marker()
    proc = await asyncio.to_thread(subprocess.Popen, [*SLEEPER, tag])
    [exec_] = await raw.wait_for("process_exec", has_arg(tag))
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait)
    [rec] = await raw.wait_for("process_exit", lambda r: r["pid"] == exec_["pid"])
    assert rec["signal"] == signal.SIGKILL


async def test_exit_reports_default_fatal_signal_but_not_a_handled_one(raw) -> None:
    """SIGTERM with no handler is the cause of death; a handled SIGTERM is not."""
    tag = marker()
    handled = "trap 'exit 3' TERM; kill -TERM $$; sleep 5 & wait"
    await run("/bin/sh", "-c", handled, tag)
    unhandled = await asyncio.to_thread(subprocess.Popen, [*SLEEPER, tag + "-u"])
    [exec_u] = await raw.wait_for("process_exec", has_arg(tag + "-u"))
    unhandled.send_signal(signal.SIGTERM)
    await asyncio.to_thread(unhandled.wait)
    [exec_h] = await raw.wait_for("process_exec", has_arg(tag))
    [exit_h] = await raw.wait_for("process_exit", lambda r: r["pid"] == exec_h["pid"])
    [exit_u] = await raw.wait_for("process_exit", lambda r: r["pid"] == exec_u["pid"])
    assert (exit_h["exit_code"], exit_h["signal"]) == (3, 0)
    assert exit_u["signal"] == signal.SIGTERM


async def test_threads_yield_one_exit(raw) -> None:
    """A process with 8 live threads exits once, not once per thread, with its status."""
    tag = marker()
    code = (
        "import os, threading, time\n"
        "ts = [threading.Thread(target=time.sleep, args=(30,), daemon=True) for _ in range(8)]\n"
        "[t.start() for t in ts]\n"
        "assert threading.active_count() == 9\n"
        "os._exit(4)\n"
    )
    done = await run("/usr/bin/python3", "-c", code, tag)
    assert done.returncode == 4
    [exec_] = await raw.wait_for("process_exec", has_arg(tag))
    exits = await raw.wait_for(
        "process_exit", lambda r: r["pid"] == exec_["pid"], count=2, timeout=1.0
    )
    assert len(exits) == 1
    assert exits[0]["exit_code"] == 4
    clones = raw.of("process_clone", lambda r: r["ppid"] == exec_["pid"])
    assert clones == []  # threads are not processes


async def test_clone_reports_parent_and_child(raw) -> None:
    """A fork yields a clone record naming the parent and the child."""
    tag = marker()
    await run("/bin/sh", "-c", "/bin/true; exit 0", tag)
    [sh] = await raw.wait_for("process_exec", has_arg(tag))
    [child] = await raw.wait_for("process_exec", lambda r: r["ppid"] == sh["pid"])
    [clone] = await raw.wait_for("process_clone", lambda r: r["pid"] == child["pid"])
    assert clone["ppid"] == sh["pid"]
    assert clone["clone_flags"] & 0x00010000 == 0  # not CLONE_THREAD


async def test_burst_of_1000_execs_loses_nothing(raw) -> None:
    """1,000 execs in a tight loop give 1,000 exec and 1,000 exit records."""
    tag = marker()
    script = f"i=0; while [ $i -lt 1000 ]; do /bin/true {tag} $i; i=$((i+1)); done"
    await run("/bin/sh", "-c", script)
    execs = await raw.wait_for("process_exec", has_arg(tag), count=1000, timeout=20)
    assert len(execs) == 1000
    assert sorted(int(r["argv"][2]) for r in execs) == list(range(1000))
    pids = {r["pid"] for r in execs}
    exits = await raw.wait_for("process_exit", lambda r: r["pid"] in pids, count=1000, timeout=20)
    assert len(exits) == 1000
    assert all(r["exit_code"] == 0 and r["signal"] == 0 for r in exits)


async def test_batches_are_valid_raw_batches(raw) -> None:
    """Every message the sensor publishes validates as a RawBatch with valid records."""
    tag = marker()
    await run("/bin/true", tag)
    await raw.wait_for("process_exec", has_arg(tag))
    assert raw.batches
    for batch in raw.batches:
        assert batch["node"] == "test.node"
        RawBatch.model_validate(batch).parsed()


async def test_cgroup_mkdir_and_rmdir_are_reported(raw, tmp_path) -> None:
    """A cgroup v2 directory made and removed yields records with its id (inode) and path."""
    from services.common.hostfs import cgroup2_root

    name = marker()
    path = cgroup2_root() / name
    path.mkdir()
    inode = path.stat().st_ino
    path.rmdir()
    [made] = await raw.wait_for("cgroup_mkdir", lambda r: r["path"] == f"/{name}")
    [gone] = await raw.wait_for("cgroup_rmdir", lambda r: r["path"] == f"/{name}")
    assert made["id"] == gone["id"] == inode
    assert made["level"] == 1
    assert made["pid"] == os.getpid()
