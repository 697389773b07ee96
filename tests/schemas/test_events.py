"""schemas.events: enriched events in the protobuf-JSON form of Tetragon's GetEventsResponse."""

import base64
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import (
    TIMESTAMP_MAX_NS,
    TIMESTAMP_MIN_NS,
    BinaryProperties,
    Capabilities,
    Container,
    EnvVar,
    FileProperties,
    GetEventsResponse,
    Image,
    InodeProperties,
    KprobeArgument,
    KprobeCapability,
    KprobeFile,
    KprobePath,
    KprobeSock,
    KprobeSockaddr,
    KprobeTruncatedBytes,
    Namespace,
    Namespaces,
    Pod,
    Process,
    ProcessCredentials,
    ProcessExec,
    ProcessExit,
    ProcessKprobe,
    ProcessTracepoint,
    SecurityContext,
    StackTraceEntry,
    SyscallId,
    UserNamespace,
    UserRecord,
    event_type,
    exec_id,
    format_timestamp,
    parse_timestamp,
)

NODE = "kind-control-plane"
T0 = 1_764_327_600_123_456_789  # 2025-11-28T11:00:00.123456789Z
T0_TEXT = "2025-11-28T11:00:00.123456789Z"
PROTO_DIR = Path(__file__).parent / "tetragon_proto"


def full_process(pid: int = 4242) -> Process:
    """A process with every field Tetragon defines set to a non-default value."""
    return Process(
        exec_id=exec_id(NODE, T0, pid),
        pid=pid,
        uid=0,
        cwd="/work",
        binary="/usr/bin/curl",
        arguments="-s https://example.org",
        flags="execve clone",
        start_time=T0,
        auid=4294967295,
        pod=Pod(
            namespace="default",
            name="web-0",
            uid="0b6b6f4e-8f3c-4a59-9a43-2f1d7d2c9e10",
            container=Container(
                id="containerd://" + "ab" * 32,
                name="web",
                image=Image(id="docker.io/library/nginx@sha256:" + "cd" * 32, name="nginx:1.27"),
                start_time=T0 - 10**9,
                pid=7,
                maybe_exec_probe=True,
                security_context=SecurityContext(privileged=True),
            ),
            pod_labels={"app": "web"},
            workload="web",
            workload_kind="StatefulSet",
            pod_annotations={"note": "x"},
        ),
        docker=("ab" * 32)[:31],
        parent_exec_id=exec_id(NODE, T0 - 5, 1),
        refcnt=1,
        cap=Capabilities(permitted=["CAP_CHOWN", "DAC_OVERRIDE"], effective=["CAP_BPF"]),
        ns=Namespaces(mnt=Namespace(inum=4026531841, is_host=True), pid=Namespace(inum=4026531836)),
        tid=pid,
        process_credentials=ProcessCredentials(
            uid=1000,
            euid=0,
            securebits=["SecBitNoRoot", "SecBitKeepCaps"],
            caps=Capabilities(inheritable=["CAP_KILL"]),
            user_ns=UserNamespace(level=0, uid=0, gid=0, ns=Namespace(inum=4026531837)),
        ),
        binary_properties=BinaryProperties(
            setuid=0,
            privileges_changed=["PRIVILEGES_RAISED_EXEC_FILE_SETUID"],
            file=FileProperties(inode=InodeProperties(number=2**63 + 1, links=0), path="/memfd"),
        ),
        user=UserRecord(name="root"),
        in_init_tree=False,
        environment_variables=[EnvVar(Key="LANG", Value="C.UTF-8")],
    )


def full_exec() -> GetEventsResponse:
    """A process_exec with parent, ancestors and every envelope field."""
    return GetEventsResponse(
        process_exec=ProcessExec(
            process=full_process(),
            parent=full_process(pid=1),
            ancestors=[Process(pid=0, exec_id=exec_id(NODE, 1, 0))],
        ),
        node_name=NODE,
        time=T0,
        cluster_name="kind",
        node_labels={"kubernetes.io/os": "linux"},
    )


def minimal_exit() -> GetEventsResponse:
    """What Tetragon sends for an uncached process: pid and start_time only."""
    return GetEventsResponse(
        process_exit=ProcessExit(process=Process(pid=9, start_time=T0), signal="SIGKILL"),
        node_name=NODE,
        time=T0 + 1,
    )


def exit_with_status() -> GetEventsResponse:
    """A process_exit with an exit code, a parent and its own time."""
    return GetEventsResponse(
        process_exit=ProcessExit(
            process=Process(pid=10, exec_id=exec_id(NODE, T0, 10), flags="procFS"),
            parent=Process(pid=1, binary="/sbin/init"),
            status=3,
            time=T0 + 2,
        ),
        node_name=NODE,
        time=T0 + 2,
    )


def every_arg_kind() -> list[KprobeArgument]:
    """One KprobeArgument per oneof member Ocellus models, zero values where they are legal
    (a set oneof member is printed even when it is 0 or ""), and an unread arg."""
    return [
        KprobeArgument(string_arg="", label="empty"),
        KprobeArgument(int_arg=0),
        KprobeArgument(size_arg=2**64 - 1),
        KprobeArgument(bytes_arg=b"\x00\xffhi"),
        KprobeArgument(path_arg=KprobePath(path="/etc", flags="", permission="drwxr-xr-x")),
        KprobeArgument(file_arg=KprobeFile(mount="/", path="/etc/passwd")),
        KprobeArgument(truncated_bytes_arg=KprobeTruncatedBytes(bytes_arg=b"ab", orig_size=9)),
        KprobeArgument(
            sock_arg=KprobeSock(
                family="AF_INET",
                type="SOCK_STREAM",
                protocol="IPPROTO_TCP",
                saddr="10.0.0.1",
                daddr="10.0.0.2",
                sport=40000,
                dport=443,
                cookie=2**63,
                state="TCP_SYN_SENT",
            )
        ),
        KprobeArgument(long_arg=-(2**63)),
        KprobeArgument(uint_arg=2**32 - 1),
        KprobeArgument(capability_arg=KprobeCapability(value=0, name="CAP_CHOWN")),
        KprobeArgument(bpf_cmd_arg="BPF_PROG_LOAD"),
        KprobeArgument(syscall_id=SyscallId(id=59, abi="x64")),
        KprobeArgument(sockaddr_arg=KprobeSockaddr(family="AF_INET6", addr="::1", port=8080)),
        KprobeArgument(),
    ]


def full_kprobe() -> GetEventsResponse:
    """A process_kprobe with every field set, every arg kind and a return value."""
    return GetEventsResponse(
        process_kprobe=ProcessKprobe(
            process=full_process(),
            parent=full_process(pid=1),
            function_name="__x64_sys_openat",
            args=every_arg_kind(),
            return_=KprobeArgument(int_arg=-2, label="ret"),
            action="KPROBE_ACTION_SIGKILL",
            kernel_stack_trace=[StackTraceEntry(address=2**64 - 1, offset=5, symbol="do_sys")],
            policy_name="file-monitor",
            return_action="KPROBE_ACTION_POST",
            message="sensitive file",
            tags=["observability.filesystem"],
            user_stack_trace=[StackTraceEntry(symbol="main", module="/bin/cat")],
            ancestors=[Process(pid=0, exec_id=exec_id(NODE, 1, 0))],
            data=[KprobeArgument(string_arg="data")],
            envs=[EnvVar(Key="HOME", Value="/root")],
        ),
        node_name=NODE,
        time=T0,
    )


def full_tracepoint() -> GetEventsResponse:
    """A process_tracepoint with every field set."""
    return GetEventsResponse(
        process_tracepoint=ProcessTracepoint(
            process=full_process(),
            parent=full_process(pid=1),
            subsys="syscalls",
            event="sys_enter_connect",
            args=every_arg_kind(),
            policy_name="net-monitor",
            action="KPROBE_ACTION_NOPOST",
            message="connect",
            tags=["observability.network"],
            ancestors=[Process(pid=0)],
            envs=[EnvVar(Key="A", Value="b")],
        ),
        node_name=NODE,
        time=T0,
    )


EVENTS = [
    pytest.param(full_exec, id="full-exec"),
    pytest.param(minimal_exit, id="minimal-exit"),
    pytest.param(exit_with_status, id="exit-status"),
    pytest.param(full_kprobe, id="full-kprobe"),
    pytest.param(full_tracepoint, id="full-tracepoint"),
]


@pytest.mark.parametrize("make", EVENTS)
def test_json_line_round_trip(make: Any) -> None:
    """model -> JSON line -> model (via line and via decoded dict) gives an equal model."""
    event = make()
    line = event.to_json_line()
    assert "\n" not in line
    assert GetEventsResponse.from_json_line(line) == event
    assert GetEventsResponse.from_json_dict(json.loads(line)) == event


def test_minimal_exit_json_is_exactly_what_is_set() -> None:
    """Unset fields and proto3 defaults are absent, not null; set ones print as protojson."""
    assert minimal_exit().to_json_dict() == {
        "process_exit": {
            "process": {"pid": 9, "start_time": T0_TEXT},
            "signal": "SIGKILL",
        },
        "node_name": NODE,
        "time": "2025-11-28T11:00:00.123456790Z",
    }


def _walk(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in _walk(item)]
    if isinstance(value, list):
        return [v for item in value for v in _walk(item)]
    return [value]


@pytest.mark.parametrize("make", EVENTS)
def test_no_null_anywhere(make: Any) -> None:
    """No JSON value is null: unset fields are left out instead."""
    assert None not in _walk(make().to_json_dict())


def test_zero_wrappers_kept_zero_scalars_dropped() -> None:
    """uid=0 / in_init_tree=false (wrappers) stay; status=0 / refcnt=0 / "" (scalars) go."""
    process = Process(pid=0, uid=0, auid=0, in_init_tree=False, refcnt=0, cwd="", flags="")
    event = GetEventsResponse(
        process_exit=ProcessExit(process=process, status=0), node_name=NODE, time=0
    )
    assert event.to_json_dict()["process_exit"] == {
        "process": {"pid": 0, "uid": 0, "auid": 0, "in_init_tree": False}
    }
    assert event.to_json_dict()["time"] == "1970-01-01T00:00:00Z"


def test_uint64_prints_as_string_and_reads_both_ways() -> None:
    """uint64 (inode number) is a decimal string in JSON; a number is accepted on input."""
    inode = InodeProperties(number=2**64 - 1)
    assert inode.model_dump(mode="json") == {"number": "18446744073709551615", "links": None}
    assert InodeProperties.model_validate({"number": "12"}) == InodeProperties(number=12)
    assert InodeProperties.model_validate({"number": 12}) == InodeProperties(number=12)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        pytest.param(T0, T0_TEXT, id="nanoseconds"),
        pytest.param(T0 - 789, "2025-11-28T11:00:00.123456Z", id="microseconds"),
        pytest.param(T0 - 456_789, "2025-11-28T11:00:00.123Z", id="milliseconds"),
        pytest.param(T0 - 123_456_789, "2025-11-28T11:00:00Z", id="whole-second"),
        pytest.param(0, "1970-01-01T00:00:00Z", id="epoch"),
        pytest.param(-1, "1969-12-31T23:59:59.999999999Z", id="before-epoch"),
        pytest.param(TIMESTAMP_MIN_NS, "0001-01-01T00:00:00Z", id="min"),
        pytest.param(TIMESTAMP_MAX_NS, "9999-12-31T23:59:59.999999999Z", id="max"),
    ],
)
def test_timestamp_format_and_parse(ns: int, text: str) -> None:
    """Timestamps print in protojson's canonical RFC 3339 form and parse back exactly."""
    assert format_timestamp(ns) == text
    assert parse_timestamp(text) == ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        pytest.param("2025-11-28T12:00:00.123456789+01:00", T0, id="positive-offset"),
        pytest.param("2025-11-28T10:30:00.123456789-00:30", T0, id="negative-offset"),
        pytest.param("2025-11-28T11:00:00.1Z", T0 - 23_456_789, id="one-digit-fraction"),
    ],
)
def test_timestamp_parse_other_rfc3339_forms(text: str, ns: int) -> None:
    """Offsets and short fractions, which protobuf-JSON parsers also accept, are read."""
    assert parse_timestamp(text) == ns


@pytest.mark.parametrize("ns", [T0, T0 + 1, T0 + 999_999_999, 1, TIMESTAMP_MAX_NS])
def test_timestamp_nanoseconds_survive_json(ns: int) -> None:
    """Every nanosecond survives model -> JSON -> model, for both timestamp fields seen."""
    event = GetEventsResponse(
        process_exec=ProcessExec(process=Process(pid=1, start_time=ns)), node_name=NODE, time=ns
    )
    back = GetEventsResponse.from_json_line(event.to_json_line())
    assert back.time == ns
    assert back.process_exec is not None
    assert back.process_exec.process.start_time == ns


@pytest.mark.parametrize(
    "bad_time",
    [
        pytest.param("2025-11-28 11:00:00Z", id="space-separator"),
        pytest.param("2025-11-28T11:00:00", id="no-zone"),
        pytest.param("2025-11-28T11:00:00.1234567891Z", id="ten-digits"),
        pytest.param("2025-11-28T11:00:60Z", id="leap-second"),
        pytest.param("2025-02-30T11:00:00Z", id="no-such-day"),
        pytest.param(TIMESTAMP_MAX_NS + 1, id="after-9999"),
        pytest.param(1.5, id="float"),
        pytest.param(None, id="null"),
    ],
)
def test_bad_timestamps_rejected(bad_time: Any) -> None:
    """Malformed, out-of-range or null timestamps fail validation."""
    data = minimal_exit().to_json_dict() | {"time": bad_time}
    with pytest.raises(ValidationError):
        GetEventsResponse.from_json_dict(data)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param((), id="envelope"),
        pytest.param(("process_exec",), id="process_exec"),
        pytest.param(("process_exec", "process"), id="process"),
        pytest.param(("process_exec", "process", "pod", "container"), id="container"),
        pytest.param(("process_exec", "parent", "process_credentials"), id="credentials"),
    ],
)
def test_extra_fields_rejected(path: tuple[str, ...]) -> None:
    """An unknown key at any level is an error, not silently dropped."""
    data = full_exec().to_json_dict()
    target = data
    for key in path:
        target = target[key]
    target["unexpected"] = 1
    with pytest.raises(ValidationError, match="unexpected"):
        GetEventsResponse.from_json_dict(data)


@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param({}, id="none"),
        pytest.param(
            {
                "process_exec": {"process": {"pid": 1}},
                "process_exit": {"process": {"pid": 1}},
            },
            id="both",
        ),
    ],
)
def test_exactly_one_event_kind(kinds: dict[str, Any]) -> None:
    """An envelope with no event or with two is rejected."""
    with pytest.raises(ValidationError, match="exactly one of"):
        GetEventsResponse.from_json_dict({"node_name": NODE, "time": T0_TEXT} | kinds)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        pytest.param(full_exec, "process_exec", id="exec"),
        pytest.param(minimal_exit, "process_exit", id="exit"),
        pytest.param(full_kprobe, "process_kprobe", id="kprobe"),
        pytest.param(full_tracepoint, "process_tracepoint", id="tracepoint"),
    ],
)
def test_event_type(make: Any, kind: str) -> None:
    """event_type names the kind that is set."""
    assert event_type(make()) == kind


@pytest.mark.parametrize(
    ("node", "ktime", "pid", "expected"),
    [
        pytest.param("node1", 1000, 42, "bm9kZTE6MTAwMDo0Mg==", id="padded"),
        pytest.param(
            NODE,
            T0,
            4242,
            "a2luZC1jb250cm9sLXBsYW5lOjE3NjQzMjc2MDAxMjM0NTY3ODk6NDI0Mg==",
            id="long",
        ),
    ],
)
def test_exec_id(node: str, ktime: int, pid: int, expected: str) -> None:
    """exec_id is standard padded base64 of "node:ktime:pid", as Tetragon computes it."""
    assert exec_id(node, ktime, pid) == expected
    assert base64.b64decode(expected, validate=True).decode() == f"{node}:{ktime}:{pid}"


@pytest.mark.parametrize(
    "process",
    [
        pytest.param({"pid": "5"}, id="numeric-string"),
        pytest.param({"pid": True}, id="bool"),
        pytest.param({"pid": -1}, id="negative"),
        pytest.param({"pid": 2**32}, id="over-uint32"),
        pytest.param({"pid": 1, "cwd": None}, id="null-string"),
        pytest.param({"pid": 1, "cap": {"effective": ["CAP_DAC_OVERRIDE"]}}, id="bad-cap-name"),
        pytest.param({"pid": 1, "cap": {"effective": [1]}}, id="cap-number"),
        pytest.param({"exec_id": "x"}, id="missing-pid"),
    ],
)
def test_wrong_types_rejected(process: dict[str, Any]) -> None:
    """No silent coercion: wrong types, ranges and enum names fail validation."""
    with pytest.raises(ValidationError):
        GetEventsResponse.from_json_dict(
            {"process_exec": {"process": process}, "node_name": NODE, "time": T0_TEXT}
        )


def test_models_are_frozen() -> None:
    """Assigning to a field of a built event raises."""
    event = minimal_exit()
    with pytest.raises(ValidationError):
        event.node_name = "other"  # type: ignore[misc]


def test_tetragon_shaped_line_is_read() -> None:
    """A line shaped like Tetragon's own export (procFS parent, pod) validates unchanged."""
    line = {
        "process_exec": {
            "process": {
                "exec_id": exec_id(NODE, T0, 4242),
                "pid": 4242,
                "uid": 0,
                "cwd": "/",
                "binary": "/usr/bin/sh",
                "arguments": '-c "echo hi"',
                "flags": "execve rootcwd clone",
                "start_time": T0_TEXT,
                "auid": 4294967295,
                "pod": {
                    "namespace": "default",
                    "name": "web-0",
                    "container": {"id": "containerd://" + "ab" * 32, "pid": 12},
                    "pod_labels": {"app": "web"},
                    "workload": "web",
                    "workload_kind": "StatefulSet",
                },
                "docker": ("ab" * 32)[:31],
                "parent_exec_id": exec_id(NODE, 2_000_000_000, 1),
                "tid": 4242,
                "in_init_tree": False,
            },
            "parent": {
                "exec_id": exec_id(NODE, 2_000_000_000, 1),
                "pid": 1,
                "binary": "/sbin/init",
                "flags": "procFS auid rootcwd",
                "start_time": "2025-11-28T09:00:00Z",
                "parent_exec_id": exec_id(NODE, 1, 0),
            },
        },
        "node_name": NODE,
        "time": T0_TEXT,
    }
    assert GetEventsResponse.from_json_dict(line).to_json_dict() == line


@pytest.fixture(scope="module")
def tetragon_pb2(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Tetragon's vendored protos compiled with grpc_tools.protoc, imported from a tmp dir."""
    from grpc_tools import protoc  # a dev dependency: never skipped

    grpc_tools_include = Path(protoc.__file__).parent / "_proto"
    out = tmp_path_factory.mktemp("tetragon_pb2")
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    rc = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"-I{grpc_tools_include}", f"--python_out={out}", *sources]
    )
    assert rc == 0, f"protoc failed on {sources}"
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("tetragon.events_pb2")
    finally:
        sys.path.remove(str(out))


@pytest.mark.parametrize("make", EVENTS)
def test_protobuf_json_parser_accepts_output(make: Any, tetragon_pb2: Any) -> None:
    """protobuf's JSON parser with Tetragon's protos reads our line and prints it back equal."""
    from google.protobuf import json_format

    event = make()
    message = json_format.Parse(event.to_json_line(), tetragon_pb2.GetEventsResponse())
    assert message.WhichOneof("event") == event_type(event)
    printed = json_format.MessageToDict(message, preserving_proto_field_name=True)
    assert printed == event.to_json_dict()
    assert GetEventsResponse.from_json_dict(printed) == event


def test_protobuf_json_parser_is_strict(tetragon_pb2: Any) -> None:
    """The reference parser does reject what Tetragon's protos lack, so the check has teeth."""
    from google.protobuf import json_format

    data = minimal_exit().to_json_dict()
    data["process_exit"]["process"]["not_in_tetragon"] = "x"
    with pytest.raises(json_format.ParseError, match="not_in_tetragon"):
        json_format.Parse(json.dumps(data), tetragon_pb2.GetEventsResponse())


def test_kprobe_json_shapes() -> None:
    """64-bit ints print as strings, bytes as base64, ``return`` under its proto name, set
    zero oneof members are kept and an unread arg is an empty object."""
    data = full_kprobe().to_json_dict()["process_kprobe"]
    args = data["args"]
    assert args[0] == {"string_arg": "", "label": "empty"}
    assert args[1] == {"int_arg": 0}
    assert args[2] == {"size_arg": "18446744073709551615"}
    assert args[3] == {"bytes_arg": "AP9oaQ=="}
    assert args[8] == {"long_arg": "-9223372036854775808"}
    assert args[-1] == {}
    assert data["return"] == {"int_arg": -2, "label": "ret"}
    assert "return_" not in data


@pytest.mark.parametrize(
    "arg",
    [
        pytest.param({"int_arg": 1, "string_arg": "x"}, id="two-members"),
        pytest.param({"int_arg": 2**31}, id="int32-overflow"),
        pytest.param({"uint_arg": -1}, id="uint32-negative"),
        pytest.param({"long_arg": 1.5}, id="long-float"),
        pytest.param({"bytes_arg": "not base64!"}, id="bad-base64"),
        pytest.param({"bpf_cmd_arg": "BPF_NOPE"}, id="bad-enum"),
        pytest.param({"unknown_arg": 1}, id="unknown-member"),
    ],
)
def test_bad_kprobe_arguments_rejected(arg: dict[str, Any]) -> None:
    """A oneof with two members, out-of-range or mistyped values and unknown names fail."""
    line = {
        "process_kprobe": {"process": {"pid": 1}, "args": [arg]},
        "node_name": NODE,
        "time": T0_TEXT,
    }
    with pytest.raises(ValidationError):
        GetEventsResponse.from_json_dict(line)


def test_bad_action_name_rejected() -> None:
    """The action is one of Tetragon's KprobeAction names."""
    line = {
        "process_tracepoint": {"process": {"pid": 1}, "action": "KPROBE_ACTION_DENY"},
        "node_name": NODE,
        "time": T0_TEXT,
    }
    with pytest.raises(ValidationError, match="unknown enum name"):
        GetEventsResponse.from_json_dict(line)
