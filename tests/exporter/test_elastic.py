"""The Elasticsearch sink against a ``_bulk`` endpoint (tests/http_receivers.py):
index template at start, ECS documents created under stable ids, per-item 4xx
rejected, 429 and 5xx transient, retries idempotent."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from services.exporter.formats import ecs_mappings, to_ecs
from services.exporter.sinks import sink_class
from services.exporter.sinks.base import TransientSinkError
from services.exporter.sinks.elastic import ElasticsearchConfig, ElasticsearchSink
from tests.exporter.siem_samples import NODE, exec_event, exit_event, kprobe_event, process

if TYPE_CHECKING:
    from tests.http_receivers import BulkReceiver


USER, PASSWORD = "ocellus", "s3cret=pass"  # the receiver's test credentials
BAD_MARKER, THROTTLE_MARKER = "REJECT-ME", "THROTTLE-ME"  # see tests/http_receivers.py
DAILY_INDEX = "ocellus-2023.11.14"  # the sample events' UTC date


@pytest.fixture
def password_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OCELLUS_TEST_ES_PASSWORD", PASSWORD)
    return "OCELLUS_TEST_ES_PASSWORD"


def es_sink(url: str, password_env: str, **options: Any) -> ElasticsearchSink:
    password = {"env": password_env}
    config = ElasticsearchConfig(url=url, username=USER, password=password, **options)
    return ElasticsearchSink("es", config)


def with_args(pid: int, arguments: str) -> dict[str, Any]:
    """A distinct exec (its own pid, so its own exec_id and document id)."""
    return exec_event(process(pid=pid, arguments=arguments))


@pytest.mark.parametrize(
    ("mode", "patterns", "data_stream"),
    [
        pytest.param("daily", ["ocellus-*"], False, id="daily"),
        pytest.param("data_stream", ["ocellus"], True, id="data-stream"),
    ],
)
async def test_start_installs_index_template(
    bulk_receiver: BulkReceiver,
    password_env: str,
    mode: str,
    patterns: list[str],
    data_stream: bool,
) -> None:
    """start() PUTs the template with the ECS mappings for the chosen index mode."""
    sink = es_sink(bulk_receiver.url, password_env, index_mode=mode)
    await sink.start()
    await sink.close()
    template = bulk_receiver.templates["ocellus"]
    assert template["index_patterns"] == patterns
    assert template["template"]["mappings"] == ecs_mappings()
    assert template["priority"] == 200
    assert ("data_stream" in template) is data_stream


async def test_documents_indexed_under_stable_ids(
    bulk_receiver: BulkReceiver, password_env: str
) -> None:
    """Each event becomes its ECS document in the daily index, _id = event.id."""
    events = [exec_event(), exit_event(status=1), kprobe_event()]
    sink = es_sink(bulk_receiver.url, password_env)
    await sink.start()
    assert (await sink.send(events)).rejected == []
    await sink.close()
    stored = bulk_receiver.indices[DAILY_INDEX]
    expected = [to_ecs(event) for event in events]
    assert stored == {doc["event"]["id"]: doc for doc in expected}
    assert {doc["host"]["name"] for doc in stored.values()} == {NODE}


async def test_item_400_rejected_others_indexed(
    bulk_receiver: BulkReceiver, password_env: str
) -> None:
    """A document Elasticsearch cannot parse is rejected with its reason."""
    events = [with_args(1, "a"), with_args(2, BAD_MARKER), with_args(3, "c")]
    sink = es_sink(bulk_receiver.url, password_env)
    result = await sink.send(events)
    await sink.close()
    assert [r.index for r in result.rejected] == [1]
    assert "document_parsing_exception" in result.rejected[0].reason
    assert len(bulk_receiver.indices[DAILY_INDEX]) == 2


async def test_item_429_transient_and_retry_is_idempotent(
    bulk_receiver: BulkReceiver, password_env: str
) -> None:
    """A throttled item fails the batch transiently; the retry creates only what
    is missing (the rest answer 409, counted as delivered): one copy of each."""
    events = [with_args(1, "a"), with_args(2, THROTTLE_MARKER), with_args(3, "c")]
    sink = es_sink(bulk_receiver.url, password_env)
    with pytest.raises(TransientSinkError, match="1 of 3 items: 429"):
        await sink.send(events)
    assert len(bulk_receiver.indices[DAILY_INDEX]) == 2
    assert (await sink.send(events)).rejected == []
    await sink.close()
    assert sorted(bulk_receiver.indices[DAILY_INDEX]) == sorted(
        to_ecs(e)["event"]["id"] for e in events
    )


async def test_unavailable_cluster_is_transient(
    bulk_receiver: BulkReceiver, password_env: str
) -> None:
    """A 503 for the whole request raises TransientSinkError; the retry lands."""
    bulk_receiver.unavailable_requests = 1
    sink = es_sink(bulk_receiver.url, password_env)
    with pytest.raises(TransientSinkError, match="_bulk: 503"):
        await sink.send([exec_event()])
    assert (await sink.send([exec_event()])).rejected == []
    await sink.close()
    assert len(bulk_receiver.documents) == 1


async def test_wrong_password_is_transient_not_rejected(
    bulk_receiver: BulkReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad credentials hold the events back (transient) instead of dead-lettering."""
    monkeypatch.setenv("OCELLUS_TEST_ES_PASSWORD", "wrong")
    sink = es_sink(bulk_receiver.url, "OCELLUS_TEST_ES_PASSWORD")
    with pytest.raises(TransientSinkError, match="401 security_exception"):
        await sink.start()
    with pytest.raises(TransientSinkError, match="_bulk: 401"):
        await sink.send([exec_event()])
    await sink.close()
    assert bulk_receiver.documents == []


async def test_api_key_from_file(bulk_receiver: BulkReceiver, tmp_path: Path) -> None:
    """An API key from a file is sent as ``Authorization: ApiKey <key>``."""
    key = base64.b64encode(b"id:secret").decode()
    bulk_receiver.authorization = f"ApiKey {key}"
    (tmp_path / "api-key").write_text(key + "\n")
    api_key = {"file": str(tmp_path / "api-key")}
    config = ElasticsearchConfig(url=bulk_receiver.url, api_key=api_key)
    sink = ElasticsearchSink("es", config)
    await sink.start()
    assert (await sink.send([exec_event()])).rejected == []
    await sink.close()
    assert len(bulk_receiver.documents) == 1


async def test_data_stream_needs_timestamp(bulk_receiver: BulkReceiver, password_env: str) -> None:
    """In a data stream a document without @timestamp is rejected, the rest created."""
    sink = es_sink(bulk_receiver.url, password_env, index_mode="data_stream", index="ocellus")
    await sink.start()
    masked = {"process_exec": {"process": {"pid": 7}}, "node_name": NODE}  # time masked away
    result = await sink.send([exec_event(), masked])
    await sink.close()
    assert [r.index for r in result.rejected] == [1]
    assert list(bulk_receiver.indices) == ["ocellus"]


async def test_unformattable_event_rejected_without_request(
    bulk_receiver: BulkReceiver, password_env: str
) -> None:
    """A mapping with no event kind is rejected locally; nothing else to send."""
    sink = es_sink(bulk_receiver.url, password_env)
    result = await sink.send([{"node_name": NODE}])
    await sink.close()
    assert [r.index for r in result.rejected] == [0]
    assert bulk_receiver.bulk_requests == 0


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"username": "u"}, id="username-without-password"),
        pytest.param({"password": "p"}, id="password-without-username"),
        pytest.param({"username": "u", "password": "p", "api_key": "k"}, id="both-credentials"),
        pytest.param({"username": "u", "password_env": "P"}, id="replaced-password-env"),
        pytest.param({"api_key_file": "/k"}, id="replaced-api-key-file"),
        pytest.param({"index": "Ocellus"}, id="uppercase-index"),
        pytest.param({"tls_ca_file": "/nonexistent/ca.pem"}, id="missing-ca"),
    ],
)
def test_config_rejects(options: dict[str, Any]) -> None:
    """Credentials and index names are validated."""
    with pytest.raises(ValidationError):
        ElasticsearchConfig(url="http://es:9200", **options)


def test_registered_as_elasticsearch() -> None:
    """The `elasticsearch` type resolves to ElasticsearchSink."""
    assert sink_class("elasticsearch") is ElasticsearchSink
