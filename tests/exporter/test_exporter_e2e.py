"""The exporter against a real nats-server with JetStream: durable consumers,
the json_file sink, retries, dead letters, restarts."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from nats.aio.client import Client as NATS

from schemas import codec, subjects
from services.exporter.sinks import SINK_TYPES
from services.exporter.sinks.base import (
    BatchResult,
    Event,
    Rejection,
    Sink,
    SinkConfig,
    TransientSinkError,
)
from tests.exporter.exporter_helpers import (
    NODE,
    StatusCollector,
    create_stream,
    make_event,
    marker_of,
    publish,
    read_lines,
    running_exporter,
    settings_for,
    wait_until,
    write_config,
)


class DirSinkConfig(SinkConfig):
    directory: Path


class DirectorySink(Sink):
    """Test sink: each batch becomes a file in a directory; while the directory
    is missing, delivery fails transiently (a receiver that is down)."""

    config_type = DirSinkConfig

    async def send(self, events: Sequence[Event]) -> BatchResult:
        assert isinstance(self.config, DirSinkConfig)
        directory = self.config.directory
        if not directory.is_dir():
            raise TransientSinkError(self.name, f"{directory} is missing")
        batch = directory / f"batch-{len(list(directory.iterdir())):06d}.json"
        batch.write_text("\n".join(marker_of(dict(e)) for e in events) + "\n")
        return BatchResult()


class RejectingSink(Sink):
    """Test sink: refuses events whose arguments contain "bad", keeps the rest."""

    config_type = SinkConfig
    accepted: ClassVar[list[str]] = []

    async def send(self, events: Sequence[Event]) -> BatchResult:
        rejected = []
        for index, event in enumerate(events):
            marker = marker_of(dict(event))
            if "bad" in marker:
                rejected.append(Rejection(index, f"receiver refused {marker}"))
            else:
                self.accepted.append(marker)
        return BatchResult(rejected)


@pytest.fixture
async def stream(nc: NATS) -> NATS:
    await create_stream(nc)
    return nc


@pytest.fixture
def test_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers this module's sinks by `type:` name, as SINK_TYPES entries."""
    monkeypatch.setitem(SINK_TYPES, "test_directory", f"{__name__}:DirectorySink")
    monkeypatch.setitem(SINK_TYPES, "test_rejecting", f"{__name__}:RejectingSink")
    RejectingSink.accepted.clear()


def json_sink(path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "file", "type": "json_file", "options": {"path": str(path)}, **extra}


async def test_exporter_delivers_every_event_exactly_once(
    stream: NATS, nats_url: str, tmp_path: Path
) -> None:
    """Events published before and while the exporter runs are all in the file, once each."""
    out = tmp_path / "out"
    config = write_config(tmp_path / "exporter.yaml", [json_sink(out / "events.json")])
    status = await StatusCollector.subscribe(stream)
    before = [make_event(i) for i in range(300)]
    after = [make_event(i) for i in range(300, 600)]
    await publish(stream, before)
    async with running_exporter(settings_for(nats_url, config)):
        await publish(stream, after)
        await wait_until(lambda: status.sink("file").get("sent") == 600)
    lines = read_lines(out)
    assert lines == before + after  # in order, exactly once, byte-for-byte the model's JSON
    assert status.sink("file")["received"] == 600
    assert status.sink("file")["state"] == "stopped"


async def test_exporter_waits_out_a_sink_outage_and_delivers_everything(
    stream: NATS, nats_url: str, tmp_path: Path, test_sinks: None
) -> None:
    """A sink failing for longer than ack_wait gets every event exactly once when it recovers."""
    receiver = tmp_path / "receiver"
    sink = {
        "name": "flaky",
        "type": "test_directory",
        "options": {"directory": str(receiver)},
        "batch_size": 50,
        "max_inflight": 200,
        "ack_wait": 1,  # the outage outlasts it: in-progress acks must hold the messages
        "retry": {"initial_backoff": 0.05, "max_backoff": 0.2},
    }
    config = write_config(tmp_path / "exporter.yaml", [sink])
    status = await StatusCollector.subscribe(stream)
    events = [make_event(i) for i in range(500)]
    async with running_exporter(settings_for(nats_url, config)):
        await publish(stream, events)
        await wait_until(lambda: status.sink("flaky").get("retried", 0) > 0)
        await asyncio.sleep(2.5)  # down for a while, retrying
        down = status.sink("flaky")
        assert down["ack_pending"] <= 200  # bounded: max_inflight
        assert down["lag"] + down["ack_pending"] == 500  # the backlog is visible
        receiver.mkdir()
        await wait_until(lambda: status.sink("flaky").get("sent") == 500)
    delivered = [line for f in sorted(receiver.iterdir()) for line in f.read_text().split()]
    assert Counter(delivered) == Counter(marker_of(e) for e in events)


async def test_exporter_dead_letters_exactly_the_rejected_events(
    stream: NATS, nats_url: str, tmp_path: Path, test_sinks: None
) -> None:
    """Rejected and malformed messages are dead-lettered with a reason; the rest flow."""
    config = write_config(tmp_path / "exporter.yaml", [{"name": "picky", "type": "test_rejecting"}])
    letters: list[dict[str, Any]] = []

    async def on_letter(msg: Any) -> None:
        letters.append(codec.unpack(msg.data))

    await stream.subscribe(subjects.deadletter("picky"), cb=on_letter)
    status = await StatusCollector.subscribe(stream)
    events = [
        make_event(i, arguments=f"{'bad' if i % 10 == 3 else 'good'}-{i}") for i in range(100)
    ]
    await publish(stream, events)
    await stream.jetstream().publish(subjects.events(NODE, "process_exec"), b"\xc1 not msgpack")
    async with running_exporter(settings_for(nats_url, config)):
        await wait_until(lambda: len(letters) == 11 and status.sink("picky").get("sent") == 90)
        counters = status.sink("picky")
    bad = {marker_of(e) for e in events if "bad" in marker_of(e)}
    rejected = [x for x in letters if x["reason"].startswith("rejected")]
    assert {marker_of(codec.unpack(x["data"])) for x in rejected} == bad
    assert all("receiver refused" in x["reason"] for x in rejected)
    [malformed] = [x for x in letters if x["reason"].startswith("malformed")]
    assert malformed["data"] == b"\xc1 not msgpack"
    assert sorted(RejectingSink.accepted) == sorted(
        marker_of(e) for e in events if "good" in marker_of(e)
    )
    assert (counters["dead_lettered"], counters["rejected"], counters["malformed"]) == (11, 10, 1)


async def test_exporter_resumes_from_its_durable_consumer_after_cancellation(
    stream: NATS, nats_url: str, tmp_path: Path
) -> None:
    """Cancelled mid-stream and restarted: nothing lost, duplicates at most max_inflight."""
    out = tmp_path / "out"
    sink = json_sink(out / "events.json", batch_size=20, max_inflight=40, ack_wait=2)
    config = write_config(tmp_path / "exporter.yaml", [sink])
    events = [make_event(i) for i in range(2000)]
    await publish(stream, events)
    settings = settings_for(nats_url, config)
    async with running_exporter(settings) as task:
        await wait_until(lambda: (out / "events.json").exists() and len(read_lines(out)) > 200)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    first_run = len(read_lines(out))
    assert first_run < 2000, "the first run should have been interrupted mid-stream"
    status = await StatusCollector.subscribe(stream)
    async with running_exporter(settings):
        await wait_until(lambda: len({marker_of(e) for e in read_lines(out)}) == 2000)
        await wait_until(lambda: status.sink("file").get("ack_pending") == 0)
    seen = Counter(marker_of(e) for e in read_lines(out))
    assert set(seen) == {marker_of(e) for e in events}
    assert sum(n - 1 for n in seen.values()) <= 40


async def test_exporter_removing_the_output_directory_delays_but_loses_nothing(
    stream: NATS, nats_url: str, tmp_path: Path
) -> None:
    """json_file: a vanished directory is a transient error; once back, every event is written."""
    out = tmp_path / "out"
    sink = json_sink(
        out / "events.json", batch_size=10, retry={"initial_backoff": 0.05, "max_backoff": 0.1}
    )
    config = write_config(tmp_path / "exporter.yaml", [sink])
    status = await StatusCollector.subscribe(stream)
    async with running_exporter(settings_for(nats_url, config)):
        await publish(stream, [make_event(i) for i in range(50)])
        await wait_until(lambda: status.sink("file").get("sent") == 50)
        shutil.rmtree(out)
        await publish(stream, [make_event(i) for i in range(50, 100)])
        await wait_until(lambda: status.sink("file").get("retried", 0) > 0)
        out.mkdir()
        await wait_until(lambda: status.sink("file").get("sent") == 100)
    assert [marker_of(e) for e in read_lines(out)] == [f"event-{i}" for i in range(50, 100)]


async def test_exporter_applies_filters_masks_and_redaction(
    stream: NATS, nats_url: str, tmp_path: Path
) -> None:
    """allow/deny, exclude_fields and redact from the YAML shape what reaches the file."""
    out = tmp_path / "out"
    sink = json_sink(
        out / "events.json",
        allow=[{"namespace": ["shop"]}, {"binary_regex": ["^/usr/bin/ssh$"]}],
        deny=[{"binary_regex": ["cron"]}],
        exclude_fields=["process.pod.pod_labels", "parent"],
        redact=[{"regex": r"--password=(\S+)"}],
    )
    config = write_config(tmp_path / "exporter.yaml", [sink])
    status = await StatusCollector.subscribe(stream)
    events = [
        make_event(0, binary="/bin/app", arguments="--password=hunter2", namespace="shop",
                   labels={"team": "a"}),  # allowed, masked, redacted
        make_event(1, binary="/usr/sbin/cron", namespace="shop"),  # denied
        make_event(2, binary="/usr/bin/ssh", arguments="host"),  # allowed by binary
        make_event(3, binary="/bin/ls", namespace="other"),  # not allowed
    ]  # fmt: skip
    await publish(stream, events)
    async with running_exporter(settings_for(nats_url, config)):
        await wait_until(lambda: status.sink("file").get("received") == 4)
        await wait_until(lambda: status.sink("file").get("sent") == 2)
        counters = status.sink("file")
    first, second = read_lines(out)
    process = first["process_exec"]["process"]
    assert process["arguments"] == "--password=*****"
    assert process["pod"] == {"namespace": "shop", "name": "web-0"}
    assert "parent" not in first["process_exec"]
    assert second["process_exec"]["process"]["binary"] == "/usr/bin/ssh"
    assert counters["filtered"] == 2


async def test_exporter_gives_up_after_max_attempts_into_the_dead_letter_stream(
    stream: NATS, nats_url: str, tmp_path: Path, test_sinks: None
) -> None:
    """retry.max_attempts: the batch is stored in OCELLUS_DEADLETTER with the reason, then acked."""
    sink = {
        "name": "down",
        "type": "test_directory",
        "options": {"directory": str(tmp_path / "never")},
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.02, "max_attempts": 3},
    }
    config = write_config(tmp_path / "exporter.yaml", [sink])
    status = await StatusCollector.subscribe(stream)
    await publish(stream, [make_event(i) for i in range(20)])
    async with running_exporter(settings_for(nats_url, config)):
        await wait_until(lambda: status.sink("down").get("dead_lettered") == 20)
        counters = status.sink("down")
    assert (counters["sent"], counters["dropped"], counters["ack_pending"]) == (0, 0, 0)
    js = stream.jetstream()
    sub = await js.pull_subscribe(subjects.deadletter("down"), stream="OCELLUS_DEADLETTER")
    letters = [codec.unpack(m.data) for m in await sub.fetch(20, timeout=5)]
    assert len(letters) == 20
    assert all(x["reason"].startswith("gave up after 3 attempts: ") for x in letters)
    assert sorted(marker_of(codec.unpack(x["data"])) for x in letters) == sorted(
        f"event-{i}" for i in range(20)
    )
    assert {x["sink"] for x in letters} == {"down"}
