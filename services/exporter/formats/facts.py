"""The facts of a Tetragon event that the SIEM formats render, as plain values.

``common.extract`` fills these from an event mapping; the formats only read them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import posixpath
import shlex
from dataclasses import dataclass
from functools import cache

VENDOR = "Ocellus"
PRODUCT = "Ocellus"

# Event kinds produced by a TracingPolicy hook: they carry policy_name and action.
POLICY_KINDS = frozenset({"process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm"})
# Tetragon KprobeAction names whose effect goes beyond reporting.
ENFORCING_ACTIONS = frozenset(
    {"KPROBE_ACTION_SIGKILL", "KPROBE_ACTION_SIGNAL", "KPROBE_ACTION_OVERRIDE"}
)


class UnsupportedEvent(ValueError):
    """The mapping is not an event line a format can render (no event kind)."""


@cache
def product_version() -> str:
    """Ocellus's own version, for CEF/LEEF headers and OCSF metadata."""
    try:
        return importlib.metadata.version("ocellus")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def split_arguments(arguments: str) -> list[str]:
    """Tetragon's ``arguments`` string back into argv[1:]. The enricher shell-quotes
    arguments that hold spaces; an unbalanced quote falls back to plain splitting."""
    try:
        return shlex.split(arguments)
    except ValueError:
        return arguments.split()


@dataclass(frozen=True)
class ProcessFacts:
    """A tetragon.Process reduced to what formats use; absent fields are None/''."""

    pid: int | None = None
    tid: int | None = None
    uid: int | None = None
    auid: int | None = None
    user_name: str = ""
    binary: str = ""
    arguments: str = ""
    cwd: str = ""
    exec_id: str = ""
    parent_exec_id: str = ""
    start_time: str = ""  # RFC 3339, as in the event
    flags: str = ""
    container_id: str = ""  # runtime-prefixed ("containerd://<id>"), as in the event
    container_name: str = ""
    image_name: str = ""
    image_id: str = ""
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    workload: str = ""
    workload_kind: str = ""

    @property
    def name(self) -> str:
        return posixpath.basename(self.binary)

    @property
    def args(self) -> list[str]:
        """argv as ECS wants it: the executable first, then the arguments."""
        if not self.binary:
            return []
        return [self.binary, *split_arguments(self.arguments)]

    @property
    def command_line(self) -> str:
        return f"{self.binary} {self.arguments}" if self.arguments else self.binary

    @property
    def container_runtime_and_id(self) -> tuple[str, str]:
        """("containerd", "<id>") from "containerd://<id>"; ("", id) without a scheme."""
        runtime, sep, bare = self.container_id.partition("://")
        return (runtime, bare) if sep else ("", self.container_id)


@dataclass(frozen=True)
class SocketFacts:
    """A sock_arg: the connection a policy hook saw."""

    family: str = ""
    protocol: str = ""
    saddr: str = ""
    daddr: str = ""
    sport: int | None = None
    dport: int | None = None


@dataclass(frozen=True)
class EventFacts:
    """One event line's facts; policy fields are empty for process events."""

    kind: str  # "process_exec", "process_kprobe", ...
    time_ns: int | None
    time: str  # RFC 3339, as in the event ("" if absent)
    node: str
    cluster: str
    process: ProcessFacts
    parent: ProcessFacts | None
    exit_status: int | None = None  # process_exit only
    signal: str = ""  # process_exit only
    policy_name: str = ""
    action: str = ""  # Tetragon KprobeAction name, e.g. "KPROBE_ACTION_SIGKILL"
    hook: str = ""  # function_name (kprobe) or "subsys/event" (tracepoint)
    message: str = ""
    tags: tuple[str, ...] = ()
    file_path: str = ""
    socket: SocketFacts | None = None

    @property
    def is_policy_hit(self) -> bool:
        return self.kind in POLICY_KINDS

    @property
    def enforced(self) -> bool:
        return self.action in ENFORCING_ACTIONS

    @property
    def action_name(self) -> str:
        """ "SIGKILL" from "KPROBE_ACTION_SIGKILL": what a SIEM analyst reads."""
        return self.action.removeprefix("KPROBE_ACTION_")

    @property
    def time_ms(self) -> int | None:
        return None if self.time_ns is None else self.time_ns // 1_000_000

    @property
    def severity(self) -> int:
        """Severity on CEF's 0-10 scale: process lifecycle is routine (3), a policy
        match is worth a look (6), a policy that killed or signalled is high (8)."""
        if not self.is_policy_hit:
            return 3
        return 8 if self.enforced else 6

    @property
    def title(self) -> str:
        """One human line naming the event, e.g. for CEF Name and OCSF titles."""
        if self.kind == "process_exec":
            return "Process executed"
        if self.kind == "process_exit":
            return "Process exited"
        if self.is_policy_hit:
            what = f"{self.policy_name}: {self.hook}" if self.policy_name else self.hook
            return f"Policy match {what}".strip()
        return self.kind


def event_uid(facts: EventFacts) -> str:
    """A stable id for one event: the same event exported twice (a retried batch)
    gets the same id, so receivers that key on it (Elasticsearch ``_id``) dedupe."""
    proc = facts.process
    key = "|".join(
        (
            facts.node,
            facts.kind,
            str(facts.time_ns),
            proc.exec_id,
            str(proc.pid),
            facts.policy_name,
            facts.hook,
        )
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]
