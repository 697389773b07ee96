"""Raw records: what the sensor publishes on ``ocellus.raw.<node>.<type>``.

The sensor builds these as plain dicts (no pydantic on its hot path); the
models here validate them where they are trusted: in the enricher and in
tests. Flag bits and ops mirror ``bpf/lib/events.h`` (checked by
tests/sensor/test_layout.py).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from schemas import subjects

U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
Text = Annotated[str, Field(max_length=8192)]


class Op(enum.IntEnum):
    """enum ocellus_op: wire values, never renumbered."""

    EXEC = 1
    EXIT = 2
    CLONE = 3
    CGROUP_MKDIR = 4
    CGROUP_RMDIR = 5
    HOOK = 6


class RecordFlag(enum.IntFlag):
    """OCELLUS_F_*: why a field is missing or cut short."""

    ARGS_TRUNCATED = 1 << 0
    FILENAME_TRUNCATED = 1 << 1
    NO_ARGS = 1 << 2
    NO_PARENT = 1 << 3
    NO_STATUS = 1 << 4
    ARGS_FAULT = 1 << 5


class KernelStat(enum.IntEnum):
    """enum ocellus_stat: indexes of the BPF per-CPU counter map."""

    RINGBUF_FULL = 0
    RECORDS = 1
    THREADS = 2
    EXEC_NO_ARGS = 3
    RETURN_LOST = 4  # return: true records not kept for sys_exit_* (map full)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ktime: U64  # CLOCK_BOOTTIME nanoseconds
    pid: U32
    tid: U32
    ppid: U32  # 0 when unknown (flags has NO_PARENT)
    uid: U32
    gid: U32
    cgroup_id: U64
    comm: Annotated[str, Field(max_length=64)]
    flags: Annotated[int, Field(ge=0, le=0xFFFF)]

    def has(self, flag: RecordFlag) -> bool:
        return bool(self.flags & flag)


class RawExec(_Record):
    binary: Text
    argv: Annotated[list[Text], Field(max_length=4096)]  # argv[0] included


class RawExit(_Record):
    exit_code: U32
    signal: Annotated[int, Field(ge=0, le=64)]


class RawClone(_Record):
    parent_tid: U32
    clone_flags: U64


class RawCgroup(_Record):
    """A cgroup v2 directory made (cgroup_mkdir) or removed (cgroup_rmdir)."""

    id: U64  # the cgroup's id (its inode); the header's cgroup_id is the caller's
    level: U32
    path: Text  # relative to the cgroup2 root, e.g. "/docker/<id>"


class SockAddr(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    family: Annotated[str, Field(max_length=16)]  # "AF_INET", "AF_INET6", "AF_UNIX", or the number
    addr: Text
    port: Annotated[int, Field(ge=0, le=65535)]


HookArg = int | Text | SockAddr | None  # None: the arg could not be read (flags: ARGS_FAULT)


class RawHook(_Record):
    """A policy hook matched (sensor's generic hook engine). ``hook_id`` is the
    sensor's id of the hook; ``args`` are the hook's declared args, in order.
    ppid is 0 (with NO_PARENT unset): the enricher knows the parent."""

    hook_id: U32
    slot: Annotated[int, Field(ge=0, le=255)]
    selector: Annotated[int, Field(ge=0, le=255)]
    # 1 Post, 2 NoPost, 3 Sigkill, 4 Signal, 5 Override (a connect denied)
    action: Annotated[int, Field(ge=1, le=5)]
    args: Annotated[list[HookArg], Field(max_length=6)]
    # return: true hooks (a syscall kprobe paired with sys_exit_*): the syscall's return
    # value, signed (or unsigned, as the returnArg's type says); absent otherwise. The
    # record is posted at the return, with the args read at the call.
    ret: Annotated[int, Field(ge=-(2**63), le=2**64 - 1)] | None = None


RECORD_TYPES: dict[str, type[_Record]] = {
    subjects.PROCESS_EXEC: RawExec,
    subjects.PROCESS_EXIT: RawExit,
    subjects.PROCESS_CLONE: RawClone,
    subjects.CGROUP_MKDIR: RawCgroup,
    subjects.CGROUP_RMDIR: RawCgroup,
    subjects.PROCESS_HOOK: RawHook,
}

RawRecord = RawExec | RawExit | RawClone | RawCgroup | RawHook


class _BatchFields(BaseModel):
    """What every NATS message of raw records carries besides them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    node: Annotated[str, Field(min_length=1, max_length=253)]
    # Wall-clock nanoseconds at boot, when the batch was sent: ktime + boot_ns
    # is the event's wall time.
    boot_ns: U64


class RawBatch(_BatchFields):
    """One NATS message: records of one type from one node."""

    type: Literal[
        "process_exec",
        "process_exit",
        "process_clone",
        "cgroup_mkdir",
        "cgroup_rmdir",
        "process_hook",
    ]
    records: list[dict[str, Any]]

    @model_validator(mode="after")
    def _records_known(self) -> RawBatch:
        if not self.records:
            raise ValueError("a batch has at least one record")
        return self

    def parsed(self) -> list[RawRecord]:
        """Validate every record; raises pydantic.ValidationError on the first bad one."""
        model = RECORD_TYPES[self.type]
        return [model.model_validate(r) for r in self.records]  # type: ignore[misc]


class RawHookEnvelope(_BatchFields):
    """A process_hook batch with its records left for ``RAW_HOOKS``: the enricher's fast
    path for its busiest input validates the records a chunk per pydantic-core call,
    not one call each (RawBatch's dict[str, Any] would copy every record first)."""

    type: Literal["process_hook"]
    records: Annotated[list[Any], Field(min_length=1)]


RAW_HOOKS: TypeAdapter[list[RawHook]] = TypeAdapter(list[RawHook])
