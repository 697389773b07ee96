"""The process cache: who is who, and who started whom.

Every process gets an entry when it is cloned, exec'd or found in /proc at
start. An entry holds its Tetragon ``Process`` as a ready JSON dict (built
once, reused in every event that names it as process, parent or ancestor)
and a reference to its parent's entry. Entries of exited processes stay
while live children refer to them (``refcnt``), so descendants' events keep
their ancestry; the last child's release frees them. A hard cap evicts the
least recently used entries, counted.
"""

from __future__ import annotations

import shlex
import signal
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from schemas.events import Process, exec_id, format_timestamp
from schemas.raw import RawClone, RawExec, RawExit, RawHook, RecordFlag
from services.enricher.context import ContainerContext
from services.enricher.procfs import ProcSnapshot

_FLAG_WORDS = (  # Tetragon's words, in Tetragon's order
    (RecordFlag.FILENAME_TRUNCATED, "truncFilename"),
    (RecordFlag.ARGS_TRUNCATED, "truncArgs"),
    (RecordFlag.ARGS_FAULT | RecordFlag.NO_ARGS, "errorArgs"),
)


@dataclass(slots=True, eq=False)
class Entry:
    pid: int
    ktime: int
    exec_id: str
    json: dict[str, Any]  # the Process, protobuf-JSON
    parent: Entry | None
    container: ContainerContext | None
    in_init_tree: bool | None = None  # None outside containers
    is_clone: bool = False
    exited: bool = False
    freed: bool = False
    refcnt: int = 0  # children entries not yet freed
    ancestors: list[dict[str, Any]] = field(default_factory=list)
    # The image this exec replaced (one level): a hook record from before the exec
    # (a forked shell opening a redirect, then exec'ing) reaches us after it.
    replaced: Entry | None = None


class Timestamps:
    """``format_timestamp``, with the date and time of recent seconds kept: a second's
    events share them, and the calendar arithmetic is most of the cost."""

    def __init__(self, keep: int = 64) -> None:
        self._keep = keep
        self._seconds: dict[int, str] = {}  # seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS"

    def __call__(self, ns: int) -> str:
        seconds, nanos = divmod(ns, 1_000_000_000)
        prefix = self._seconds.get(seconds)
        if prefix is None:
            if len(self._seconds) >= self._keep:
                self._seconds.clear()
            prefix = self._seconds[seconds] = format_timestamp(seconds * 1_000_000_000)[:-1]
        # The fraction as format_timestamp gives it: protojson's 0, 3, 6 or 9 digits.
        if nanos == 0:
            return prefix + "Z"
        if nanos % 1_000_000 == 0:
            return f"{prefix}.{nanos // 1_000_000:03d}Z"
        if nanos % 1_000 == 0:
            return f"{prefix}.{nanos // 1_000:06d}Z"
        return f"{prefix}.{nanos:09d}Z"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def quote_arguments(argv_tail: list[str]) -> str:
    """argv[1:] as one string; arguments with spaces or quotes are shell-quoted so
    the string splits back the same way (`sh -c 'a b'`)."""
    return " ".join(shlex.quote(a) for a in argv_tail)


class ProcessCache:
    def __init__(self, node: str, *, max_entries: int, ancestors_depth: int) -> None:
        self.node = node
        self.max_entries = max_entries
        self.ancestors_depth = ancestors_depth
        self._live: dict[int, Entry] = {}  # pid -> its current entry
        self._retained: OrderedDict[int, Entry] = OrderedDict()  # id(entry) -> entry, LRU order
        self.counters: Counter[str] = Counter()
        self._timestamp = Timestamps()

    def __len__(self) -> int:
        return len(self._retained)

    def live(self, pid: int) -> Entry | None:
        return self._live.get(pid)

    def parent_of(self, pid: int, ppid: int) -> Entry | None:
        """The parent's live entry, or, when the parent has exited already (as a
        container runtime's does), the entry the process's clone recorded."""
        if not ppid:
            return None
        parent = self._live.get(ppid)
        if parent is None:
            known = self._live.get(pid)
            if known is not None and known.parent is not None and known.parent.pid == ppid:
                parent = known.parent
        return parent

    # -- building entries ---------------------------------------------------
    def _add(self, entry: Entry) -> Entry:
        if entry.parent is not None:
            entry.parent.refcnt += 1
            self._touch(entry.parent)
            entry.ancestors = self._ancestry(entry.parent)
        old = self._live.get(entry.pid)
        self._live[entry.pid] = entry
        if old is not None:
            old.replaced = None  # one level back is enough; older images may go
            entry.replaced = old
            self._finish(old)  # the image this exec replaced
        self._retained[id(entry)] = entry
        while len(self._retained) > self.max_entries:
            _, victim = self._retained.popitem(last=False)
            self.counters["evicted"] += 1
            self._free(victim, evicted=True)
        return entry

    def _ancestry(self, parent: Entry) -> list[dict[str, Any]]:
        """The parent's parent and up, to the configured depth."""
        if parent.parent is None or self.ancestors_depth == 0:
            return []
        return [parent.parent.json, *parent.ancestors][: self.ancestors_depth]

    def _process_json(
        self,
        *,
        pid: int,
        ktime: int,
        boot_ns: int,
        uid: int,
        binary: str,
        arguments: str,
        cwd: str | None,
        flags: list[str],
        parent: Entry | None,
        container: ContainerContext | None,
        in_init_tree: bool | None,
    ) -> tuple[str, dict[str, Any]]:
        eid = exec_id(self.node, ktime, pid)
        if cwd is None:
            flags = [*flags, "errorCWD"]
        pod = container.pod if container is not None else None
        process = Process(
            exec_id=eid,
            pid=pid,
            tid=pid,
            uid=uid,
            cwd=cwd or "",
            binary=binary,
            arguments=arguments,
            flags=" ".join(flags),
            start_time=boot_ns + ktime,
            parent_exec_id=parent.exec_id if parent is not None else "",
            docker=container.docker if container is not None else "",
            pod=pod,
            in_init_tree=in_init_tree,
        )
        return eid, process.to_json_dict()

    # -- what the kernel reports ----------------------------------------------
    def seed(
        self, snaps: list[ProcSnapshot], boot_ns: int, containers: dict[int, ContainerContext]
    ) -> int:
        """Processes alive at start, parents before children; flags say procFS."""
        by_pid = {s.pid: s for s in snaps}
        done: set[int] = set()

        def add(snap: ProcSnapshot) -> None:
            if snap.pid in done:
                return
            done.add(snap.pid)
            parent_snap = by_pid.get(snap.ppid)
            if parent_snap is not None:
                add(parent_snap)
            parent = self._live.get(snap.ppid)
            container = containers.get(snap.pid)
            init = in_init_tree(snap.pid, snap.nspid, parent, container)
            eid, js = self._process_json(
                pid=snap.pid,
                ktime=snap.start_ktime,
                boot_ns=boot_ns,
                uid=snap.uid,
                binary=snap.binary,
                arguments=quote_arguments(snap.argv[1:]),
                cwd=snap.cwd,
                flags=["procFS"],
                parent=parent,
                container=container,
                in_init_tree=init,
            )
            self._add(Entry(snap.pid, snap.start_ktime, eid, js, parent, container, init))

        for snap in sorted(snaps, key=lambda s: s.pid):
            add(snap)
        return len(done)

    def clone(self, rec: RawClone, boot_ns: int) -> None:
        """A new process: until it execs, it runs its parent's binary."""
        parent = self._live.get(rec.ppid)
        src = parent.json if parent is not None else {}
        container = parent.container if parent is not None else None
        init = parent.in_init_tree if parent is not None else None
        eid, js = self._process_json(
            pid=rec.pid,
            ktime=rec.ktime,
            boot_ns=boot_ns,
            uid=rec.uid,
            binary=src.get("binary", rec.comm),
            arguments=src.get("arguments", ""),
            cwd=src.get("cwd"),
            flags=["clone"],
            parent=parent,
            container=container,
            in_init_tree=init,
        )
        self._add(Entry(rec.pid, rec.ktime, eid, js, parent, container, init, is_clone=True))
        self.counters["clones"] += 1

    def exec(
        self,
        rec: RawExec,
        boot_ns: int,
        cwd: str | None,
        container: ContainerContext | None,
        nspid: int | None = None,
    ) -> dict[str, Any]:
        """The process_exec event (protobuf-JSON) for an exec; ``nspid`` is its pid
        in its own pid namespace, when known."""
        previous = self._live.get(rec.pid)
        parent = self.parent_of(rec.pid, rec.ppid)
        flags = ["execve"]
        if previous is not None and previous.is_clone:
            flags.append("clone")
        flags += [word for bit, word in _FLAG_WORDS if rec.flags & bit]
        init = in_init_tree(rec.pid, nspid, parent, container)
        eid, js = self._process_json(
            pid=rec.pid,
            ktime=rec.ktime,
            boot_ns=boot_ns,
            uid=rec.uid,
            binary=rec.binary,
            arguments=quote_arguments(rec.argv[1:]),
            cwd=cwd,
            flags=flags,
            parent=parent,
            container=container,
            in_init_tree=init,
        )
        entry = self._add(Entry(rec.pid, rec.ktime, eid, js, parent, container, init))
        self.counters["execs"] += 1
        if parent is None:
            self.counters["exec_parent_unknown"] += 1
        body: dict[str, Any] = {"process": js}
        if parent is not None:
            body["parent"] = parent.json
        if entry.ancestors:
            body["ancestors"] = entry.ancestors
        return self._event("process_exec", body, boot_ns + rec.ktime)

    def exit(self, rec: RawExit, boot_ns: int) -> dict[str, Any] | None:
        """The process_exit event, or None when the process is unknown (yet)."""
        entry = self._live.get(rec.pid)
        if entry is None:
            return None
        self._touch(entry)
        event = self._exit_event(rec, boot_ns, entry.json, entry.parent, entry.ancestors)
        del self._live[rec.pid]
        self._finish(entry)
        self.counters["exits"] += 1
        return event

    def image_at(self, pid: int, ktime: int) -> Entry | None:
        """The entry of what ``pid`` ran at ``ktime``: its live image, or the one its last
        exec replaced when ``ktime`` is older than that exec. None when neither fits."""
        entry = self._live.get(pid)
        if entry is None:
            return None
        if entry.ktime <= ktime:
            return entry
        previous = entry.replaced
        return previous if previous is not None and previous.ktime <= ktime else None

    def hook_body(
        self, rec: RawHook, entry: Entry | None, container: ContainerContext | None
    ) -> dict[str, Any]:
        """process / parent / ancestors of a hook event (``entry``: ``image_at`` the
        record's time), as exec and exit events carry them, with the thread's own tid as
        Tetragon reports it for kprobes and tracepoints; a minimal process flagged "miss"
        (in ``container``) when the cache has none."""
        if entry is None:
            self.counters["hook_process_unknown"] += 1
            process = self._minimal(rec, container)
            return {"process": process}
        self._touch(entry)
        process = entry.json if rec.tid == entry.pid else {**entry.json, "tid": rec.tid}
        body: dict[str, Any] = {"process": process}
        if entry.parent is not None:
            body["parent"] = entry.parent.json
        if entry.ancestors:
            body["ancestors"] = entry.ancestors
        return body

    @staticmethod
    def _minimal(rec: RawHook | RawExit, container: ContainerContext | None) -> dict[str, Any]:
        """What a record itself says of a process the cache does not know."""
        process: dict[str, Any] = {
            "pid": rec.pid,
            "tid": rec.tid,
            "uid": rec.uid,
            "binary": rec.comm,
            "flags": "miss",
        }
        if container is not None:
            process["docker"] = container.docker
            if container.pod is not None:
                process["pod"] = container.pod.to_json_dict()
        return process

    def event(self, kind: str, body: dict[str, Any], when: int) -> dict[str, Any]:
        return self._event(kind, body, when)

    def exit_unknown(self, rec: RawExit, boot_ns: int) -> dict[str, Any]:
        """An exit whose exec never came: what the record itself says."""
        process = self._minimal(rec, None)
        self.counters["exit_unknown"] += 1
        return self._exit_event(rec, boot_ns, process, self._live.get(rec.ppid), [])

    def _exit_event(
        self,
        rec: RawExit,
        boot_ns: int,
        process: dict[str, Any],
        parent: Entry | None,
        ancestors: list[dict[str, Any]],
    ) -> dict[str, Any]:
        when = boot_ns + rec.ktime
        body: dict[str, Any] = {"process": process}
        if parent is not None:
            body["parent"] = parent.json
        if rec.signal:
            body["signal"] = signal_name(rec.signal)
        elif rec.exit_code:
            body["status"] = rec.exit_code
        body["time"] = self._timestamp(when)
        if ancestors:
            body["ancestors"] = ancestors
        return self._event("process_exit", body, when)

    def _event(self, kind: str, body: dict[str, Any], when: int) -> dict[str, Any]:
        return {kind: body, "node_name": self.node, "time": self._timestamp(when)}

    # -- lifetimes --------------------------------------------------------------
    def _touch(self, entry: Entry) -> None:
        if not entry.freed:
            self._retained.move_to_end(id(entry))

    def _finish(self, entry: Entry) -> None:
        """The process (or image) is gone; keep it while children refer to it."""
        entry.exited = True
        if entry.refcnt == 0:
            self._free(entry)

    def _free(self, entry: Entry, *, evicted: bool = False) -> None:
        while entry is not None and not entry.freed:
            entry.freed = True
            self._retained.pop(id(entry), None)
            if evicted and self._live.get(entry.pid) is entry:
                del self._live[entry.pid]
            parent = entry.parent
            if parent is None:
                return
            parent.refcnt -= 1
            if not (parent.exited and parent.refcnt == 0):
                return
            entry, evicted = parent, False


def in_init_tree(
    pid: int, nspid: int | None, parent: Entry | None, container: ContainerContext | None
) -> bool | None:
    """In the container's own process tree, not a `docker exec` entry: the
    container's init (pid 1 in its namespace, or the runtime's init pid), or a
    descendant of it inside the container. None outside containers."""
    if container is None:
        return None
    if nspid == 1 or (container.init_pid is not None and pid == container.init_pid):
        return True
    if parent is not None and parent.container is not None and parent.container.id == container.id:
        return bool(parent.in_init_tree)
    return False
