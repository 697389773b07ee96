"""Decoding messages into events (services/exporter/decoding.py): the fast path
accepts and refuses exactly what schemas.codec.unpack does, says which events
are JSON-plain, and a JSON-plain event is written byte for byte as json.dumps
writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from schemas import codec
from services.exporter.decoding import MAX_DEPTH, decode_event
from services.exporter.shape import MalformedEventError
from services.exporter.sinks.base import EventBatch
from services.exporter.sinks.jsonfile import JsonFileConfig, JsonFileSink
from tests.exporter.exporter_helpers import make_event


def message(arguments: Any) -> bytes:
    """An event message whose process arguments are ``arguments``."""
    event = make_event(1)
    event["process_exec"]["process"]["arguments"] = arguments
    return codec.pack(event)


def nested(depth: int) -> Any:
    """``depth`` levels of {"x": [...]}, two containers each."""
    value: Any = "leaf"
    for _ in range(depth):
        value = {"x": [value]}
    return value


# process_exec and process are two of the MAX_DEPTH container levels the fast
# path takes; what is left for the arguments holds this many nested() levels.
ROOM = (MAX_DEPTH - 2) // 2


TRICKY_STRINGS = [
    pytest.param("héllo wörld ✓ 😀 漢字", id="unicode"),
    pytest.param("".join(map(chr, range(0x20))) + "\x7f", id="control-chars"),
    pytest.param('quote " backslash \\ slash /', id="escapes"),
    pytest.param("\u2028\u2029\ufeff", id="line-separators"),
    pytest.param("\u00ca\u00cb\u00c4 ˀ˿", id="msgpack-marker-bytes-in-text"),
]


@pytest.mark.parametrize(
    ("arguments", "plain"),
    [
        *[pytest.param(p.values[0], True, id=p.id) for p in TRICKY_STRINGS],
        pytest.param([0, -1, 2**63, 2**64 - 1, -(2**63), True, None], True, id="ints-bools-nil"),
        pytest.param(51_915, True, id="int-holding-marker-bytes"),
        pytest.param(nested(ROOM), True, id="deep"),
        pytest.param(nested(ROOM + 1), False, id="deeper-than-the-fast-type"),
        pytest.param([1.5, 1e16], False, id="floats"),
        pytest.param(b"raw", False, id="binary"),
        pytest.param(msgpack.ExtType(5, b"x"), False, id="extension"),
    ],
)
def test_decode_gives_codecs_event_and_whether_it_is_json_plain(
    arguments: Any, plain: bool
) -> None:
    """Same event as codec.unpack; JSON-plain exactly when only plain values are in it."""
    data = message(arguments)
    event, json_plain = decode_event(data)
    expected = codec.unpack(data)
    expected.pop(codec.VERSION_KEY)
    assert event == expected
    assert json_plain is plain


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"\xc1", "invalid msgpack", id="not-msgpack"),
        pytest.param(msgpack.packb([1, 2]), "expected a map", id="not-a-map"),
        pytest.param(msgpack.packb({"v": 2, "node_name": "n"}), "schema version", id="version"),
        pytest.param(msgpack.packb({"node_name": "n"}), "schema version", id="no-version"),
        pytest.param(codec.pack({"x": {1: "int key"}}), "invalid msgpack", id="int-key"),
        pytest.param(codec.pack({"x": "y" * (8 << 20)}), "larger than", id="too-big"),
        pytest.param(codec.pack({"node_name": "n", "time": "t"}), "event kind", id="no-kind"),
    ],
)
def test_decode_refuses_what_codec_refuses(data: bytes, reason: str) -> None:
    """A message that is not an event is MalformedEventError, with the codec's reason."""
    with pytest.raises(MalformedEventError, match=reason):
        decode_event(data)


@pytest.mark.parametrize("arguments", TRICKY_STRINGS)
async def test_json_plain_events_are_written_as_json_dumps_writes_them(
    arguments: str, tmp_path: Path
) -> None:
    """The json_file sink's fast path for JSON-plain events writes json.dumps's bytes."""
    event, json_plain = decode_event(message(arguments))
    assert json_plain
    config = JsonFileConfig.model_validate({"type": "json_file", "path": str(tmp_path / "e.json")})
    sink = JsonFileSink("file", config)
    await sink.start()
    await sink.send(EventBatch([event], [True]))
    await sink.close()
    expected = json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
    assert (tmp_path / "e.json").read_bytes() == expected.encode()
