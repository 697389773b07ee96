"""`ocellus exporter` and `ocellus enricher`: one service each, with the
settings precedence of `ocellus sensor` (flag, then OCELLUS_* variable, then
the OCELLUS_CONFIG file's section), against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from nats.aio.client import Client as NATS

from tests.conftest import REPO, require_root
from tests.exporter.exporter_helpers import (
    create_stream,
    make_event,
    marker_of,
    publish,
    read_lines,
    wait_until,
    write_config,
)

OCELLUS = str(Path(sys.executable).parent / "ocellus")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCELLUS_")}
    return {**env, "OCELLUS_LOG_FORMAT": "json", **extra}


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The command, its output (JSON log lines) in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def broken_config(path: Path) -> Path:
    """A config that names itself in its error, so the test sees which file was used."""
    return write_config(path, [{"name": path.stem, "type": "no_such_sink"}])


@pytest.mark.parametrize(
    ("given", "used"),
    [
        pytest.param(("file",), "from_file", id="config-file-section"),
        pytest.param(("file", "env"), "from_env", id="env-beats-config-file"),
        pytest.param(("file", "env", "flag"), "from_flag", id="flag-beats-env"),
    ],
)
def test_exporter_command_settings_precedence(
    tmp_path: Path, given: tuple[str, ...], used: str
) -> None:
    """--exporter-config beats OCELLUS_EXPORTER_CONFIG_FILE beats `exporter:` in OCELLUS_CONFIG."""
    names = ("from_file", "from_env", "from_flag")
    configs = {name: broken_config(tmp_path / f"{name}.yaml") for name in names}
    settings = tmp_path / "ocellus.yaml"
    settings.write_text(yaml.safe_dump({"exporter": {"config_file": str(configs["from_file"])}}))
    env = clean_env(OCELLUS_CONFIG=str(settings))
    if "env" in given:
        env["OCELLUS_EXPORTER_CONFIG_FILE"] = str(configs["from_env"])
    argv = [OCELLUS, "exporter", "--nats-url", "nats://127.0.0.1:9"]
    if "flag" in given:
        argv += ["--exporter-config", str(configs["from_flag"])]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    assert f"sink '{used}': type: unknown sink type 'no_such_sink'" in done.stderr
    assert f"exporter config {configs[used]}:" in done.stderr


def test_exporter_command_without_a_config_is_refused(tmp_path: Path) -> None:
    """No --exporter-config, variable or config-file entry: exit 2 naming the setting."""
    done = subprocess.run(
        [OCELLUS, "exporter"], env=clean_env(), cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "config_file" in done.stderr


@pytest.mark.parametrize("command", ["exporter", "enricher"])
def test_service_command_with_an_unreadable_config_file_is_refused(
    tmp_path: Path, command: str
) -> None:
    """OCELLUS_CONFIG naming a missing file: exit 2 naming it, no traceback."""
    env = clean_env(OCELLUS_CONFIG=str(tmp_path / "missing.yaml"))
    done = subprocess.run(
        [OCELLUS, command], env=env, cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert f"config file {tmp_path / 'missing.yaml'}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_exporter_command_delivers_and_stops_on_sigterm(
    nc: NATS, nats_url: str, tmp_path: Path
) -> None:
    """`ocellus exporter --nats-url --node-name --exporter-config` delivers; SIGTERM: exit 0."""
    await create_stream(nc)
    out = tmp_path / "out"
    sink = {"name": "file", "type": "json_file", "options": {"path": str(out / "events.json")}}
    config = write_config(tmp_path / "exporter.yaml", [sink])
    events = [make_event(i) for i in range(200)]
    await publish(nc, events)
    log = tmp_path / "exporter.log"
    argv = [OCELLUS, "exporter", "--nats-url", nats_url, "--node-name", "cli-node"]
    argv += ["--exporter-config", str(config)]
    env = clean_env(OCELLUS_NODE_NAME="env-node")
    proc = spawn(argv, env, log)
    try:
        await wait_until(lambda: out.is_dir() and len(read_lines(out)) == len(events))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(marker_of(e) for e in read_lines(out)) == sorted(marker_of(e) for e in events)
    running = [json.loads(x) for x in log.read_text().splitlines() if '"exporter running"' in x]
    assert running and running[0]["node"] == "cli-node"  # the flag beat the variable


async def test_enricher_command_runs_and_stops_on_sigterm(nats_url: str, tmp_path: Path) -> None:
    """`ocellus enricher --node-name` runs the enricher under that name; SIGTERM: exit 0."""
    require_root()  # the enricher reads every process's /proc entries
    log = tmp_path / "enricher.log"
    argv = [OCELLUS, "enricher", "--nats-url", nats_url, "--node-name", "cli-node"]
    env = clean_env(OCELLUS_NODE_NAME="env-node")
    proc = spawn(argv, env, log)
    try:
        await wait_until(lambda: '"enricher running"' in log.read_text() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    running = [json.loads(x) for x in log.read_text().splitlines() if '"enricher running"' in x]
    assert running[0]["node"] == "cli-node"
