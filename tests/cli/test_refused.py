"""A long-running command (`ocellus events`, `ocellus status --watch`) whose
NATS comes back with another password (an `ocellus up` restarted: each start
makes a new one) says so and exits 1, instead of retrying twice a second for
ever with a password that can no longer work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common.natsserver import EmbeddedNats
from tests.nats_servers import free_port

OCELLUS = str(Path(sys.executable).parent / "ocellus")


def _established(port: int) -> int:
    """TCP connections established to ``port`` on loopback (its server side)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


@pytest.mark.parametrize("command", [["events"], ["status", "--watch", "0.5"]])
def test_a_command_refused_after_connecting_says_so_and_exits(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    passwords = ("first-password", "second-password")
    password_file = tmp_path / "password"
    password_file.write_text(passwords[0] + "\n")
    password_file.chmod(0o600)
    first = EmbeddedNats(tmp_path / "first", port=port, password=passwords[0])
    first.start()
    env = {**os.environ, "OCELLUS_NATS_USER": "ocellus",
           "OCELLUS_NATS_PASSWORD_FILE": str(password_file), "OCELLUS_NODE_NAME": "refused.node",
           "OCELLUS_STATUS_INTERVAL": "0.5",
           "OCELLUS_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    proc = subprocess.Popen(
        [OCELLUS, *command, "--nats-url", first.url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    second = EmbeddedNats(tmp_path / "second", port=port, password=passwords[1])
    try:
        deadline = time.monotonic() + 30
        while not _established(port):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the command never connected"
            time.sleep(0.1)
        first.stop()
        second.start()  # the same address, another password
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        first.stop()
        second.stop()
    assert proc.returncode == 1, err
    assert "refused this connection after it had been made" in err, err
    assert "authorization violation" in err and "run the command again" in err, err
    assert "Traceback" not in err, err
