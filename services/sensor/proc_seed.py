"""proc_sel entries (bpf/lib/proc_select.h) for processes older than the sensor.

The kernel fills an entry at exec and copies it at clone; a process that
exec'd before the programs were attached has none, and matches no
matchBinaries filter. At load the sensor writes one for every process alive:

- its executable is /proc/<pid>/exe, i.e. the resolved path (symlinks
  followed), where an exec seen live is matched by the path it was exec'd
  by (execve's filename). On a merged-/usr system both are /usr/bin/... for a
  command found through PATH; a policy naming /bin/cat matches the live
  exec of /bin/cat but not a seeded one.
- its ancestors (followForks) and their pids in their own pid namespaces come
  from PPid and NSpid in /proc/<pid>/status.
- its inherited followChildren bits are empty: which of its ancestors' execs
  matched a binary set cannot be told afterwards (as Tetragon: children
  created before the policy are not followed).
- its epoch is one the kernel is not at, so the first hook event computes its
  bits under the value sets then current.
"""

from __future__ import annotations

import ctypes as ct
import os
from pathlib import Path
from typing import Any

from services.sensor.proc_records import BIN_KEY_DATA, PROC_ANCESTORS

_BPF_NOEXIST = 1
_DELETED = b" (deleted)"


def _status(proc_dir: Path) -> tuple[int, int] | None:
    """(ppid, tgid in its own pid namespace) from /proc/<pid>/status."""
    try:
        text = (proc_dir / "status").read_text()
    except OSError:
        return None  # exited meanwhile
    ppid = nspid = 0
    for line in text.splitlines():
        if line.startswith("PPid:"):
            ppid = int(line.split()[1])
        elif line.startswith("NSpid:"):
            nspid = int(line.split()[-1])
    return ppid, nspid


def _data(key: Any) -> int:
    """The address of a bin key's data (ctypes gives a char array's value as bytes)."""
    return ct.addressof(key) + type(key).data.offset


def _fill_keys(leaf: Any, exe: bytes) -> None:
    fwd = exe[:BIN_KEY_DATA]
    if len(exe) < BIN_KEY_DATA:
        fwd += b"\0"  # as the kernel does: In entries end with the NUL
    leaf.fwd.prefixlen = 8 * (1 + len(fwd))
    leaf.fwd.dir = 0
    ct.memmove(_data(leaf.fwd), fwd, len(fwd))
    rev = exe[::-1][:BIN_KEY_DATA]
    leaf.rev.prefixlen = 8 * (1 + len(rev))
    leaf.rev.dir = 1
    ct.memmove(_data(leaf.rev), rev, len(rev))


def seed_proc_sel(table: Any, state: Any, proc: Path = Path("/proc")) -> int:
    """Write an entry for every process of ``proc`` that has none; how many were written.
    ``table``/``state``: BCC's proc_sel and bin_state tables."""
    from bcc import libbcc  # only the sensor has BCC

    epoch = int(state[state.Key(0)].epoch)
    status: dict[int, tuple[int, int]] = {}
    exes: dict[int, bytes] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        st = _status(entry)
        if st is None:
            continue
        pid = int(entry.name)
        status[pid] = st
        try:
            # bytes: a path need not be UTF-8
            exe = os.readlink(bytes(entry / "exe"))  # noqa: PTH115 - Path.readlink gives str
        except OSError:
            continue  # a kernel thread, or gone
        exes[pid] = exe.removesuffix(_DELETED)
    seeded = 0
    for pid, exe in exes.items():
        leaf = table.Leaf()
        leaf.epoch = epoch ^ 0x8000_0000  # not the kernel's: computed at the first event
        leaf.nstgid = status[pid][1]
        parent, i = status[pid][0], 0
        while parent and i < PROC_ANCESTORS:
            leaf.anc_pids[i] = parent
            leaf.anc_nspids[i] = status.get(parent, (0, 0))[1]
            parent = status.get(parent, (0, 0))[0]
            i += 1
        _fill_keys(leaf, exe)
        key = table.Key(pid)
        if (
            libbcc.lib.bpf_update_elem(table.map_fd, ct.byref(key), ct.byref(leaf), _BPF_NOEXIST)
            == 0
        ):
            seeded += 1
            if not (proc / str(pid)).exists():
                table.__delitem__(key)  # it exited while being seeded: no exit will remove it
    return seeded
