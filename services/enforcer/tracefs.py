"""Tracepoint formats from tracefs: the id a BPF program sees in
``common_type`` and every field's offset, size and C type. Tracepoint args
are read at these offsets, so they are right for the running kernel
whatever headers BCC compiled against."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import OcellusError

TRACEFS = Path("/sys/kernel/tracing")
_FIELD = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d)"
)


class TracepointUnavailableError(OcellusError):
    """The kernel has no such tracepoint (or tracefs is not mounted)."""

    def __init__(self, subsystem: str, event: str, reason: str) -> None:
        super().__init__(f"tracepoint {subsystem}:{event} is not available: {reason}")
        self.subsystem = subsystem
        self.event = event


@dataclass(frozen=True, slots=True)
class Field:
    index: int  # position in the format, the four common_* fields included
    name: str
    c_type: str  # "const char *", "int", "__data_loc char[]", "struct sockaddr *", ...
    offset: int
    size: int
    signed: bool

    @property
    def is_pointer(self) -> bool:
        return self.c_type.rstrip().endswith("*")

    @property
    def is_data_loc(self) -> bool:
        return self.c_type.startswith("__data_loc")


@dataclass(frozen=True, slots=True)
class TracepointFormat:
    subsystem: str
    event: str
    id: int  # common_type
    fields: tuple[Field, ...]

    def field(self, index: int) -> Field | None:
        return self.fields[index] if 0 <= index < len(self.fields) else None


def parse_format(subsystem: str, event: str, text: str) -> TracepointFormat:
    id_match = re.search(r"^ID:\s*(\d+)", text, re.M)
    if id_match is None:
        raise TracepointUnavailableError(subsystem, event, "format has no ID")
    fields = []
    for i, m in enumerate(_FIELD.finditer(text)):
        decl = m["decl"].strip()
        # "const char * filename", "char comm[16]", "__data_loc char[] name"
        name_match = re.search(r"(\w+)(\[\d*\])?$", decl)
        name = name_match.group(1) if name_match else decl
        c_type = decl[: name_match.start()].strip() if name_match else decl
        if name_match and name_match.group(2):
            c_type += name_match.group(2)
        fields.append(Field(i, name, c_type, int(m["offset"]), int(m["size"]), m["signed"] == "1"))
    return TracepointFormat(subsystem, event, int(id_match.group(1)), tuple(fields))


def read_format(subsystem: str, event: str, tracefs: Path = TRACEFS) -> TracepointFormat:
    if not re.fullmatch(r"\w+", subsystem) or not re.fullmatch(r"\w+", event):
        raise TracepointUnavailableError(subsystem, event, "not a tracepoint name")
    path = tracefs / "events" / subsystem / event / "format"
    try:
        text = path.read_text()
    except FileNotFoundError:
        if not (tracefs / "events").is_dir():
            raise TracepointUnavailableError(
                subsystem, event, f"tracefs not mounted at {tracefs}"
            ) from None
        raise TracepointUnavailableError(
            subsystem, event, "no such tracepoint in this kernel"
        ) from None
    except OSError as e:
        raise TracepointUnavailableError(subsystem, event, e.strerror or str(e)) from e
    return parse_format(subsystem, event, text)
