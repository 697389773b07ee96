"""HookRegistryView against a real nats-server: the direct get for an id the watch has
not delivered yet, its rate limit, retirement of removed ids, and bad registries."""

from __future__ import annotations

from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from schemas import subjects
from schemas.hooks import HookArgInfo, HookInfo, HookRegistry
from services.enricher.hookargs import convert_args
from services.enricher.hooks import HookRegistryView

NODE_KEY = "n1"
INFO = HookInfo(
    policy="p",
    kind="process_kprobe",
    subsys="syscalls",
    event="sys_enter_setuid",
    function_name="__x64_sys_setuid",
    args=[HookArgInfo(index=0, type="uint32", label="uid")],
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _put(nc: NATS, hooks: dict[int, HookInfo]) -> int:
    kv = await nc.jetstream().create_key_value(bucket=subjects.HOOK_BUCKET)
    return await kv.put(NODE_KEY, HookRegistry(node=NODE_KEY, hooks=hooks).pack())


async def test_unknown_id_costs_one_direct_get_then_waits(nc: NATS) -> None:
    """Without a watch, an id is found by one direct get; an id still unknown is not
    asked for again until retry_after has passed."""
    clock = Clock()
    view = HookRegistryView(nc.jetstream(), retry_after=1.0, clock=clock)
    await _put(nc, {7: INFO})
    plan = await view.resolve(NODE_KEY, 7)
    assert plan is not None and plan.static["function_name"] == "__x64_sys_setuid"
    assert view.counters["hook_registry_gets"] == 1
    assert await view.resolve(NODE_KEY, 7) is plan  # known now: no get
    assert await view.resolve(NODE_KEY, 8) is None
    assert await view.resolve(NODE_KEY, 8) is None
    assert view.counters["hook_registry_gets"] == 2
    clock.now = 1.5
    await _put(nc, {7: INFO, 8: INFO})
    assert await view.resolve(NODE_KEY, 8) is not None
    assert view.counters["hook_registry_gets"] == 3


async def test_missing_bucket_is_not_created(nc: NATS) -> None:
    """A lookup before the enforcer made the bucket gives up without creating it."""
    view = HookRegistryView(nc.jetstream())
    assert await view.resolve(NODE_KEY, 1) is None
    with pytest.raises(nats.js.errors.BucketNotFoundError):
        await nc.jetstream().key_value(subjects.HOOK_BUCKET)


def test_removed_id_resolves_until_grace_ends() -> None:
    """An id gone from a newer revision resolves for `grace` seconds, then not."""
    clock = Clock()
    view = HookRegistryView(None, grace=10.0, clock=clock)  # type: ignore[arg-type]
    view.apply(NODE_KEY, 1, HookRegistry(node=NODE_KEY, hooks={3: INFO}).pack())
    view.apply(NODE_KEY, 2, HookRegistry(node=NODE_KEY, hooks={}).pack())
    view.apply(NODE_KEY, 1, HookRegistry(node=NODE_KEY, hooks={9: INFO}).pack())  # stale: ignored
    assert view.plan(NODE_KEY, 3) is not None
    assert view.plan(NODE_KEY, 9) is None
    clock.now = 10.0
    assert view.plan(NODE_KEY, 3) is None


def test_invalid_registry_keeps_what_was_known() -> None:
    """A registry that does not validate is counted and changes nothing."""
    view = HookRegistryView(None)  # type: ignore[arg-type]
    view.apply(NODE_KEY, 1, HookRegistry(node=NODE_KEY, hooks={3: INFO}).pack())
    view.apply(NODE_KEY, 2, b"\xc1not msgpack")
    assert view.plan(NODE_KEY, 3) is not None
    assert view.counters["hook_registry_invalid"] == 1


def _arg(arg_type: str, value: Any) -> dict[str, Any]:
    info = HookInfo(
        policy="p",
        kind="process_tracepoint",
        subsys="s",
        event="e",
        args=[HookArgInfo(index=0, type=arg_type)],
    )
    view = HookRegistryView(None)  # type: ignore[arg-type]
    view.apply(NODE_KEY, 1, HookRegistry(node=NODE_KEY, hooks={1: info}).pack())
    plan = view.plan(NODE_KEY, 1)
    assert plan is not None
    [arg], _, _ = convert_args([value], plan.args)
    return arg


@pytest.mark.parametrize(
    ("arg_type", "value", "expected"),
    [
        pytest.param("int", -100, {"int_arg": -100}, id="int"),
        pytest.param("int16", -2, {"int_arg": -2}, id="int16"),
        pytest.param("fd", 3, {"int_arg": 3}, id="fd-number"),
        pytest.param("int", 4294967196, {"int_arg": -100}, id="int-low-32-bits-at-fdcwd"),
        pytest.param("int8", 255, {"int_arg": -1}, id="int8-low-bits"),
        pytest.param("uint32", 2**32 - 1, {"uint_arg": 2**32 - 1}, id="uint32"),
        pytest.param("uint8", 200, {"uint_arg": 200}, id="uint8"),
        pytest.param("uint32", -1, {"uint_arg": 2**32 - 1}, id="uint32-of-signed-read"),
        pytest.param("long", 2**63, {}, id="long-overflow-not-wrapped"),
        pytest.param("long", -(2**63), {"long_arg": str(-(2**63))}, id="long-string"),
        pytest.param("uint64", 2**64 - 1, {"size_arg": str(2**64 - 1)}, id="uint64-string"),
        pytest.param("size_t", 0, {"size_arg": "0"}, id="size-zero-kept"),
        pytest.param("syscall64", 59, {"size_arg": "59"}, id="syscall64"),
        pytest.param("string", "", {"string_arg": ""}, id="empty-string-kept"),
        pytest.param("filename", "/x", {"string_arg": "/x"}, id="filename"),
        pytest.param("address", "::1", {"string_arg": "::1"}, id="address"),
        pytest.param("char_buf", "hi\n", {"bytes_arg": "aGkK"}, id="char-buf-bytes"),
        pytest.param("bpf_cmd", 5, {"bpf_cmd_arg": "BPF_PROG_LOAD"}, id="bpf-cmd"),
        pytest.param("bpf_cmd", 99, {}, id="bpf-cmd-unnamed"),
        pytest.param(
            "capability", 1, {"capability_arg": {"value": 1, "name": "CAP_DAC_OVERRIDE"}}, id="cap"
        ),
        pytest.param("string", 5, {}, id="type-mismatch"),
        pytest.param("file", "/x", {}, id="no-conversion"),
        pytest.param("int", None, {}, id="unread"),
    ],
)
def test_arg_conversion(arg_type: str, value: Any, expected: dict[str, Any]) -> None:
    """Each declared type gives Tetragon's oneof member; what cannot be exact is empty."""
    assert _arg(arg_type, value) == expected
