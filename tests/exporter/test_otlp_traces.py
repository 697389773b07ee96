"""The otlp_traces sink against a real OTLP endpoint (tests/otlp_receiver.py): process
trees as spans, as decoded from the wire; and the batch outcomes both OTLP sinks share."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from schemas.events import Container, Pod
from services.exporter.sinks import otlp_ids as ids
from services.exporter.sinks.otlp import OtlpTracesConfig, OtlpTracesSink
from tests.exporter.otlp_events import (
    BASH,
    CONTAINER_ID,
    INIT,
    NODE,
    SSHD,
    T0,
    command,
    exec_event,
    exit_event,
    kprobe_event,
    logs_sink,
    proc,
    send_all,
    traces_sink,
)
from tests.otlp_receiver import OtlpReceiver


async def test_traces_process_tree_links_child_to_parent_span(
    receiver_and_protocol: tuple[OtlpReceiver, str],
) -> None:
    """Parent exec, child exec, child exit, parent exit: two spans of one trace, child
    under parent, even when another sink instance exports the child."""
    receiver, protocol = receiver_and_protocol
    cmd = command(f"ocellus-{uuid.uuid4().hex}")
    first = OtlpTracesSink("a", OtlpTracesConfig(endpoint=receiver.endpoint, protocol=protocol))
    second = OtlpTracesSink("b", OtlpTracesConfig(endpoint=receiver.endpoint, protocol=protocol))
    await first.start()
    await first.send([exec_event(BASH, SSHD, INIT)])
    await send_all(
        second, [exec_event(cmd, BASH, SSHD, INIT)], [exit_event(cmd, BASH, 7_000, SSHD, INIT)]
    )
    await first.send([exit_event(BASH, SSHD, 9_000, INIT, status=3)])
    await first.close()

    spans = {s.span.name: s for s in receiver.spans()}
    assert set(spans) == {"bash", "python3"}
    parent, child = spans["bash"].span, spans["python3"].span
    assert child.trace_id == parent.trace_id
    assert int.from_bytes(parent.trace_id) == ids.trace_id(f"exec:{SSHD.exec_id}")
    assert child.parent_span_id == parent.span_id
    assert parent.parent_span_id == ids.span_id(SSHD.exec_id).to_bytes(8)  # sshd: same trace
    assert (child.start_time_unix_nano, child.end_time_unix_nano) == (T0 + 6_000, T0 + 7_000)
    assert (parent.start_time_unix_nano, parent.end_time_unix_nano) == (T0 + 5_000, T0 + 9_000)
    assert spans["bash"].attributes["process.exit.code"] == 3
    assert spans["python3"].attributes["process.parent_pid"] == 4242
    assert spans["bash"].resource["host.name"] == NODE


async def test_traces_container_process_gets_the_container_trace(
    receiver: OtlpReceiver,
) -> None:
    """A container's processes share the container's trace (also one known only by its
    truncated docker id); its first process links to the shim on the host instead of
    naming it as parent."""
    shim = proc(3000, "/usr/bin/containerd-shim-runc-v2", ktime=2_000, parent=INIT)
    pod = Pod(container=Container(id=f"docker://{CONTAINER_ID}", name="db"))
    entry = proc(3010, "/usr/local/bin/docker-entrypoint.sh", ktime=3_000, parent=shim, pod=pod)
    server = proc(3020, "/usr/bin/postgres", ktime=3_500, parent=entry, pod=pod)
    probe = proc(3030, "/bin/pg_isready", ktime=3_600, parent=entry, docker=CONTAINER_ID[:31])
    await send_all(
        traces_sink(receiver),
        [exec_event(entry, shim, INIT), exec_event(server, entry, shim, INIT)],
        [exec_event(probe, entry, shim, INIT), exit_event(probe, entry, 3_700, shim, INIT)],
        [exit_event(server, entry, 8_000, shim, INIT), exit_event(entry, shim, 8_500, INIT)],
    )

    spans = {s.span.name: s.span for s in receiver.spans()}
    container_trace = ids.trace_id(f"container:{CONTAINER_ID[:31]}").to_bytes(16)
    assert {span.trace_id for span in spans.values()} == {container_trace}
    assert spans["postgres"].parent_span_id == spans["docker-entrypoint.sh"].span_id
    assert spans["pg_isready"].parent_span_id == spans["docker-entrypoint.sh"].span_id
    assert spans["docker-entrypoint.sh"].parent_span_id == b""
    [link] = spans["docker-entrypoint.sh"].links
    assert link.span_id == ids.span_id(shim.exec_id).to_bytes(8)
    assert link.trace_id == ids.trace_id(f"exec:{shim.exec_id}").to_bytes(16)


async def test_traces_policy_hit_becomes_span_event(
    receiver: OtlpReceiver,
) -> None:
    """A policy hit is an event on its process's span; the kill marks the span an error."""
    await send_all(
        traces_sink(receiver),
        [exec_event(BASH, SSHD, INIT), kprobe_event(BASH, SSHD, 5_500, "KPROBE_ACTION_SIGKILL")],
        [exit_event(BASH, SSHD, 5_600, INIT, signal="SIGKILL")],
    )

    [received] = receiver.spans()
    [event] = received.span.events
    assert event.name == "process_kprobe"
    assert event.time_unix_nano == T0 + 5_500
    assert received.span.status.message == "killed by SIGKILL"
    assert received.attributes["ocellus.process.exit.signal"] == "SIGKILL"


async def test_traces_close_flushes_open_spans_as_incomplete(
    receiver: OtlpReceiver,
) -> None:
    """Spans of processes still running at shutdown are exported, marked incomplete."""
    cmd = command("still-running")
    await send_all(
        traces_sink(receiver),
        [exec_event(BASH, SSHD, INIT), exec_event(cmd, BASH, SSHD, INIT)],
    )

    spans = {s.span.name: s for s in receiver.spans()}
    assert set(spans) == {"bash", "python3"}
    assert all(s.attributes["ocellus.span.incomplete"] is True for s in spans.values())
    assert spans["python3"].span.end_time_unix_nano == T0 + 6_000  # the latest event seen


async def test_traces_open_spans_are_bounded(
    receiver: OtlpReceiver,
) -> None:
    """Past max_open_spans the oldest open span is exported incomplete and counted."""
    sink = traces_sink(receiver, max_open_spans=1)
    await sink.start()
    await sink.send([exec_event(BASH, SSHD, INIT), exec_event(command("x"), BASH, SSHD, INIT)])

    [evicted] = receiver.spans()
    assert evicted.span.name == "bash"
    assert evicted.attributes["ocellus.span.incomplete"] is True
    assert sink.counters["spans_evicted"] == 1
    await sink.close()


@pytest.mark.parametrize(
    "make_sink, received, count",
    [
        pytest.param(logs_sink, OtlpReceiver.logs, 2, id="logs"),  # the exec and the exit
        pytest.param(traces_sink, OtlpReceiver.spans, 1, id="traces"),  # bash's span
    ],
)
async def test_malformed_event_is_rejected_and_the_rest_flow(
    receiver: OtlpReceiver, make_sink: Any, received: Any, count: int
) -> None:
    """An event not in Tetragon's shape is rejected by index; the others are delivered."""
    malformed = {"process_exec": {"process": "not an object"}, "node_name": NODE}
    sink = make_sink(receiver)
    await sink.start()
    result = await sink.send([malformed, exec_event(BASH, SSHD, INIT)])
    await sink.send([exit_event(BASH, SSHD, 6_000, INIT)])
    await sink.close()

    assert [r.index for r in result.rejected] == [0]
    assert len(received(receiver)) == count
