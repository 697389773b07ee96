"""The sensor's watchdog against the real kernel: its tracepoints disabled by hand
(through a stolen fd), a pinned policy map replaced, a BPF program loaded by
someone else — each raises an alert on ocellus.alerts.<node> within 10 s."""

from __future__ import annotations

import asyncio
import ctypes as ct
import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from schemas import codec, subjects
from services.common import bpfsys
from services.sensor.hook_records import policy_pin_dir
from services.sensor.probes import ProcessProbes
from services.sensor.watchdog import Watchdog
from tests.conftest import ServiceProcess
from tests.hook_engine import fresh_pin_dir

pytestmark = [pytest.mark.bpf]
NODE = "watchdog.node"
_libc = ct.CDLL(None, use_errno=True)


@pytest.fixture
def watched_sensor(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {
        "OCELLUS_NATS_URL": nats_url,
        "OCELLUS_NODE_NAME": NODE,
        "OCELLUS_SENSOR_WATCHDOG_INTERVAL": "2",
        "OCELLUS_SENSOR_CANARY_TIMEOUT": "1",
    }
    service = ServiceProcess("sensor", env, tmp_path / "sensor.log")
    service.wait_for_log('"sensor running"')
    yield service
    service.stop()


@pytest.fixture
async def alerts(nats_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    async def on_alert(msg: Any) -> None:
        got.append(codec.unpack(msg.data))

    nc = await nats.connect(nats_url)
    await nc.subscribe(subjects.alerts(NODE), cb=on_alert)
    await nc.flush()
    yield got
    await nc.close()


async def wait_alert(alerts: list[dict[str, Any]], kind: str, within: float = 10.0) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [a for a in alerts if a["kind"] == kind]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} alert within {within}s: {alerts}")


async def test_healthy_sensor_raises_no_alert_about_itself(
    watched_sensor: ServiceProcess, alerts: list[dict[str, Any]]
) -> None:
    await asyncio.sleep(5)  # two rounds of checks
    assert not [a for a in alerts if a["kind"] in ("sensor_canary", "policy_map", "sensor_link")]


async def test_connect_program_detached_by_hand_raises_the_alert(
    watched_sensor: ServiceProcess, alerts: list[dict[str, Any]]
) -> None:
    """`bpftool link detach` of the sensor's cgroup connect4 link: network deny
    would be off without a word; the watchdog says so within 10 s."""
    mine = await asyncio.to_thread(_detach_cgroup_link_of, watched_sensor.proc.pid)
    started = time.monotonic()
    alert = await wait_alert(alerts, "sensor_link")
    assert f"cgroup link {mine}" in alert["message"]
    assert time.monotonic() - started < 10


def test_canary_verdict_names_what_did_not_come_back(tmp_path: Path) -> None:
    """The canary's failure path with a real process: nothing drains the ring,
    so none of its records come back, and the verdict says which."""
    from tests.hook_engine import PAGES

    probes = ProcessProbes(
        ringbuf_pages=PAGES, args_max=4096, procs_max=4096, wakeup_bytes=4096,
        pin_dir=fresh_pin_dir(),
    )  # fmt: skip
    probes.load()
    try:
        dog = Watchdog(probes.bpf, probes.pin_dir, canary_timeout=0.3)
        dog.start_canary()
        assert dog.canary_verdict() is None  # still waiting
        time.sleep(0.4)
        why = dog.canary_verdict()
        assert why is not None
        assert "process_clone, process_exec, process_exit" in why
        dog.start_canary()
        pid = dog.canary.pid if dog.canary else 0
        for kind in ("process_clone", "process_exec", "process_exit"):
            assert dog.take_canary(kind, {"pid": pid})
        assert not dog.take_canary("process_exec", {"pid": pid + 1})
        assert dog.canary_verdict() is None and dog.canary is None
    finally:
        probes.close()
        shutil.rmtree(probes.pin_dir.parent, ignore_errors=True)


def _detach_cgroup_link_of(pid: int) -> int:
    """Detach one of ``pid``'s cgroup links with bpftool, as an admin would; its id."""
    own = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("prog_id:"):
                own.add(int(line.split()[1]))
    links = json.loads(
        subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, check=True).stdout
    )
    mine = [ln["id"] for ln in links if ln.get("type") == "cgroup" and ln.get("prog_id") in own]
    assert mine, "the sensor has no cgroup link"
    subprocess.run(["bpftool", "link", "detach", "id", str(mine[0])], check=True)
    return int(mine[0])


async def test_replaced_pin_raises_the_alert_and_is_put_back(
    watched_sensor: ServiceProcess, alerts: list[dict[str, Any]]
) -> None:
    pin = policy_pin_dir(Path(os.environ["OCELLUS_BPF_PIN_DIR"]), NODE) / "hook_stats"
    original = bpfsys.pinned_map_id(pin)
    assert original is not None
    pin.unlink()
    impostor = _map_create()
    bpfsys.obj_pin(impostor, pin)
    alert = await wait_alert(alerts, "policy_map")
    assert str(pin) in alert["message"] and "replaced" in alert["message"]
    assert bpfsys.pinned_map_id(pin) == original
    os.close(impostor)


async def test_a_program_loaded_by_someone_else_is_reported(
    watched_sensor: ServiceProcess, alerts: list[dict[str, Any]]
) -> None:
    fd = _load_socket_filter(b"ocellus_intrud")
    try:
        alert = await wait_alert(alerts, "bpf_program")
        assert "ocellus_intrud" in " ".join(a["message"] for a in alerts)
        assert alert["node"] == NODE
    finally:
        os.close(fd)


def _map_create() -> int:
    # union bpf_attr for BPF_MAP_CREATE: type, key_size, value_size, max_entries
    attr = ct.create_string_buffer(struct.pack("<IIII", 1, 4, 8, 4), 72)
    fd = _libc.syscall(321, 0, attr, 72)
    assert fd >= 0, os.strerror(ct.get_errno())
    return int(fd)


def _load_socket_filter(name: bytes) -> int:
    insns = ct.create_string_buffer(bytes.fromhex("b7000000000000009500000000000000"))
    lic = ct.create_string_buffer(b"GPL")
    attr = ct.create_string_buffer(
        struct.pack(
            "<IIQQIIQII16s", 1, 2, ct.addressof(insns), ct.addressof(lic), 0, 0, 0, 0, 0, name
        ),
        128,
    )
    fd = _libc.syscall(321, 5, attr, 128)
    assert fd >= 0, os.strerror(ct.get_errno())
    return int(fd)
