"""The string prefilter of a tracepoint (struct ocellus_prefilter in
bpf/lib/policy.h): when every slot there requires one string field to be
Equal to or start with one of its values, the union of those values is
looked up once per event, and an event in none of them is counted filtered
without a slot being looked at. A file policy on openat is the usual case:
most opens are of paths no policy names.

Safety rests on the order of writes: the word goes off before any config of
the tracepoint changes and comes back (for the configs now there) after;
values go in under the generation the word does not name yet, and the old
ones go once the word names the new one (an event that looked them up
under the old word and missed re-reads the word, and leaves the decision
to the slots when it changed). A change that fails leaves the prefilter
off, which is slower, never wrong."""

from __future__ import annotations

import ctypes as ct
import mmap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common import bpfsys
from services.common.logging import get_logger
from services.sensor.hook_records import (
    TP_IDS,
    ArgLayout,
    ArgPart,
    FilterConfig,
    FilterFlag,
    FilterOp,
    Prefilter,
    ReadKind,
    SlotConfig,
    StrKey,
    str_key,
)

log = get_logger("ocellus.enforcer")

_STRING_READS = frozenset({ReadKind.USER_STRING, ReadKind.KERNEL_STRING})
_REQUIRING_OPS = frozenset({FilterOp.STR_EQUAL, FilterOp.STR_PREFIX})


@dataclass(frozen=True, slots=True)
class PlannedPrefilter:
    layout: ArgLayout  # the field every slot requires
    arg: int  # its index in the first hook's args (the scratch buffer it is read into)
    values: frozenset[tuple[FilterOp, bytes]]  # Equal and Prefix values, of every slot


def plan_prefilter(
    hooks: Iterable[tuple[Sequence[ArgLayout], Sequence[SlotConfig]]],
) -> PlannedPrefilter | None:
    """The prefilter of the slots of these hooks (args, configs), or None when
    one of them requires no positive string filter on a field all the others
    require one on."""
    required: list[dict[ArgLayout, tuple[int, FilterConfig]]] = []
    for args, configs in hooks:
        for cfg in configs:
            fields: dict[ArgLayout, tuple[int, FilterConfig]] = {}
            for f in cfg.filters:
                if _requires(args[f.arg], f):
                    fields.setdefault(args[f.arg], (f.arg, f))  # ANDed: any one will do
            required.append(fields)
    if not required:
        return None
    common = set(required[0]).intersection(*required[1:])
    if not common:
        return None
    layout = min(common, key=lambda a: (a.offset, a.read))
    chosen = [fields[layout][1] for fields in required]
    values = frozenset((f.op, v) for f in chosen for v in f.strings)
    return PlannedPrefilter(layout, required[0][layout][0], values)


def _requires(arg: ArgLayout, f: FilterConfig) -> bool:
    """Whether the filter matches only strings equal to or starting with its values."""
    return (
        f.op in _REQUIRING_OPS
        and not f.flags & FilterFlag.NOT
        and f.part == ArgPart.VALUE
        and arg.read in _STRING_READS
    )


class Prefilters:
    """The prefilter words (hook_prefilter, written through mmap: one 8-byte
    store each) and values (str_prefilter) of every tracepoint."""

    def __init__(self, words: bpfsys.PinnedMap, values: bpfsys.PinnedMap) -> None:
        size = -(-TP_IDS * ct.sizeof(ct.c_uint64) // mmap.PAGESIZE) * mmap.PAGESIZE
        self._mm = mmap.mmap(words.fd, size)
        self._words = memoryview(self._mm).cast("Q")
        self._values = values
        self._held: dict[int, tuple[int, list[StrKey]]] = {}  # tp id: (gen, keys)
        self._seq: dict[int, int] = {}  # tp id: words written (the kernel tells rewrites apart)

    def off(self, tp_id: int) -> None:
        self._words[tp_id] = 0

    def publish(self, tp_id: int, planned: PlannedPrefilter | None) -> None:
        """The tracepoint's prefilter as planned (None: off), its configs
        being all written; the word is off."""
        old = self._held.pop(tp_id, None)
        self._words[tp_id] = 0
        if planned is not None:
            gen = old[0] ^ 1 if old else 0
            keys = [str_key(op, v, tp_id, 0, 0, gen) for op, v in sorted(planned.values)]
            if self._write(tp_id, keys):
                p, seq = planned.layout, (self._seq.get(tp_id, 0) + 1) & 0xFF
                word = Prefilter(p.offset, p.size, p.read, 1, gen, planned.arg, seq).word()
                self._words[tp_id] = word
                self._seq[tp_id] = seq
                self._held[tp_id] = (gen, keys)
        if old:
            self._delete(old[1])

    def clear(self) -> None:
        """Every word off and every value gone: an earlier enforcer's, whose
        configs this one does not know the strings of yet."""
        for tp_id in range(TP_IDS):
            if self._words[tp_id]:
                self._words[tp_id] = 0
        self._delete(self._values.keys(StrKey))
        self._held.clear()

    def is_on(self, tp_id: int) -> bool:
        return bool(self._words[tp_id])

    def close(self) -> None:
        self._words.release()
        self._mm.close()

    def _write(self, tp_id: int, keys: list[StrKey]) -> bool:
        for i, key in enumerate(keys):
            try:
                self._values.update(key, ct.c_uint8(1))
            except OSError as e:
                log.warning("string prefilter off: its values do not fit", tp_id=tp_id,
                            values=len(keys), reason=e.strerror or str(e))  # fmt: skip
                self._delete(keys[:i])
                return False
        return True

    def _delete(self, keys: Iterable[StrKey]) -> None:
        for key in keys:
            self._values.delete(key)
