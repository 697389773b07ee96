"""`json_file`: one event per line in Tetragon's export format, exactly
``json.dumps(event, separators=(",", ":"), ensure_ascii=False)``, in a file
rotated by size and age like Tetragon's `--export-filename` (see
rotating_file.py for naming, backups and gzip).

A batch is written (and by default fdatasync'ed) before `send` returns, so
an acked event is on disk. Any filesystem error (directory gone, read-only,
disk full) is a TransientSinkError: the batch is retried, not lost. An
event that cannot be JSON-encoded is rejected (dead-lettered), not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from pydantic import BeforeValidator, Field

from services.exporter.formats.ecs import to_ecs
from services.exporter.formats.ocsf import to_ocsf
from services.exporter.sinks.base import (
    BatchResult,
    Event,
    Rejection,
    Sink,
    SinkConfig,
    TransientSinkError,
    json_plain_flags,
)
from services.exporter.sinks.rotating_file import RotatingFile

T = TypeVar("T")

# The line format is json.dumps(event, separators=(",", ":"), ensure_ascii=False).
# msgspec writes the same bytes for dicts with str keys, lists, str, int, bool
# and None (checked in the tests) at a tenth of the CPU (2.7 µs vs 19-28 µs for
# a 2 KB event, measured). It writes floats differently (1e16, not 1e+16) and
# encodes bytes where json.dumps refuses them, so an event that may hold either
# takes the stdlib path; so does anything msgspec cannot encode (non-str keys,
# huge ints, msgpack ext values). That covers every value a decoded message can
# hold; Tetragon's events hold none of the exceptions.
_STDLIB = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()
# msgpack type bytes of float32/64 and bin8/16/32. They also occur inside other
# values (an int, a UTF-8 letter): then the exact, slower path runs for nothing.
_NOT_PLAIN_JSON = (b"\xca", b"\xcb", b"\xc4", b"\xc5", b"\xc6")


def encode_line(event: Any) -> bytes:
    """One line of Tetragon's export format, newline included; TypeError or
    ValueError when json.dumps would raise."""
    try:
        packed = _MSGPACK.encode(event)
        if not any(marker in packed for marker in _NOT_PLAIN_JSON):
            return _JSON.encode(event) + b"\n"
    except (TypeError, OverflowError, msgspec.EncodeError):
        pass  # json.dumps decides: it writes some of these, refuses others
    return _STDLIB.encode(event).encode() + b"\n"


_SHAPES: dict[str, Callable[[Event], Any]] = {
    "tetragon": lambda event: event,
    "ocsf": to_ocsf,
    "ecs": to_ecs,
}


def _octal(value: Any) -> Any:
    # YAML 1.1 reads `0640` as octal already; "0640" and "0o640" are octal too.
    if isinstance(value, str):
        try:
            return int(value.removeprefix("0o"), 8)
        except ValueError:
            raise ValueError(f"{value!r} is not an octal file mode") from None
    return value


FileMode = Annotated[int, BeforeValidator(_octal), Field(ge=0, le=0o777)]


class JsonFileConfig(SinkConfig):
    path: Path
    max_size_mb: float = Field(10.0, ge=0, description="rotate past this size; 0: never")
    max_age: float = Field(0.0, ge=0, description="rotate a file this many seconds old; 0: never")
    max_backups: int = Field(5, ge=0, description="rotated files kept; 0: all")
    compress: bool = Field(False, description="gzip rotated files")
    mode: FileMode = Field(0o600, description="permissions of the files")
    fsync: Literal["batch", "never"] = Field(
        "batch", description="batch: fdatasync before a batch is acked; never: leave it to the OS"
    )
    format: Literal["tetragon", "ocsf", "ecs"] = Field(
        "tetragon",
        description="tetragon: the event as exported; ocsf: OCSF 1.3 (Process Activity 1007, "
        "Detection Finding 2004); ecs: an Elastic Common Schema document",
    )


class JsonFileSink(Sink):
    config_type = JsonFileConfig
    # Each send ends in an fdatasync (~1-4 ms here, whatever the size) that the
    # next batch would otherwise wait for: batches queued meanwhile share one.
    coalesce = True

    def __init__(self, name: str, config: SinkConfig) -> None:
        super().__init__(name, config)
        if not isinstance(config, JsonFileConfig):
            raise TypeError(f"sink {name!r}: expected JsonFileConfig, got {type(config).__name__}")
        self.options = config
        self._shape: Callable[[Event], Any] = _SHAPES[config.format]
        self._file = RotatingFile(
            config.path,
            max_bytes=int(config.max_size_mb * 1024 * 1024),
            max_age=config.max_age,
            max_backups=config.max_backups,
            compress=config.compress,
            mode=config.mode,
            fsync=config.fsync == "batch",
        )

    async def start(self) -> None:
        await self._blocking(self._file.open)

    async def send(self, events: Sequence[Event]) -> BatchResult:
        # Encoding holds the GIL wherever it runs, so it runs here (a thread
        # would only add hand-offs); writing and fsync block, so they do not.
        lines: list[bytes] = []
        rejected: list[Rejection] = []
        # A JSON-plain event as exported needs no check: the core knows it from
        # decoding (saves ~4 µs of ~7 per 2 KB event). OCSF/ECS documents are new.
        plain = json_plain_flags(events) if self.options.format == "tetragon" else None
        for index, event in enumerate(events):
            if plain is not None and plain[index]:
                lines.append(_JSON.encode(event) + b"\n")
                continue
            try:
                lines.append(encode_line(self._shape(event)))
            except (TypeError, ValueError) as e:  # UnicodeEncodeError is a ValueError
                rejected.append(Rejection(index, f"not JSON-serialisable: {e}"))
        await self._blocking(lambda: self._file.write_lines(lines))
        return BatchResult(rejected)

    async def close(self) -> None:
        # Closing: what was acked was synced already.
        with contextlib.suppress(TransientSinkError):
            await self._blocking(self._file.close)

    async def _blocking(self, call: Callable[[], T]) -> T:
        # Writes and fsync block: keep them off the event loop.
        try:
            return await asyncio.to_thread(call)
        except OSError as e:
            raise TransientSinkError(self.name, f"{self.options.path}: {e.strerror or e}") from e
