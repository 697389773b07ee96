"""The wire codec, subject names and raw record models."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest
from pydantic import ValidationError

from schemas import codec, subjects
from schemas.raw import RawBatch, RawExec

EXEC = {
    "ktime": 5,
    "pid": 2,
    "tid": 2,
    "ppid": 1,
    "uid": 0,
    "gid": 0,
    "cgroup_id": 1,
    "comm": "sh",
    "flags": 0,
    "binary": "/bin/sh",
    "argv": ["sh", "-c", ""],
}


def test_pack_unpack_round_trip() -> None:
    """A packed batch unpacks to the same map, stamped with the version."""
    body = {"node": "n1", "type": "process_exec", "boot_ns": 9, "records": [EXEC]}
    out = codec.unpack(codec.pack(body))
    assert out == {"v": codec.SCHEMA_VERSION, **body}
    assert RawBatch.model_validate(out).parsed() == [RawExec.model_validate(EXEC)]


def test_the_reused_packer_is_clean_after_a_failure_and_per_thread() -> None:
    """codec.pack reuses a Packer: one that failed half way leaves nothing
    behind, and threads packing at once each get their own bytes."""
    with pytest.raises(TypeError):
        codec.pack({"a": [1, 2, object()]})
    assert codec.pack({"a": 1}) == msgpack.packb({"v": codec.SCHEMA_VERSION, "a": 1})
    bodies = [{"n": i, "s": "x" * (i % 50)} for i in range(2000)]
    with ThreadPoolExecutor(4) as pool:
        packed = list(pool.map(codec.pack, bodies))
    assert [codec.unpack(p) for p in packed] == [{"v": codec.SCHEMA_VERSION, **b} for b in bodies]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"\xc1", "invalid msgpack", id="invalid"),
        pytest.param(msgpack.packb([1, 2]), "expected a map", id="not-a-map"),
        pytest.param(msgpack.packb({"x": 1}), "unsupported schema version None", id="no-version"),
        pytest.param(msgpack.packb({"v": 99}), "unsupported schema version 99", id="future"),
        pytest.param(msgpack.packb({"v": 1})[:-1], "invalid msgpack", id="truncated"),
    ],
)
def test_unpack_rejects_malformed(data: bytes, reason: str) -> None:
    """Anything but a versioned map raises DecodeError with a reason and the size."""
    with pytest.raises(codec.DecodeError, match=reason) as err:
        codec.unpack(data)
    assert err.value.size == len(data)


def test_unpack_rejects_oversized() -> None:
    """A message over the size limit is refused before parsing."""
    with pytest.raises(codec.DecodeError, match="larger than"):
        codec.unpack(b"\x00" * 100, max_size=10)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"pid": -1}, "pid", id="negative"),
        pytest.param({"pid": "2"}, "pid", id="string-for-int"),
        pytest.param({"argv": "sh"}, "argv", id="string-for-list"),
        pytest.param({"binary": "x" * 10000}, "binary", id="huge-string"),
        pytest.param({"extra": 1}, "extra", id="unknown-field"),
    ],
)
def test_raw_exec_rejects_bad_fields(change: dict, field: str) -> None:
    """Mistyped, out-of-range, oversized or unknown fields fail validation by name."""
    with pytest.raises(ValidationError, match=field):
        RawExec.model_validate({**EXEC, **change})


def test_raw_exec_requires_every_field() -> None:
    """A missing field is an error, not a default."""
    record = dict(EXEC)
    del record["ppid"]
    with pytest.raises(ValidationError, match="ppid"):
        RawExec.model_validate(record)


def test_subjects_spell_the_contract() -> None:
    """Subjects follow DESIGN §2, with dots in node names replaced."""
    assert subjects.raw("a.b.c", "process_exec") == "ocellus.raw.a_b_c.process_exec"
    assert subjects.events("n", "process_exit") == "ocellus.events.n.process_exit"
    assert subjects.status("sensor", "n.x") == "ocellus.status.sensor.n_x"
    assert subjects.control("enforcer", "n", "apply") == "ocellus.ctl.enforcer.n.apply"
    assert subjects.raw_all() == "ocellus.raw.>"
    assert subjects.event_type_of("ocellus.raw.n.process_exit") == "process_exit"


@pytest.mark.parametrize("bad", ["", "a b", "a*", "a>"])
def test_subjects_reject_unusable_node_names(bad: str) -> None:
    """A node name that would break subject matching is refused."""
    with pytest.raises(ValueError, match="cannot be used"):
        subjects.raw(bad, "process_exec")
