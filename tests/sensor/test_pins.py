"""prepare_pins removes only what is certainly an older layout of our own
maps, never another tool's pins next to them."""

from __future__ import annotations

import ctypes as ct
import os
import shutil
import struct

import pytest

from services.common import bpfsys
from services.sensor.probes import prepare_pins
from tests.hook_engine import fresh_pin_dir

pytestmark = [pytest.mark.bpf]
_libc = ct.CDLL(None, use_errno=True)


def _pin_new_map(path: os.PathLike[str]) -> None:
    attr = ct.create_string_buffer(struct.pack("<IIII", 1, 4, 8, 4), 72)  # hash 4/8/4
    fd = _libc.syscall(321, 0, attr, 72)
    assert fd >= 0, os.strerror(ct.get_errno())
    try:
        bpfsys.obj_pin(fd, path)  # type: ignore[arg-type]
    finally:
        os.close(fd)


def test_only_older_layouts_of_our_maps_are_removed() -> None:
    node = fresh_pin_dir().parent / "node"
    ours = node / "0123456789ab"  # the layout this sensor would use
    old = node / "ba9876543210"  # an older layout: our names only
    foreign_layoutish = node / "aaaaaaaaaaaa"  # looks like a layout, holds a stranger
    other_tool = node / "some-tool"
    for d in (old, foreign_layoutish, other_tool):
        d.mkdir(parents=True)
    _pin_new_map(old / "hook_config")
    _pin_new_map(foreign_layoutish / "their_map")
    _pin_new_map(other_tool / "hook_config")
    try:
        prepare_pins(ours)
        assert ours.is_dir()
        assert not old.exists()
        assert (foreign_layoutish / "their_map").exists()
        assert (other_tool / "hook_config").exists()
    finally:
        shutil.rmtree(node.parent, ignore_errors=True)
