"""Tetragon-shaped events built from raw sensor records, for `ocellus events`
while it reads the raw subjects. A small pid → exec cache gives exits their
binary; parents carry only their pid here (the enricher owns the process tree)."""

from __future__ import annotations

import signal
from collections import OrderedDict
from typing import Any

from schemas import subjects
from schemas.events import GetEventsResponse, Process, ProcessExec, ProcessExit, exec_id
from schemas.raw import RecordFlag
from services.cli.render import join_arguments

_FLAG_WORDS = (
    (RecordFlag.FILENAME_TRUNCATED, "truncFilename"),
    (RecordFlag.ARGS_TRUNCATED, "truncArgs"),
    (RecordFlag.ARGS_FAULT, "errorArgs"),
    (RecordFlag.NO_ARGS, "errorArgs"),
)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _flags(record: dict[str, Any], first: str) -> str:
    words = [first]
    for bit, word in _FLAG_WORDS:
        if record["flags"] & bit and word not in words:
            words.append(word)
    return " ".join(words)


class RawView:
    def __init__(self, cache_max: int = 16384) -> None:
        self._execs: OrderedDict[int, Process] = OrderedDict()
        self._cache_max = cache_max

    def events(self, batch: dict[str, Any]) -> list[GetEventsResponse]:
        node, boot_ns = batch["node"], batch["boot_ns"]
        out = []
        for record in batch["records"]:
            event = self._event(batch["type"], record, node, boot_ns)
            if event is not None:
                out.append(event)
        return out

    def _event(
        self, event_type: str, r: dict[str, Any], node: str, boot_ns: int
    ) -> GetEventsResponse | None:
        when = boot_ns + r["ktime"]
        parent = Process(pid=r["ppid"]) if r["ppid"] else None
        if event_type == subjects.PROCESS_EXEC:
            process = Process(
                exec_id=exec_id(node, r["ktime"], r["pid"]),
                pid=r["pid"],
                tid=r["tid"],
                uid=r["uid"],
                binary=r["binary"],
                arguments=join_arguments(r["argv"][1:]),
                flags=_flags(r, "execve"),
                start_time=when,
            )
            self._remember(r["pid"], process)
            return GetEventsResponse(
                process_exec=ProcessExec(process=process, parent=parent),
                node_name=node,
                time=when,
            )
        if event_type == subjects.PROCESS_EXIT:
            known = self._execs.pop(r["pid"], None)
            process = known or Process(pid=r["pid"], binary=r["comm"])
            return GetEventsResponse(
                process_exit=ProcessExit(
                    process=process,
                    parent=parent,
                    signal=signal_name(r["signal"]) if r["signal"] else "",
                    status=0 if r["signal"] else r["exit_code"],
                    time=when,
                ),
                node_name=node,
                time=when,
            )
        return None  # clones have no Tetragon event of their own

    def _remember(self, pid: int, process: Process) -> None:
        self._execs[pid] = process
        self._execs.move_to_end(pid)
        while len(self._execs) > self._cache_max:
            self._execs.popitem(last=False)
