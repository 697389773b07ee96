"""Tetragon-shaped events for the OTLP sink tests, built with the schemas models, and
the sinks pointed at a test receiver."""

from __future__ import annotations

from typing import Any

from schemas.events import (
    GetEventsResponse,
    Process,
    ProcessExec,
    ProcessExit,
    exec_id,
    format_timestamp,
)
from services.exporter.sinks.otlp import (
    OtlpLogsConfig,
    OtlpLogsSink,
    OtlpTracesConfig,
    OtlpTracesSink,
)
from tests.otlp_receiver import OtlpReceiver

NODE = "node-a"
T0 = 1_700_000_000 * 10**9  # event times: T0 + ktime
CONTAINER_ID = "3f1c" + "0" * 60


def proc(
    pid: int,
    binary: str,
    arguments: str = "",
    *,
    ktime: int,
    parent: Process | None = None,
    **kw: Any,
) -> Process:
    return Process(
        exec_id=exec_id(NODE, ktime, pid),
        pid=pid,
        tid=pid,
        uid=1000,
        cwd="/home/dev",
        binary=binary,
        arguments=arguments,
        flags="execve clone",
        start_time=T0 + ktime,
        parent_exec_id=parent.exec_id if parent else "",
        **kw,
    )


def exec_event(process: Process, parent: Process | None, *ancestors: Process) -> dict[str, Any]:
    body = ProcessExec(process=process, parent=parent, ancestors=list(ancestors))
    return GetEventsResponse(
        process_exec=body, node_name=NODE, time=process.start_time or T0
    ).to_json_dict()


def exit_event(
    process: Process, parent: Process | None, at: int, *ancestors: Process, **kw: Any
) -> dict[str, Any]:
    body = ProcessExit(
        process=process, parent=parent, ancestors=list(ancestors), time=T0 + at, **kw
    )
    return GetEventsResponse(process_exit=body, node_name=NODE, time=T0 + at).to_json_dict()


def kprobe_event(process: Process, parent: Process | None, at: int, action: str) -> dict[str, Any]:
    # process_kprobe is not in schemas.events yet: Tetragon's JSON shape, by hand.
    return {
        "process_kprobe": {
            "process": process.to_json_dict(),
            "parent": parent.to_json_dict() if parent else None,
            "function_name": "__x64_sys_openat",
            "args": [{"int_arg": -100}, {"string_arg": "/etc/shadow"}],
            "action": action,
            "policy_name": "deny-shadow",
        },
        "node_name": NODE,
        "time": format_timestamp(T0 + at),
    }


# A host lineage: init -> sshd (a trace root: init's child) -> bash -> the command.
INIT = proc(1, "/sbin/init", ktime=1)
SSHD = proc(812, "/usr/sbin/sshd", "-D", ktime=1_000, parent=INIT)
BASH = proc(4242, "/bin/bash", ktime=5_000, parent=SSHD)


def command(marker: str) -> Process:
    return proc(4300, "/usr/bin/python3", f"-c 'print(1)' {marker}", ktime=6_000, parent=BASH)


def logs_sink(receiver: OtlpReceiver, **options: Any) -> OtlpLogsSink:
    protocol = options.pop("protocol", "grpc")
    return OtlpLogsSink(
        "otel-logs", OtlpLogsConfig(endpoint=receiver.endpoint, protocol=protocol, **options)
    )


def traces_sink(receiver: OtlpReceiver, **options: Any) -> OtlpTracesSink:
    return OtlpTracesSink("otel-traces", OtlpTracesConfig(endpoint=receiver.endpoint, **options))


async def send_all(sink: Any, *batches: list[dict[str, Any]]) -> None:
    await sink.start()
    for batch in batches:
        await sink.send(batch)
    await sink.close()
