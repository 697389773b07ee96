"""What a connection does when NATS goes away or turns it away, with real
nats-servers: an outage is logged once per distinct error (nats-py retries
twice a second and reports the same error at each attempt) and counted at the
reconnect; a service whose connection the server ends for good (its user
removed by a config reload) is stopped and told why, instead of idling
unconnected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common import bus
from services.common.errors import BusLostError
from services.common.natsserver import EmbeddedNats
from services.common.settings import ServiceSettings
from tests.cli.test_up import LineReader
from tests.nats_servers import ConfiguredNats, free_port, password_config

# Connects, says so, and closes once it has been disconnected and reconnected.
CLIENT = """
import asyncio, sys
from services.common import bus
from services.common.logging import configure_logging

async def main():
    configure_logging("info", "json")
    nc = await bus.connect(sys.argv[1], name="outage-test", timeout=10)
    print("connected", flush=True)
    for back in (False, True):  # down, then up again
        for _ in range(600):
            if nc.is_connected == back:
                break
            await asyncio.sleep(0.05)
    await nc.close()

asyncio.run(main())
"""


def test_an_outage_logs_each_error_once_and_counts_them_at_reconnect(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedNats(tmp_path / "nats", port=port)
    url = server.start()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "connected"
        server.stop()
        time.sleep(3)  # ~6 failed attempts
        server.start()
        _, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        server.stop()
    assert client.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    errors = [x for x in lines if x["event"] == "NATS error"]
    reconnected = [x for x in lines if x["event"] == "NATS reconnected"]
    reasons = [x["reason"] for x in errors]  # the server's EOF, then each refused attempt's
    assert len(reasons) == len(set(reasons)), err
    assert any("Connect call failed" in r for r in reasons), err
    assert len(reconnected) == 1 and reconnected[0]["errors_meanwhile"] >= 3, err


@pytest.mark.parametrize("with_stop", [True, False])
async def test_a_service_the_server_turns_away_stops_and_says_why(
    tmp_path: Path, with_stop: bool
) -> None:
    """The service's user is removed by a config reload: nats-py closes the client for
    good. With ``stop`` (every service passes its own), stop is set and raise_if_lost
    names the cause, so the service exits 1 for its supervisor to restart it."""
    port = free_port()
    store = tmp_path / "js"
    server = ConfiguredNats(tmp_path, password_config(port, "first-password", store)).start()
    password_file = tmp_path / "password"
    password_file.write_text("first-password\n")
    settings = ServiceSettings(nats_url=server.url, nats_user="ocellus",
                               nats_password_file=password_file)  # fmt: skip
    stop = asyncio.Event()
    try:
        nc = await bus.connect_service(settings, "test", stop if with_stop else None)
        server.reload(password_config(port, "second-password", store))
        for _ in range(200):
            if nc.is_closed:
                break
            await asyncio.sleep(0.05)
        assert nc.is_closed
        if not with_stop:
            bus.raise_if_lost(nc)  # nothing to say: no one asked to be stopped
            return
        await asyncio.wait_for(stop.wait(), 5)
        with pytest.raises(BusLostError, match="authorization violation"):
            bus.raise_if_lost(nc)
    finally:
        server.stop()


def test_a_running_service_turned_away_exits_1_saying_why(tmp_path: Path) -> None:
    """The enricher, as it runs for real: its user removed by a config reload, it
    stops and exits 1 with the reason (its shutdown's calls on the closed client
    do not hide it), for its supervisor to restart it."""
    port = free_port()
    store = tmp_path / "js"
    server = ConfiguredNats(tmp_path, password_config(port, "first-password", store)).start()
    password_file = tmp_path / "password"
    password_file.write_text("first-password\n")
    env = {**os.environ, "OCELLUS_NATS_URL": server.url, "OCELLUS_NATS_USER": "ocellus",
           "OCELLUS_NATS_PASSWORD_FILE": str(password_file), "OCELLUS_NODE_NAME": "lost.node",
           "OCELLUS_LOG_FORMAT": "json"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "services.enricher"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    err = LineReader(proc, proc.stderr)
    try:
        assert err.wait_for("enricher running", 60), "\n".join(err.lines)
        server.reload(password_config(port, "second-password", store))
        assert proc.wait(30) == 1, "\n".join(err.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
    text = "\n".join(err.lines)
    assert "NATS refused the connection for good" in text, text
    assert "enricher cannot run" in text and "Traceback" not in text, text
