"""The hook registry: what a node's hook ids mean.

The sensor's records carry only a hook id (``RawHook.hook_id``). The enforcer
allocates the ids and, before it writes a hook into the kernel's maps, puts
the node's whole registry in the NATS KV bucket ``ocellus_hooks`` under the
node's subject token, so that the enricher can turn a record into a
Tetragon ``process_kprobe`` / ``process_tracepoint`` event.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import codec

Name = Annotated[str, Field(min_length=1, max_length=253)]


class HookArgInfo(BaseModel):
    """One declared arg, in record order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int  # as the policy wrote it
    type: str  # the policy's type ("string", "int", "sockaddr", ...; "auto" resolved)
    label: str | None = None


class HookInfo(BaseModel):
    """One hook of one policy, as placed on one tracepoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Name
    hook: str = ""  # where the policy declares it: "spec.kprobes[0]"
    kind: Literal["process_kprobe", "process_tracepoint"]
    subsys: str  # the tracepoint that serves it ("syscalls")
    event: str  # ("sys_enter_openat")
    function_name: str | None = None  # kprobes: as Tetragon names it (__x64_sys_openat)
    args: list[HookArgInfo] = []
    # return: true: the record's `ret`, typed as the policy's returnArg.
    return_arg: HookArgInfo | None = None
    message: str | None = None
    tags: list[str] = []
    mode: Literal["enforce", "monitor"] = "enforce"
    # Monitor mode: selector index -> what enforce mode would do ("SIGKILL",
    # "SIGNAL 10"); the kernel only posts, and the event says so.
    monitored: dict[int, str] = {}


class HookRegistry(BaseModel):
    """A node's hooks by id (packed with string keys, as the codec wants)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    node: Name
    hooks: dict[int, HookInfo] = {}

    def pack(self) -> bytes:
        return codec.pack(self.model_dump(mode="json"))

    @classmethod
    def unpack(cls, data: bytes) -> HookRegistry:
        """Raises codec.DecodeError or pydantic.ValidationError on bad input."""
        return cls.model_validate(codec.unpack(data))
