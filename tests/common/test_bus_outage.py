"""A NATS outage in a service's log: nats-py retries twice a second and reports
the same error at each attempt; the log says it once, then how many there
were when the connection is back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from services.common.natsserver import EmbeddedNats
from tests.nats_servers import free_port

CLIENT = """
import asyncio, sys
from services.common import bus
from services.common.logging import configure_logging

async def main():
    configure_logging("info", "json")
    nc = await bus.connect(sys.argv[1], name="outage-test", timeout=10)
    print("connected", flush=True)
    await asyncio.sleep(float(sys.argv[2]))
    await nc.close()

asyncio.run(main())
"""


def test_an_outage_logs_each_error_once_and_counts_them_at_reconnect(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedNats(tmp_path / "nats", port=port)
    url = server.start()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, url, "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "connected"
        server.stop()
        time.sleep(3)  # ~6 failed attempts
        server.start()
        _, err = client.communicate(timeout=30)
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
