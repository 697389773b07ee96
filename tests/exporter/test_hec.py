"""The Splunk HEC sink against an HEC endpoint (tests/http_receivers.py): batches
with the token, retry on 503, only the bad events rejected on 400, no retry on
a refused token."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from services.exporter.sinks import sink_class
from services.exporter.sinks.base import TransientSinkError
from services.exporter.sinks.hec import SplunkHecConfig, SplunkHecSink
from tests.exporter.siem_samples import NODE, T0, exec_event, kprobe_event, process

if TYPE_CHECKING:
    from tests.http_receivers import HecReceiver


TOKEN = "00000000-1111-2222-3333-444444444444"  # noqa: S105 (the receiver's test token)
BAD_MARKER = "REJECT-ME"  # tests/http_receivers.py refuses events holding it


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OCELLUS_TEST_HEC_TOKEN", TOKEN)
    return "OCELLUS_TEST_HEC_TOKEN"


def hec_sink(url: str, token_env: str, **options: Any) -> SplunkHecSink:
    config = SplunkHecConfig(url=url, token={"env": token_env}, **options)
    return SplunkHecSink("splunk", config)


def marked(n: int, bad: bool = False) -> dict[str, Any]:
    tag = f"{BAD_MARKER}-" if bad else ""
    return exec_event(process(arguments=f"{tag}n={n}-{uuid.uuid4().hex[:6]}"))


@pytest.mark.parametrize("source", ["env", "file"])
async def test_batch_arrives_in_one_request_with_the_token(
    hec_receiver: HecReceiver, token_env: str, tmp_path: Path, source: str
) -> None:
    """One request per batch, ``Authorization: Splunk <token>``, HEC envelopes."""
    if source == "env":
        config = SplunkHecConfig(url=hec_receiver.url, token={"env": token_env})
    else:
        (tmp_path / "token").write_text(TOKEN + "\n")
        config = SplunkHecConfig(url=hec_receiver.url, token={"file": str(tmp_path / "token")})
    sink = SplunkHecSink("splunk", config)
    await sink.start()
    events = [marked(n) for n in range(3)]
    assert (await sink.send(events)).rejected == []
    await sink.close()
    assert hec_receiver.auth_headers == [f"Splunk {TOKEN}"]
    [batch] = hec_receiver.batches
    assert [obj["event"] for obj in batch] == events
    for obj in batch:
        assert obj["time"] == pytest.approx(T0 / 1e9, abs=1e-6)
        assert (obj["host"], obj["source"], obj["sourcetype"]) == (
            NODE,
            "ocellus",
            "ocellus:tetragon",
        )
        assert "index" not in obj


async def test_envelope_options(hec_receiver: HecReceiver, token_env: str) -> None:
    """sourcetype, source, index and host are configurable."""
    sink = hec_sink(
        hec_receiver.url,
        token_env,
        sourcetype="tetragon:json",
        source="edge",
        index="security",
        host="collector-1",
    )
    await sink.send([exec_event()])
    await sink.close()
    [obj] = hec_receiver.events
    assert (obj["sourcetype"], obj["source"], obj["index"], obj["host"]) == (
        "tetragon:json",
        "edge",
        "security",
        "collector-1",
    )


async def test_busy_is_transient_then_delivered(hec_receiver: HecReceiver, token_env: str) -> None:
    """503 Server is busy raises TransientSinkError; the retried batch is delivered."""
    hec_receiver.busy_requests = 1
    sink = hec_sink(hec_receiver.url, token_env)
    events = [marked(n) for n in range(4)]
    with pytest.raises(TransientSinkError, match="HEC 503: Server is busy"):
        await sink.send(events)
    assert hec_receiver.events == []
    assert (await sink.send(events)).rejected == []
    await sink.close()
    assert [obj["event"] for obj in hec_receiver.events] == events


async def test_invalid_events_rejected_and_the_rest_delivered(
    hec_receiver: HecReceiver, token_env: str
) -> None:
    """A 400 for one event rejects only the bad events; every good one arrives."""
    bad = {2, 5}
    events = [marked(n, bad=n in bad) for n in range(8)]
    sink = hec_sink(hec_receiver.url, token_env)
    result = await sink.send(events)
    await sink.close()
    assert sorted(r.index for r in result.rejected) == sorted(bad)
    assert all("Invalid data format" in r.reason for r in result.rejected)
    good = [e for n, e in enumerate(events) if n not in bad]
    delivered = [obj["event"] for obj in hec_receiver.events]
    assert sorted(map(str, delivered)) == sorted(map(str, good))
    assert hec_receiver.requests < len(events) + 4  # bisected, not one request per event


async def test_request_level_400_rejects_batch_without_bisecting(
    hec_receiver: HecReceiver, token_env: str
) -> None:
    """An index the token may not write is the request's fault: reject, no retries."""
    sink = hec_sink(hec_receiver.url, token_env, index="forbidden")
    result = await sink.send([marked(n) for n in range(4)])
    await sink.close()
    assert [r.index for r in result.rejected] == [0, 1, 2, 3]
    assert "Incorrect index" in result.rejected[0].reason
    assert hec_receiver.requests == 1


async def test_refused_token_rejects_batch(
    hec_receiver: HecReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """403 Invalid token is not retried: the batch is rejected (to the dead-letter
    subject), and the reason does not quote the token."""
    monkeypatch.setenv("OCELLUS_TEST_HEC_TOKEN", "wrong-token")
    sink = hec_sink(hec_receiver.url, "OCELLUS_TEST_HEC_TOKEN")
    result = await sink.send([exec_event(), kprobe_event()])
    await sink.close()
    assert [r.index for r in result.rejected] == [0, 1]
    assert all(r.reason == "HEC 403: Invalid token (code 4)" for r in result.rejected)
    assert hec_receiver.requests == 1


async def test_unreachable_endpoint_is_transient(token_env: str) -> None:
    """A refused connection raises TransientSinkError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = hec_sink(f"http://127.0.0.1:{port}", token_env, timeout=2)
    with pytest.raises(TransientSinkError, match="POST"):
        await sink.send([exec_event()])
    await sink.close()


def test_missing_token_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset token variable fails config validation, naming the variable."""
    unset = "OCELLUS_TEST_NO_TOKEN"
    monkeypatch.delenv(unset, raising=False)
    with pytest.raises(ValidationError, match=f"{unset} is not set"):
        SplunkHecConfig(url="http://127.0.0.1:1", token={"env": unset})


def test_token_not_in_config_repr(token_env: str) -> None:
    """The token never shows in the config's repr or dump."""
    config = SplunkHecConfig(url="http://127.0.0.1:1", token={"env": token_env})
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())
    assert config.authorization == f"Splunk {TOKEN}"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"url": "http://x"}, id="no-token"),
        pytest.param({"url": "http://x", "token": {"env": "A", "file": "/f"}}, id="two-sources"),
        pytest.param({"url": "http://x", "token_env": "A"}, id="replaced-token-env"),
        pytest.param({"url": "splunk:8088", "token": "t"}, id="url-without-scheme"),
        pytest.param(
            {"url": "https://x", "token": "t", "tls_ca_file": "/nonexistent"}, id="missing-ca"
        ),
    ],
)
def test_config_rejects(options: dict[str, Any]) -> None:
    """Token source and URL are validated."""
    with pytest.raises(ValidationError):
        SplunkHecConfig(**options)


def test_registered_as_splunk_hec() -> None:
    """The `splunk_hec` type resolves to SplunkHecSink."""
    assert sink_class("splunk_hec") is SplunkHecSink
