"""Decoding ring-buffer bytes into raw record dicts."""

from __future__ import annotations

import ctypes as ct

import pytest

from schemas.raw import Op, RawExec, RawExit, RecordFlag
from services.sensor import records


def _header(op: Op, **fields) -> records.Header:
    h = records.Header(
        op=op,
        version=records.RECORD_VERSION,
        pid=10,
        tid=11,
        ppid=1,
        ktime_ns=123,
        cgroup_id=7,
        uid=1000,
        gid=100,
        comm=b"bash",
    )
    for k, v in fields.items():
        setattr(h, k, v)
    return h


def _exec_bytes(argv: list[bytes], filename: bytes, flags: int = 0, cut: bool = False) -> bytes:
    args = b"".join(a + b"\0" for a in argv)
    if cut:
        args = args[:-1]  # the kernel cut the last argument: no NUL
    fixed = records.ExecFixed(
        hdr=_header(Op.EXEC, flags=flags),
        args_len=len(args),
        filename_len=len(filename),
        argc=len(argv),
    )
    return bytes(fixed) + args + filename


def test_decode_exec_splits_argv_and_binary() -> None:
    """argv keeps empty arguments and spaces; the binary follows the arguments."""
    kind, rec = records.decode(_exec_bytes([b"ls", b"-l", b"", b"a b"], b"/usr/bin/ls"))
    assert kind == "process_exec"
    assert rec["argv"] == ["ls", "-l", "", "a b"]
    assert rec["binary"] == "/usr/bin/ls"
    assert (rec["pid"], rec["tid"], rec["ppid"], rec["uid"], rec["comm"]) == (
        10,
        11,
        1,
        1000,
        "bash",
    )
    RawExec.model_validate(rec)


def test_decode_exec_keeps_a_cut_last_argument() -> None:
    """A cut argument (no NUL) is kept as far as it goes."""
    data = _exec_bytes([b"x", b"yyyy"], b"/x", flags=RecordFlag.ARGS_TRUNCATED, cut=True)
    _, rec = records.decode(data)
    assert rec["argv"] == ["x", "yyyy"]
    assert rec["flags"] & RecordFlag.ARGS_TRUNCATED


def test_decode_exec_shows_undecodable_bytes() -> None:
    """Bytes that are not UTF-8 come out as \\xNN escapes, still valid UTF-8."""
    _, rec = records.decode(_exec_bytes([b"a\xffb"], b"/bin/\xfe"))
    assert rec["argv"] == ["a\\xffb"]
    assert rec["binary"] == "/bin/\\xfe"


def test_decode_exit() -> None:
    """Exit code and signal come through."""
    data = bytes(records.Exit(hdr=_header(Op.EXIT), exit_code=3, signal=9))
    kind, rec = records.decode(data)
    assert kind == "process_exit"
    assert RawExit.model_validate(rec).signal == 9


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "record of 0 bytes", id="empty"),
        pytest.param(bytes([99, 1]) + bytes(80), "unknown op 99", id="unknown-op"),
        pytest.param(bytes([Op.EXIT, 9]) + bytes(80), "record version 9", id="version"),
        pytest.param(bytes(records.Exit(hdr=_header(Op.EXIT)))[:40], "need", id="short"),
    ],
)
def test_decode_rejects_bad_records(data: bytes, reason: str) -> None:
    """A record the sensor cannot trust raises RecordError with the reason."""
    with pytest.raises(records.RecordError, match=reason):
        records.decode(data)


def test_header_has_no_implicit_padding() -> None:
    """The header is 56 bytes with every byte a named field."""
    assert ct.sizeof(records.Header) == 56
