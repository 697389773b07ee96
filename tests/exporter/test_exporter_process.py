"""`python -m services.exporter` as a process: SIGKILL and restart lose
nothing, SIGTERM exits 0, bad settings and configs are refused clearly;
`ocellus up --exporter-config` runs it in the pipeline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from tests.conftest import REPO, ServiceProcess, require_root
from tests.exporter.exporter_helpers import (
    NODE,
    StatusCollector,
    create_stream,
    make_event,
    marker_of,
    publish,
    read_lines,
    wait_until,
    write_config,
)

MAX_INFLIGHT = 100


def exporter_process(nats_url: str, config: Path, log: Path) -> ServiceProcess:
    env = {
        "OCELLUS_NATS_URL": nats_url,
        "OCELLUS_NODE_NAME": NODE,
        "OCELLUS_STATUS_INTERVAL": "0.2",
        "OCELLUS_EXPORTER_CONFIG_FILE": str(config),
    }
    return ServiceProcess("exporter", env, log)


async def test_exporter_killed_mid_stream_resumes_with_nothing_lost(
    nc: NATS, nats_url: str, tmp_path: Path
) -> None:
    """SIGKILL mid-stream, restart: every event arrives; duplicates stay within max_inflight."""
    await create_stream(nc)
    out = tmp_path / "out"
    sink = {
        "name": "file",
        "type": "json_file",
        "options": {"path": str(out / "events.json"), "max_size_mb": 0.05, "max_backups": 0},
        "batch_size": 25,
        "max_inflight": MAX_INFLIGHT,
        "ack_wait": 2,
    }
    config = write_config(tmp_path / "exporter.yaml", [sink])
    events = [make_event(i) for i in range(5000)]
    await publish(nc, events)

    first = exporter_process(nats_url, config, tmp_path / "first.log")
    try:
        await wait_until(lambda: out.is_dir() and len(read_lines(out)) > 500)
    finally:
        first.proc.kill()
        first.stop()
    written_by_first = len(read_lines(out))
    assert written_by_first < 5000, "the exporter should have been killed mid-stream"

    status = await StatusCollector.subscribe(nc)
    second = exporter_process(nats_url, config, tmp_path / "second.log")
    try:
        await wait_until(lambda: len({marker_of(e) for e in read_lines(out)}) == 5000, 60)
        await wait_until(lambda: status.sink("file").get("ack_pending") == 0)
    finally:
        assert second.stop() == 0, second.log()

    seen = Counter(marker_of(e) for e in read_lines(out))
    assert set(seen) == {marker_of(e) for e in events}
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates <= MAX_INFLIGHT, f"{duplicates} duplicates"
    assert '"exporter stopped"' in second.log()


async def test_exporter_sigterm_finishes_in_flight_work_and_exits_0(
    nc: NATS, nats_url: str, tmp_path: Path
) -> None:
    """SIGTERM while events flow: what was fetched is written and acked; exit 0."""
    await create_stream(nc)
    out = tmp_path / "out"
    sink = {"name": "file", "type": "json_file", "options": {"path": str(out / "e.json")}}
    config = write_config(tmp_path / "exporter.yaml", [sink])
    await publish(nc, [make_event(i) for i in range(3000)])
    status = await StatusCollector.subscribe(nc)
    service = exporter_process(nats_url, config, tmp_path / "exporter.log")
    try:
        await wait_until(lambda: status.sink("file").get("sent", 0) > 0)
        service.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.proc.wait, 10) == 0, service.log()
    finally:
        service.stop()
    stopped = [json.loads(x) for x in service.log().splitlines() if '"exporter stopped"' in x]
    counters = stopped[0]["sinks"]["file"]
    # Everything received was sent and acked: no half-done batch left behind.
    assert counters["received"] == counters["sent"] == len(read_lines(out))
    assert 0 < counters["sent"] < 3000 or counters["lag"] == 0


def test_exporter_without_a_config_file_is_refused(tmp_path: Path) -> None:
    """No OCELLUS_EXPORTER_CONFIG_FILE: exit 2 naming the setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCELLUS_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.exporter"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "config_file" in done.stderr


def test_exporter_with_an_invalid_config_names_sink_and_field(tmp_path: Path) -> None:
    """A bad option: exit 1, the message names the sink and the option's path."""
    config = write_config(
        tmp_path / "bad.yaml",
        [{"name": "siem", "type": "json_file", "options": {"path": "/x", "max_backups": -1}}],
    )
    env = {**os.environ, "OCELLUS_EXPORTER_CONFIG_FILE": str(config), "OCELLUS_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-m", "services.exporter"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "sink 'siem': options.max_backups" in done.stderr


def test_up_refuses_a_bad_exporter_config_before_starting_anything(tmp_path: Path) -> None:
    """`ocellus up --exporter-config` with an unknown sink type: exit 1, nothing started."""
    config = write_config(tmp_path / "bad.yaml", [{"name": "x", "type": "kafka"}])
    env = {**os.environ, "OCELLUS_NATS_PORT": "0", "OCELLUS_LOG_FORMAT": "json"}
    ocellus = str(Path(sys.executable).parent / "ocellus")
    state = tmp_path / "state"
    done = subprocess.run(
        [ocellus, "up", "--state-dir", str(state), "--exporter-config", str(config)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "sink 'x': type: unknown sink type 'kafka'" in done.stderr
    assert not state.exists()  # no NATS was started


@pytest.mark.bpf
def test_up_with_exporter_config_writes_a_command_to_the_json_file(tmp_path: Path) -> None:
    """`ocellus up --exporter-config`: an exec after start lands in the json_file sink."""
    require_root()
    out = tmp_path / "out" / "events.json"
    sink = {"name": "file", "type": "json_file", "options": {"path": str(out)}, "start_at": "new"}
    config = write_config(tmp_path / "exporter.yaml", [sink])
    log = tmp_path / "up.log"
    env = {**os.environ, "OCELLUS_NATS_PORT": "0", "OCELLUS_LOG_FORMAT": "json"}
    env.pop("OCELLUS_NATS_URL", None)
    ocellus = str(Path(sys.executable).parent / "ocellus")
    argv = [ocellus, "up", "--state-dir", str(tmp_path / "state"), "--exporter-config", str(config)]
    proc = subprocess.Popen(
        argv,
        env={**env, "OCELLUS_NODE_NAME": "up-exporter"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while '"ocellus up"' not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ocellus up not ready (rc={proc.poll()}):\n{log.read_text()}")
            time.sleep(0.05)
        tag = f"exp-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/true", tag], check=True)
        deadline = time.monotonic() + 15
        while not (out.exists() and tag in out.read_text()):
            if time.monotonic() > deadline:
                pytest.fail(f"{tag} not in {out}:\n{log.read_text()}")
            time.sleep(0.05)
        lines = [json.loads(x) for x in out.read_text().splitlines() if tag in x]
        [line] = [x for x in lines if "process_exec" in x]
        assert line["process_exec"]["process"]["binary"] == "/bin/true"
        assert line["node_name"] == "up-exporter"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    down = [json.loads(x) for x in log.read_text().splitlines() if '"ocellus down"' in x]
    assert rc == 0, log.read_text()
    returncodes = down[0]["returncodes"]  # every service `up` ran (others come and go)
    assert {"sensor", "enricher", "exporter"} <= set(returncodes)
    assert set(returncodes.values()) == {0}, returncodes
