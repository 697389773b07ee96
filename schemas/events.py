"""Enriched events: the protobuf-JSON form of Tetragon's ``GetEventsResponse``.

Names, types and enum names follow Tetragon's api/v1/tetragon/*.proto, and the JSON is what
Tetragon's exporter prints (protojson, ``UseProtoNames``), so a strict protobuf-JSON parser
holding Tetragon's definitions accepts every line. As in protojson: plain proto3 scalars and
repeated/map fields hold their default (``""``, ``0``, ``False``, empty) when unset and are
then left out of the JSON (``status`` 0, empty ``flags``); wrapper fields (UInt32Value,
BoolValue, Int32Value) and messages are ``None`` when unset and absent, so a set ``"uid": 0``
survives; uint64 prints as a decimal string; enums print as names.

Timestamps are ``int`` nanoseconds since the Unix epoch: ``datetime`` stops at microseconds
and Tetragon's times carry nanoseconds. They print as RFC 3339 UTC with ``Z`` and 0/3/6/9
fractional digits (protojson's canonical form) and parse from any RFC 3339 form.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from schemas.capabilities import CAPABILITY_NAMES

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN_NS = -62_135_596_800 * 10**9
TIMESTAMP_MAX_NS = 253_402_300_799 * 10**9 + 999_999_999
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


def format_timestamp(ns: int) -> str:
    """Nanoseconds since the epoch -> RFC 3339 string in protojson's canonical form."""
    seconds, nanos = divmod(ns, 10**9)
    t = _EPOCH + timedelta(seconds=seconds)
    if nanos == 0:
        frac = ""
    elif nanos % 1_000_000 == 0:
        frac = f".{nanos // 1_000_000:03d}"
    elif nanos % 1_000 == 0:
        frac = f".{nanos // 1_000:06d}"
    else:
        frac = f".{nanos:09d}"
    # f-string, not strftime: strftime does not zero-pad years below 1000 on glibc.
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}{frac}Z"
    )


def parse_timestamp(value: Any) -> Any:
    """RFC 3339 string -> nanoseconds since the epoch; other input is left to the int check."""
    if not isinstance(value, str):
        return value
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, zone = m.group(7) or "", m.group(8)
    tz = UTC
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    t = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    return (t - _EPOCH) // timedelta(seconds=1) * 10**9 + int(frac.ljust(9, "0"))


def _int_from_decimal_str(value: Any) -> Any:
    # protojson prints 64-bit integers as strings; it also accepts plain numbers.
    if isinstance(value, str) and value.isascii() and value.removeprefix("-").isdigit():
        return int(value)
    return value


def _bytes_from_base64(value: Any) -> Any:
    # protojson prints bytes as standard base64 (with padding).
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("not standard base64") from None
    return value


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
UInt64 = Annotated[
    int,
    BeforeValidator(_int_from_decimal_str),
    PlainSerializer(str, return_type=str, when_used="json"),
    Field(ge=0, le=2**64 - 1),
]
Int64 = Annotated[
    int,
    BeforeValidator(_int_from_decimal_str),
    PlainSerializer(str, return_type=str, when_used="json"),
    Field(ge=-(2**63), le=2**63 - 1),
]
Bytes = Annotated[
    bytes,
    BeforeValidator(_bytes_from_base64),
    PlainSerializer(_base64, return_type=str, when_used="json"),
]
Timestamp = Annotated[
    int,
    BeforeValidator(parse_timestamp),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    Field(ge=TIMESTAMP_MIN_NS, le=TIMESTAMP_MAX_NS),
]

# tetragon.SecureBitsType: the index is the bit number (value 1 << index); 0 is "SecBitNotSet".
SECURE_BIT_NAMES = (
    "SecBitNoRoot",
    "SecBitNoRootLocked",
    "SecBitNoSetUidFixup",
    "SecBitNoSetUidFixupLocked",
    "SecBitKeepCaps",
    "SecBitKeepCapsLocked",
    "SecBitNoCapAmbientRaise",
    "SecBitNoCapAmbientRaiseLocked",
)


def _enum_name(allowed: tuple[str, ...]) -> AfterValidator:
    def check(name: str) -> str:
        if name not in allowed:
            raise ValueError(f"unknown enum name {name!r}")
        return name

    return AfterValidator(check)


CapabilityName = Annotated[str, _enum_name(CAPABILITY_NAMES)]
SecureBitName = Annotated[str, _enum_name(("SecBitNotSet", *SECURE_BIT_NAMES))]
PrivilegesChanged = Literal[
    "PRIVILEGES_CHANGED_UNSET",
    "PRIVILEGES_RAISED_EXEC_FILE_CAP",
    "PRIVILEGES_RAISED_EXEC_FILE_SETUID",
    "PRIVILEGES_RAISED_EXEC_FILE_SETGID",
]


class ProtoMessage(BaseModel):
    """Base of every event model: immutable, strict, unknown fields rejected."""

    # strict: no silent coercion ("1" -> 1, True -> 1); protobuf-JSON parsers reject those too.
    # validate_by_name: ``return_`` (proto ``return``, a Python keyword) can be given by name.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_by_name=True, validate_by_alias=True
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The protobuf-JSON object: proto names, defaults and unset fields absent."""
        return self.model_dump(mode="json", exclude_defaults=True, by_alias=True)


class Image(ProtoMessage):
    id: str = ""
    name: str = ""


class SecurityContext(ProtoMessage):
    privileged: bool = False


class Container(ProtoMessage):
    id: str = ""  # runtime-prefixed full id, e.g. "containerd://<64 hex>"
    name: str = ""
    image: Image | None = None
    start_time: Timestamp | None = None
    pid: UInt32 | None = None  # pid inside the container's pid namespace
    maybe_exec_probe: bool = False
    security_context: SecurityContext | None = None


class Pod(ProtoMessage):
    namespace: str = ""
    name: str = ""
    uid: str = ""
    container: Container | None = None
    pod_labels: dict[str, str] = {}
    workload: str = ""
    workload_kind: str = ""
    pod_annotations: dict[str, str] = {}


class Capabilities(ProtoMessage):
    permitted: list[CapabilityName] = []
    effective: list[CapabilityName] = []
    inheritable: list[CapabilityName] = []


class Namespace(ProtoMessage):
    inum: UInt32 = 0
    is_host: bool = False


class Namespaces(ProtoMessage):
    uts: Namespace | None = None
    ipc: Namespace | None = None
    mnt: Namespace | None = None
    pid: Namespace | None = None
    pid_for_children: Namespace | None = None
    net: Namespace | None = None
    time: Namespace | None = None
    time_for_children: Namespace | None = None
    cgroup: Namespace | None = None
    user: Namespace | None = None


class UserNamespace(ProtoMessage):
    level: Int32 | None = None
    uid: UInt32 | None = None
    gid: UInt32 | None = None
    ns: Namespace | None = None


class ProcessCredentials(ProtoMessage):
    uid: UInt32 | None = None
    gid: UInt32 | None = None
    euid: UInt32 | None = None
    egid: UInt32 | None = None
    suid: UInt32 | None = None
    sgid: UInt32 | None = None
    fsuid: UInt32 | None = None
    fsgid: UInt32 | None = None
    securebits: list[SecureBitName] = []
    caps: Capabilities | None = None
    user_ns: UserNamespace | None = None


class InodeProperties(ProtoMessage):
    number: UInt64 = 0
    links: UInt32 | None = None


class FileProperties(ProtoMessage):
    inode: InodeProperties | None = None
    path: str = ""


class BinaryProperties(ProtoMessage):
    setuid: UInt32 | None = None
    setgid: UInt32 | None = None
    privileges_changed: list[PrivilegesChanged] = []
    file: FileProperties | None = None


class UserRecord(ProtoMessage):
    name: str = ""


class EnvVar(ProtoMessage):
    # Capitalised in Tetragon's proto, hence in its JSON too.
    Key: str = ""
    Value: str = ""


class Process(ProtoMessage):
    """tetragon.Process. Only ``pid`` is always known; Tetragon itself emits an exit for an
    uncached process with nothing but ``pid`` and ``start_time``."""

    exec_id: str = ""
    pid: UInt32
    uid: UInt32 | None = None
    cwd: str = ""
    binary: str = ""
    arguments: str = ""
    flags: str = ""  # space-separated: "execve clone", "procFS", "errorCWD", ...
    start_time: Timestamp | None = None
    auid: UInt32 | None = None
    pod: Pod | None = None
    docker: str = ""  # container id truncated to 31 chars, as Tetragon's BPF side reports it
    parent_exec_id: str = ""
    refcnt: UInt32 = 0
    cap: Capabilities | None = None
    ns: Namespaces | None = None
    tid: UInt32 | None = None
    process_credentials: ProcessCredentials | None = None
    binary_properties: BinaryProperties | None = None  # process_exec only
    user: UserRecord | None = None
    in_init_tree: bool | None = None
    environment_variables: list[EnvVar] = []


class ProcessExec(ProtoMessage):
    process: Process
    parent: Process | None = None
    ancestors: list[Process] = []


class ProcessExit(ProtoMessage):
    process: Process
    parent: Process | None = None
    signal: str = ""  # e.g. "SIGKILL"; empty (absent) for a normal exit
    status: UInt32 = 0  # exit code (wait status >> 8); absent when 0
    time: Timestamp | None = None
    ancestors: list[Process] = []


# tetragon.KprobeAction: what the hook did, by name (enum values 0..15 in proto order).
KPROBE_ACTIONS = (
    "KPROBE_ACTION_UNKNOWN",
    "KPROBE_ACTION_POST",
    "KPROBE_ACTION_FOLLOWFD",
    "KPROBE_ACTION_SIGKILL",
    "KPROBE_ACTION_UNFOLLOWFD",
    "KPROBE_ACTION_OVERRIDE",
    "KPROBE_ACTION_COPYFD",
    "KPROBE_ACTION_GETURL",
    "KPROBE_ACTION_DNSLOOKUP",
    "KPROBE_ACTION_NOPOST",
    "KPROBE_ACTION_SIGNAL",
    "KPROBE_ACTION_TRACKSOCK",
    "KPROBE_ACTION_UNTRACKSOCK",
    "KPROBE_ACTION_NOTIFYENFORCER",
    "KPROBE_ACTION_CLEANUPENFORCERNOTIFICATION",
    "KPROBE_ACTION_SET",
)
KprobeAction = Annotated[str, _enum_name(KPROBE_ACTIONS)]
# tetragon.BpfCmd (bpf.proto): the kernel's enum bpf_cmd, by value.
BPF_CMDS = (
    "BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET", "BPF_PROG_ATTACH",
    "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN", "BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID",
    "BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD", "BPF_PROG_QUERY",
    "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID", "BPF_TASK_FD_QUERY",
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_BTF_GET_NEXT_ID",
    "BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH", "BPF_MAP_UPDATE_BATCH",
    "BPF_MAP_DELETE_BATCH", "BPF_LINK_CREATE", "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID",
    "BPF_LINK_GET_NEXT_ID", "BPF_ENABLE_STATS", "BPF_ITER_CREATE", "BPF_LINK_DETACH",
    "BPF_PROG_BIND_MAP", "BPF_TOKEN_CREATE",
)  # fmt: skip
BpfCmd = Annotated[str, _enum_name(BPF_CMDS)]


class KprobeSockaddr(ProtoMessage):
    family: str = ""  # "AF_INET", "AF_INET6", ...
    addr: str = ""
    port: UInt32 = 0


class KprobeSock(ProtoMessage):
    family: str = ""
    type: str = ""
    protocol: str = ""
    mark: UInt32 = 0
    priority: UInt32 = 0
    saddr: str = ""
    daddr: str = ""
    sport: UInt32 = 0
    dport: UInt32 = 0
    cookie: UInt64 = 0
    state: str = ""


class KprobePath(ProtoMessage):
    mount: str = ""
    path: str = ""
    flags: str = ""
    permission: str = ""


class KprobeFile(KprobePath):
    """Same fields as KprobePath in Tetragon's proto."""


class KprobeTruncatedBytes(ProtoMessage):
    bytes_arg: Bytes = b""
    orig_size: UInt64 = 0


class KprobeCapability(ProtoMessage):
    value: Int32 | None = None  # Int32Value
    name: str = ""


class SyscallId(ProtoMessage):
    id: UInt32 = 0
    abi: str = ""


class KprobeArgument(ProtoMessage):
    """tetragon.KprobeArgument: at most one member of its ``arg`` oneof (None when unset:
    oneof members have presence, so a set ``0`` or ``""`` is printed), plus ``label``.
    No member set is what Tetragon sends for an arg it could not read."""

    string_arg: str | None = None
    int_arg: Int32 | None = None
    size_arg: UInt64 | None = None
    bytes_arg: Bytes | None = None
    path_arg: KprobePath | None = None
    file_arg: KprobeFile | None = None
    truncated_bytes_arg: KprobeTruncatedBytes | None = None
    sock_arg: KprobeSock | None = None
    long_arg: Int64 | None = None
    uint_arg: UInt32 | None = None
    capability_arg: KprobeCapability | None = None
    bpf_cmd_arg: BpfCmd | None = None
    syscall_id: SyscallId | None = None
    sockaddr_arg: KprobeSockaddr | None = None
    label: str = ""

    @model_validator(mode="after")
    def _at_most_one(self) -> Self:
        present = [k for k in ARG_KINDS if getattr(self, k) is not None]
        if len(present) > 1:
            raise ValueError(f"at most one arg kind may be set, got {present}")
        return self


ARG_KINDS: tuple[str, ...] = tuple(f for f in KprobeArgument.model_fields if f != "label")


class StackTraceEntry(ProtoMessage):
    address: UInt64 = 0
    offset: UInt64 = 0
    symbol: str = ""
    module: str = ""


class ProcessKprobe(ProtoMessage):
    process: Process
    parent: Process | None = None
    function_name: str = ""  # as Tetragon names it: "__x64_sys_openat"
    args: list[KprobeArgument] = []
    return_: KprobeArgument | None = Field(None, alias="return")
    action: KprobeAction = "KPROBE_ACTION_UNKNOWN"
    kernel_stack_trace: list[StackTraceEntry] = []
    policy_name: str = ""
    return_action: KprobeAction = "KPROBE_ACTION_UNKNOWN"
    message: str = ""
    tags: list[str] = []
    user_stack_trace: list[StackTraceEntry] = []
    ancestors: list[Process] = []
    data: list[KprobeArgument] = []
    envs: list[EnvVar] = []


class ProcessTracepoint(ProtoMessage):
    process: Process
    parent: Process | None = None
    subsys: str = ""
    event: str = ""
    args: list[KprobeArgument] = []
    policy_name: str = ""
    action: KprobeAction = "KPROBE_ACTION_UNKNOWN"
    message: str = ""
    tags: list[str] = []
    ancestors: list[Process] = []
    envs: list[EnvVar] = []


# The oneof GetEventsResponse.event, in proto field order (process_exec 1, process_exit 5,
# process_kprobe 9, process_tracepoint 10): declare a kind on GetEventsResponse and append
# its name here; the exactly-one check then covers it.
EVENT_KINDS: tuple[str, ...] = (
    "process_exec",
    "process_exit",
    "process_kprobe",
    "process_tracepoint",
)


class GetEventsResponse(ProtoMessage):
    """One event line: exactly one event kind, plus where and when it was observed."""

    process_exec: ProcessExec | None = None
    process_exit: ProcessExit | None = None
    process_kprobe: ProcessKprobe | None = None
    process_tracepoint: ProcessTracepoint | None = None
    node_name: str = Field(min_length=1)
    time: Timestamp
    cluster_name: str = ""
    node_labels: dict[str, str] = {}

    @model_validator(mode="after")
    def _exactly_one_event(self) -> Self:
        present = [kind for kind in EVENT_KINDS if getattr(self, kind) is not None]
        if len(present) != 1:
            raise ValueError(f"exactly one of {', '.join(EVENT_KINDS)} must be set, got {present}")
        return self

    def to_json_line(self) -> str:
        """``to_json_dict()`` as compact JSON, without the trailing newline."""
        return json.dumps(self.to_json_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> GetEventsResponse:
        """Validate a decoded JSON object (or a msgpack-decoded dict) into the model."""
        return cls.model_validate(data)

    @classmethod
    def from_json_line(cls, line: str | bytes) -> GetEventsResponse:
        """Validate one JSON line."""
        return cls.model_validate_json(line)


def event_type(resp: GetEventsResponse) -> str:
    """The name of the event kind that is set, e.g. "process_exec"; also the subject token."""
    return next(kind for kind in EVENT_KINDS if getattr(resp, kind) is not None)


def exec_id(node: str, ktime_ns: int, pid: int) -> str:
    """Tetragon's exec id: standard base64 (with padding) of "node:ktime:pid"."""
    return base64.b64encode(f"{node}:{ktime_ns}:{pid}".encode()).decode("ascii")
