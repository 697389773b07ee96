"""The wire codec: msgpack maps that carry a schema version.

Every message on the bus is one msgpack map with the key ``v``. Raw
sensor output is a *batch* (many records of one type in one message, so
the per-message cost of NATS is paid once per batch); enriched events and
status heartbeats are single maps.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

SCHEMA_VERSION = 1
VERSION_KEY = "v"


class DecodeError(ValueError):
    """A message that is not a well-formed Ocellus message."""

    def __init__(self, reason: str, *, size: int) -> None:
        super().__init__(f"{reason} ({size} bytes)")
        self.reason = reason
        self.size = size


_packers = threading.local()  # a Packer is not thread-safe


def pack(body: dict[str, Any]) -> bytes:
    """Pack a map, stamping the schema version. One Packer per thread, reused:
    packb() builds one per call (~0.5 µs of the ~3 µs an enriched event takes)."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack({VERSION_KEY: SCHEMA_VERSION, **body})  # type: ignore[no-any-return]


def unpack(data: bytes, *, max_size: int = 8 * 1024 * 1024) -> dict[str, Any]:
    """Unpack and check the version; anything else raises DecodeError."""
    if len(data) > max_size:
        raise DecodeError(f"message larger than {max_size} bytes", size=len(data))
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:
        raise DecodeError(f"invalid msgpack: {e}", size=len(data)) from e
    if not isinstance(body, dict):
        raise DecodeError(f"expected a map, got {type(body).__name__}", size=len(data))
    version = body.get(VERSION_KEY)
    if version != SCHEMA_VERSION:
        raise DecodeError(f"unsupported schema version {version!r}", size=len(data))
    return body
