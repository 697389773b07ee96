"""The json_file sink: Tetragon's line format, rotation by size and by age
with lumberjack names, backups, gzip, permissions, and filesystem errors
as transient failures that lose nothing and duplicate nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from services.exporter.sinks.base import TransientSinkError
from services.exporter.sinks.jsonfile import JsonFileConfig, JsonFileSink, encode_line
from tests.conftest import require_root
from tests.exporter.exporter_helpers import files_in, make_event, marker_of, read_lines

BACKUP_NAME = re.compile(r"^events-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.json(\.gz)?$")


def sink_for(path: Path, **options: Any) -> JsonFileSink:
    config = JsonFileConfig.model_validate({"type": "json_file", "path": str(path), **options})
    return JsonFileSink("file", config)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[list[JsonFileSink]]:
    """Sinks made by a test, closed after it."""
    sinks: list[JsonFileSink] = []
    yield sinks
    for sink in sinks:
        await sink.close()


async def start(sinks: list[JsonFileSink], sink: JsonFileSink) -> JsonFileSink:
    await sink.start()
    sinks.append(sink)
    return sink


async def send_in_batches(sink: JsonFileSink, events: list[dict[str, Any]], size: int) -> None:
    for i in range(0, len(events), size):
        result = await sink.send(events[i : i + size])
        assert result.rejected == []


async def test_lines_are_tetragon_json_exactly(tmp_path: Path, started: list[JsonFileSink]) -> None:
    """Each line is json.dumps(event, separators=(",", ":"), ensure_ascii=False)."""
    events = [make_event(1, arguments="héllo wörld ✓"), make_event(2, namespace="ns")]
    sink = await start(started, sink_for(tmp_path / "events.json"))
    await sink.send(events)
    expected = "".join(
        json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in events
    )
    assert (tmp_path / "events.json").read_text(encoding="utf-8") == expected


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        pytest.param("ocsf", lambda d: (d["class_uid"], d["activity_id"]) == (1007, 1), id="ocsf"),
        pytest.param("ecs", lambda d: d["process"]["executable"] == "/bin/true", id="ecs"),
    ],
)
async def test_format_option_writes_ocsf_or_ecs_documents(
    tmp_path: Path, started: list[JsonFileSink], fmt: str, check: Any
) -> None:
    """format: ocsf / ecs writes one such document per line, from the Tetragon event."""
    sink = await start(started, sink_for(tmp_path / "events.json", format=fmt))
    await sink.send([make_event(1), make_event(2)])
    docs = [json.loads(line) for line in (tmp_path / "events.json").read_text().splitlines()]
    assert len(docs) == 2
    assert all(check(d) for d in docs)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("plain ascii", id="ascii"),
        pytest.param("héllo wörld ✓ 😀 漢字", id="unicode"),
        pytest.param("".join(map(chr, range(0x20))) + "\x7f", id="control-chars"),
        pytest.param('quote " backslash \\ slash /', id="escapes"),
        pytest.param("\u2028\u2029\ufeff", id="line-separators"),
        pytest.param([0, -1, 2**63, 2**64 + 7, True, False, None], id="ints-bools-null"),
        pytest.param({"nested": [{"a": [], "b": {}}]}, id="nesting"),
        pytest.param([1.5, 1e16, 1e-7, -0.0, float("inf"), float("nan")], id="floats"),
        pytest.param({1: "int key", None: "none key"}, id="non-str-keys"),
        pytest.param("\u00ca\u00cb\u00c4 ˀ˿", id="marker-bytes-in-text"),
        pytest.param(51_915, id="marker-bytes-in-int"),
    ],
)
def test_line_encoding_is_exactly_json_dumps(value: Any) -> None:
    """The fast encoder writes the bytes json.dumps(..., separators, ensure_ascii=False) does."""
    event = {"process_exec": {"process": {"arguments": value}}, "node_name": "n"}
    expected = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    assert encode_line(event) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"raw", id="bytes"),
        pytest.param(msgpack.ExtType(5, b"x"), id="msgpack-ext"),
        pytest.param(msgpack.Timestamp(1, 2), id="msgpack-timestamp"),
        pytest.param("\ud800", id="lone-surrogate"),
    ],
)
def test_line_encoding_refuses_what_json_dumps_refuses(value: Any) -> None:
    """Values a decoded message can hold that json.dumps refuses (or UTF-8 cannot hold) raise."""
    with pytest.raises((TypeError, ValueError)):
        encode_line({"x": value})


async def test_rotation_by_size_keeps_files_small_and_every_event_once(
    tmp_path: Path, started: list[JsonFileSink]
) -> None:
    """Past max_size_mb the file rotates to a lumberjack name; no file outgrows the limit."""
    limit = 20_000
    sink = await start(
        started, sink_for(tmp_path / "events.json", max_size_mb=limit / 2**20, max_backups=0)
    )
    events = [make_event(i) for i in range(1000)]
    await send_in_batches(sink, events, 64)
    files = sorted(files_in(tmp_path))
    assert len(files) > 5
    assert all(p.stat().st_size <= limit for p in files)
    assert all(BACKUP_NAME.match(p.name) for p in files if p.name != "events.json")
    assert read_lines(tmp_path) == events  # backups sort oldest first, then the current file


async def test_rotation_by_age(tmp_path: Path, started: list[JsonFileSink]) -> None:
    """A file older than max_age is rotated before the next write."""
    sink = await start(started, sink_for(tmp_path / "events.json", max_age=0.3, max_backups=0))
    await sink.send([make_event(1)])
    await sink.send([make_event(2)])
    assert len(list(files_in(tmp_path))) == 1  # young: no rotation yet
    await asyncio.sleep(0.35)
    await sink.send([make_event(3)])
    [backup] = [p for p in files_in(tmp_path) if p.name != "events.json"]
    assert BACKUP_NAME.match(backup.name)
    assert [marker_of(e) for e in read_lines(tmp_path)] == ["event-1", "event-2", "event-3"]


async def test_gzip_and_max_backups_keep_the_newest(
    tmp_path: Path, started: list[JsonFileSink]
) -> None:
    """Rotated files are gzipped; only the newest max_backups stay; what stays reads back."""
    path = tmp_path / "events.json"
    sink = await start(
        started, sink_for(path, max_size_mb=4000 / 2**20, max_backups=3, compress=True)
    )
    events = [make_event(i) for i in range(300)]
    await send_in_batches(sink, events, 10)
    await sink.close()
    backups = sorted(p for p in files_in(tmp_path) if p != path)
    assert len(backups) == 3
    assert all(p.name.endswith(".json.gz") and BACKUP_NAME.match(p.name) for p in backups)
    kept = read_lines(tmp_path)
    assert kept == events[-len(kept) :]  # the newest, in order, each once
    assert json.loads(gzip.decompress(backups[0].read_bytes()).splitlines()[0])


async def test_every_event_once_across_current_and_gzipped_backups(
    tmp_path: Path, started: list[JsonFileSink]
) -> None:
    """With enough backups, all events are in current + rotated (gzip) files exactly once."""
    path = tmp_path / "events.json"
    sink = await start(
        started, sink_for(path, max_size_mb=8000 / 2**20, max_backups=0, compress=True)
    )
    events = [make_event(i) for i in range(500)]
    await send_in_batches(sink, events, 33)
    await sink.close()
    assert not [p for p in files_in(tmp_path) if p.name.endswith((".tmp",))]
    assert read_lines(tmp_path) == events


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param(None, 0o600, id="default-0600"),
        pytest.param("0640", 0o640, id="octal-string"),
        pytest.param(0o644, 0o644, id="int"),
    ],
)
async def test_file_permissions(
    mode: Any, expected: int, tmp_path: Path, started: list[JsonFileSink]
) -> None:
    """Current, rotated and gzipped files get the configured mode, whatever the umask."""
    options: dict[str, Any] = {"max_size_mb": 2000 / 2**20, "compress": True, "max_backups": 0}
    if mode is not None:
        options["mode"] = mode
    old_umask = os.umask(0o077)
    try:
        sink = await start(started, sink_for(tmp_path / "events.json", **options))
        await send_in_batches(sink, [make_event(i) for i in range(100)], 10)
        await sink.close()
    finally:
        os.umask(old_umask)
    files = list(files_in(tmp_path))
    assert len(files) > 2
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(expected)}


async def test_missing_directory_is_transient_and_the_retry_writes_once(
    tmp_path: Path, started: list[JsonFileSink]
) -> None:
    """The directory removed: TransientSinkError; recreated: the same batch is written once."""
    out = tmp_path / "out"
    sink = await start(started, sink_for(out / "events.json"))
    await sink.send([make_event(1)])
    shutil.rmtree(out)
    batch = [make_event(2), make_event(3)]
    with pytest.raises(TransientSinkError, match="No such file or directory"):
        await sink.send(batch)
    out.mkdir()
    await sink.send(batch)
    assert [marker_of(e) for e in read_lines(out)] == ["event-2", "event-3"]


async def test_unwritable_location_is_transient(tmp_path: Path) -> None:
    """A path whose directory is a regular file cannot be opened: a TransientSinkError."""
    (tmp_path / "not-a-dir").write_text("")
    sink = sink_for(tmp_path / "not-a-dir" / "events.json")
    with pytest.raises(TransientSinkError, match="sink 'file'"):
        await sink.start()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that fills up (root only)."""
    require_root()
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


async def test_full_disk_is_transient_and_leaves_no_partial_batch(
    tiny_fs: Path, started: list[JsonFileSink]
) -> None:
    """ENOSPC mid-batch: the partial write is cut; once space is back, the batch lands once."""
    sink = await start(started, sink_for(tiny_fs / "events.json", fsync="never"))
    filler = tiny_fs / "filler"
    filler.write_bytes(b"x" * 60_000)
    batch = [make_event(i) for i in range(40)]  # ~12 KiB: does not fit
    with pytest.raises(TransientSinkError, match="No space left"):
        await sink.send(batch)
    assert (tiny_fs / "events.json").stat().st_size == 0
    filler.unlink()
    await sink.send(batch)
    assert [e for e in read_lines(tiny_fs)] == batch


async def test_half_written_last_line_is_cut_on_start(tmp_path: Path) -> None:
    """A line a killed exporter left half-written (never acked) is removed at start."""
    path = tmp_path / "events.json"
    whole = json.dumps(make_event(1), separators=(",", ":")) + "\n"
    path.write_text(whole + '{"process_exec":{"proc')
    sink = sink_for(path)
    await sink.start()
    await sink.send([make_event(2)])
    await sink.close()
    assert [marker_of(e) for e in read_lines(tmp_path)] == ["event-1", "event-2"]


async def test_unencodable_event_is_rejected_not_retried(
    tmp_path: Path, started: list[JsonFileSink]
) -> None:
    """An event JSON cannot encode is rejected (for dead-lettering); the rest are written."""
    bad = make_event(2)
    bad["process_exec"]["process"]["arguments"] = b"\xff raw bytes"
    sink = await start(started, sink_for(tmp_path / "events.json"))
    result = await sink.send([make_event(1), bad, make_event(3)])
    assert [r.index for r in result.rejected] == [1]
    assert "not JSON-serialisable" in result.rejected[0].reason
    assert [marker_of(e) for e in read_lines(tmp_path)] == ["event-1", "event-3"]
