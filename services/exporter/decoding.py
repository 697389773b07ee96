"""Decoding a message into an event, fast, and knowing whether the event is
*JSON-plain*: maps with string keys, arrays, strings, integers, booleans and
nil only. For those, msgspec's JSON encoder writes exactly the bytes of
``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` (checked in
the tests), so a sink may take the fast encoder without checking each event.

The fast path is msgspec decoding against a type that admits only those
values (to ``MAX_DEPTH`` levels of nesting): 2-3x cheaper than msgpack's
``unpackb`` for a 2 KB event, and a message it refuses (a float, binary, an
extension type, a non-string key, deeper nesting) is not an error: it goes
the exact way, ``schemas.codec.unpack``, which decides whether it is
malformed and gives the same errors as before. Enriched events are always
JSON-plain, so the exact way is the exception.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from schemas import codec
from services.exporter.shape import Event, MalformedEventError, check_event

MAX_SIZE = 8 * 1024 * 1024  # codec.unpack's default limit
MAX_DEPTH = 12  # Tetragon events nest 8 levels at most (ancestors[].pod.container.image)

# msgspec takes no recursive type alias on Python 3.11, so the type is unrolled.
_Scalar = Union[str, int, bool, None]  # noqa: UP007 (a runtime value, not an annotation)
_plain: Any = _Scalar
for _ in range(MAX_DEPTH):
    _plain = Union[dict[str, _plain], list[_plain], _Scalar]  # noqa: UP007 (as above)
_FAST = msgspec.msgpack.Decoder(dict[str, _plain])


def decode_event(data: bytes) -> tuple[Event, bool]:
    """The event in a message and whether it is JSON-plain; MalformedEventError
    (a ValueError) if the message is not an event."""
    body: dict[str, Any] | None = None
    if len(data) <= MAX_SIZE:
        try:
            body = _FAST.decode(data)
        except msgspec.DecodeError:  # also ValidationError: not plain, or not msgpack
            body = None
    plain = body is not None and body.get(codec.VERSION_KEY) == codec.SCHEMA_VERSION
    if body is None or not plain:
        try:
            body = codec.unpack(data)
        except codec.DecodeError as e:
            raise MalformedEventError(str(e)) from e
    body.pop(codec.VERSION_KEY, None)
    check_event(body)
    return body, plain
