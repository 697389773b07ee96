"""Kernel struct offsets from BTF, checked against bpftool's own reading."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from services.sensor.btf import SENSOR_OFFSETS, Btf, BtfError


@pytest.fixture(scope="module")
def btf() -> Btf:
    return Btf.from_kernel()


def _bpftool_offset(struct: str, member: str) -> int:
    """Offset of a direct member of a struct, as bpftool prints it."""
    tool = shutil.which("bpftool") or pytest.fail("bpftool (Debian package bpftool) is needed")
    dump = subprocess.run([tool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip
    block = re.search(rf"^\[\d+\] STRUCT '{struct}' .*?(?=^\[)", dump, re.S | re.M)
    assert block, struct
    found = re.search(rf"^\t'{member}' type_id=\d+ bits_offset=(\d+)", block.group(0), re.M)
    assert found, member
    return int(found.group(1)) // 8


def test_offsets_match_bpftool(btf: Btf) -> None:
    """task_struct.mm (a direct member) is where bpftool says it is."""
    assert btf.offset_of("task_struct", "mm") == _bpftool_offset("task_struct", "mm")


def test_members_inside_anonymous_structs_are_found(btf: Btf) -> None:
    """mm_struct's arg_start/arg_end sit in an anonymous struct: found, 8 bytes apart."""
    start = btf.offset_of("mm_struct", "arg_start")
    assert btf.offset_of("mm_struct", "arg_end") == start + 8
    for struct, member in SENSOR_OFFSETS.values():
        assert btf.offset_of(struct, member) > 0


@pytest.mark.parametrize(
    ("struct", "member", "message"),
    [
        pytest.param("no_such_struct", "x", "no struct no_such_struct", id="struct"),
        pytest.param("task_struct", "no_such_member", "has no member no_such_member", id="member"),
    ],
)
def test_missing_names_are_clear_errors(btf: Btf, struct: str, member: str, message: str) -> None:
    """Asking for what the kernel does not have says what is missing."""
    with pytest.raises(BtfError, match=message):
        btf.offset_of(struct, member)


def test_garbage_is_not_btf() -> None:
    """A blob without the BTF magic is refused."""
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 64)
