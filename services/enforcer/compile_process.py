"""Process selectors of one selector (matchBinaries, matchPIDs, matchNamespaces)
→ the filters the generic hook engine evaluates before a slot's args
(services/sensor/proc_records.py, bpf/lib/proc_select.h).

Semantics are Tetragon's:
- matchBinaries compares the path the process was exec'd by (execve's
  filename; /proc/<pid>/exe for processes older than the sensor). In/NotIn
  take whole paths, Prefix/Postfix and their negations the start or end.
  followChildren: also every descendant of a process whose binary matched,
  exec'd or not (seen since the sensor started); with NotIn, none of the
  process and its ancestors matched. A process the sensor knows nothing of
  matches no matchBinaries filter.
- matchPIDs: the process's pid (isNamespacePID: as seen in its own pid
  namespace); followForks: or one of its PROC_ANCESTORS nearest ancestors'.
  NotIn: none of them.
- matchNamespaces: the process's namespace of that kind is (NotIn: is not)
  one of the inums; host_ns is the host's namespace of that kind.

A limit of the kernel side is an error naming the path, never a truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.policy import Selector
from schemas.policy.values import parse_decimal
from services.sensor.proc_records import (
    BIN_KEY_DATA,
    HOOK_NS_FILTERS,
    HOOK_NS_VALUES,
    HOOK_PIDS,
    HOST_NS,
    BinaryFilter,
    BinKind,
    NamespaceFilter,
    NsKind,
    PidFilter,
)

_BINARY_OPS = {
    "In": (BinKind.EXACT, False),
    "NotIn": (BinKind.EXACT, True),
    "Prefix": (BinKind.PREFIX, False),
    "NotPrefix": (BinKind.PREFIX, True),
    "Postfix": (BinKind.POSTFIX, False),
    "NotPostfix": (BinKind.POSTFIX, True),
}
_SET_OPS = {"In": False, "NotIn": True}


class ProcessProblem(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


@dataclass(frozen=True, slots=True)
class ProcessFilters:
    binary: BinaryFilter | None = None
    pids: PidFilter | None = None
    namespaces: tuple[NamespaceFilter, ...] = ()


def process_filters(path: str, selector: Selector) -> ProcessFilters:
    """The process filters of the selector at ``path``; ProcessProblem if the kernel
    side cannot evaluate one as written."""
    return ProcessFilters(
        _binary(path, selector), _pids(path, selector), _namespaces(path, selector)
    )


def _binary(path: str, selector: Selector) -> BinaryFilter | None:
    if not selector.match_binaries:
        return None
    if len(selector.match_binaries) > 1:
        raise ProcessProblem(f"{path}.matchBinaries", "at most 1 matchBinaries filter per selector")
    f = selector.match_binaries[0]
    where = f"{path}.matchBinaries[0]"
    if f.operator not in _BINARY_OPS:
        raise ProcessProblem(f"{where}.operator", f"operator {f.operator} is not supported")
    kind, negate = _BINARY_OPS[f.operator]
    # An In value is stored with its NUL; every entry has a direction byte.
    room = BIN_KEY_DATA - (1 if kind is BinKind.EXACT else 0)
    values = []
    for k, text in enumerate(f.values):
        value = text.encode()
        if not value:
            raise ProcessProblem(f"{where}.values[{k}]", "an empty path matches nothing")
        if len(value) > room:
            raise ProcessProblem(
                f"{where}.values[{k}]",
                f"{len(value)} bytes: at most {room} are matched in the kernel",
            )
        values.append(value)
    if f.follow_children and kind is not BinKind.EXACT:
        raise ProcessProblem(
            f"{where}.followChildren", f"followChildren works with In and NotIn, not {f.operator}"
        )
    return BinaryFilter(kind, frozenset(values), negate, f.follow_children)


def _pids(path: str, selector: Selector) -> PidFilter | None:
    if not selector.match_pids:
        return None
    if len(selector.match_pids) > 1:
        raise ProcessProblem(
            f"{path}.matchPIDs", "at most 1 matchPIDs filter per selector in the kernel"
        )
    f = selector.match_pids[0]
    where = f"{path}.matchPIDs[0]"
    if f.operator not in _SET_OPS:
        raise ProcessProblem(f"{where}.operator", f"operator {f.operator} is not supported")
    if len(f.values) > HOOK_PIDS:
        raise ProcessProblem(
            f"{where}.values",
            f"{len(f.values)} PIDs: at most {HOOK_PIDS} are matched in the kernel",
        )
    return PidFilter(tuple(f.values), _SET_OPS[f.operator], f.follow_forks, f.is_namespace_pid)


def _namespaces(path: str, selector: Selector) -> tuple[NamespaceFilter, ...]:
    filters = selector.match_namespaces
    if len(filters) > HOOK_NS_FILTERS:
        raise ProcessProblem(
            f"{path}.matchNamespaces",
            f"{len(filters)} filters: at most {HOOK_NS_FILTERS} are evaluated in the kernel",
        )
    out = []
    for i, f in enumerate(filters):
        where = f"{path}.matchNamespaces[{i}]"
        if f.operator not in _SET_OPS:
            raise ProcessProblem(f"{where}.operator", f"operator {f.operator} is not supported")
        if len(f.values) > HOOK_NS_VALUES:
            raise ProcessProblem(
                f"{where}.values",
                f"{len(f.values)} namespaces: at most {HOOK_NS_VALUES} are matched in the kernel",
            )
        inums = tuple(HOST_NS if v == "host_ns" else parse_decimal(v) for v in f.values)
        out.append(NamespaceFilter(NsKind[f.namespace], inums, _SET_OPS[f.operator]))
    return tuple(out)
