"""What /proc tells about a live process: used to seed the process cache at
start (processes older than Ocellus) and for the cwd of a new exec."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSnapshot:
    pid: int
    ppid: int
    start_ktime: int  # CLOCK_BOOTTIME ns, as the sensor's ktime
    uid: int
    binary: str
    argv: list[str]
    cwd: str | None  # None: could not be read
    nspid: int | None = None  # pid in its own pid namespace


def read_cwd(pid: int, proc: Path = Path("/proc")) -> str | None:
    try:
        return str((proc / str(pid) / "cwd").readlink())
    except OSError:
        return None


def read_nspid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The pid as the process's own (innermost) pid namespace sees it."""
    try:
        return _nspid_from((proc / str(pid) / "status").read_text())
    except OSError:
        return None


def _nspid_from(status: str) -> int | None:
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            try:
                return int(line.split()[-1])
            except ValueError:
                return None
    return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def snapshot(pid: int, proc: Path = Path("/proc")) -> ProcSnapshot | None:
    """None when the process is gone (or is a kernel thread: no argv, no exe)."""
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_bytes()
        cmdline = (base / "cmdline").read_bytes()
        status = (base / "status").read_text()
    except OSError:
        return None
    if not cmdline:
        return None  # kernel thread or zombie
    # comm (field 2) may hold spaces and parens: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    ppid, start_ticks = int(fields[1]), int(fields[19])
    # Real uid, as bpf_get_current_uid_gid() gives the sensor.
    uid = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Uid:")), 0)
    try:
        binary = str((base / "exe").readlink())
    except OSError:
        binary = ""
    argv = [_text(a) for a in cmdline.rstrip(b"\0").split(b"\0")]
    return ProcSnapshot(
        pid=pid,
        ppid=ppid,
        start_ktime=start_ticks * (1_000_000_000 // CLK_TCK),
        uid=uid,
        binary=binary or (argv[0] if argv else ""),
        argv=argv,
        cwd=read_cwd(pid, proc),
        nspid=_nspid_from(status),
    )


def all_processes(proc: Path = Path("/proc")) -> list[ProcSnapshot]:
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            snap = snapshot(int(entry.name), proc)
            if snap is not None:
                found.append(snap)
    return found


def cgroup_id(pid: int, cgroup_root: Path, proc: Path = Path("/proc")) -> int | None:
    """The process's cgroup v2 id (the inode of its directory), from /proc/<pid>/cgroup."""
    try:
        for line in (proc / str(pid) / "cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return (cgroup_root / line[3:].lstrip("/")).stat().st_ino
    except OSError:
        pass
    return None
