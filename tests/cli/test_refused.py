"""A long-running command (`ocellus events`, `ocellus status --watch`) whose
NATS refuses it once connected says so and exits 1, instead of retrying twice
a second for ever with a password that can no longer work (or, when the
server ends the live connection, idling unconnected): when its NATS comes
back with another password (an `ocellus up` restarted: each start makes a new
one), and when the server's configuration is reloaded without its user."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.common.natsserver import EmbeddedNats
from tests.cli.test_up import LineReader
from tests.nats_servers import ConfiguredNats, free_port, password_config

OCELLUS = str(Path(sys.executable).parent / "ocellus")
PASSWORDS = ("first-password", "second-password")
COMMANDS = [["events"], ["status", "--watch", "0.5"]]


def _restart_with_another_password(tmp_path: Path, port: int) -> tuple[str, Callable[[], None]]:
    first = EmbeddedNats(tmp_path / "first", port=port, password=PASSWORDS[0])
    second = EmbeddedNats(tmp_path / "second", port=port, password=PASSWORDS[1])
    url = first.start()

    def change() -> None:
        first.stop()
        second.start()  # the same address, another password

    _cleanups.extend([first.stop, second.stop])
    return url, change


def _reload_without_the_user(tmp_path: Path, port: int) -> tuple[str, Callable[[], None]]:
    """A nats-server whose configuration, reloaded, no longer has the password:
    it ends the live connection with an authorization violation."""
    store = tmp_path / "js"
    server = ConfiguredNats(tmp_path, password_config(port, PASSWORDS[0], store)).start()
    _cleanups.append(server.stop)
    return server.url, lambda: server.reload(password_config(port, PASSWORDS[1], store))


_cleanups: list[Callable[[], None]] = []


@pytest.fixture(autouse=True)
def _cleanup() -> None:
    yield
    while _cleanups:
        _cleanups.pop()()


@pytest.mark.parametrize("change", [_restart_with_another_password, _reload_without_the_user])
@pytest.mark.parametrize("command", COMMANDS, ids=["events", "status-watch"])
def test_a_command_refused_after_connecting_says_so_and_exits(
    tmp_path: Path, command: list[str], change: Callable[..., tuple[str, Callable[[], None]]]
) -> None:
    port = free_port()
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORDS[0] + "\n")
    password_file.chmod(0o600)
    url, change_password = change(tmp_path, port)
    env = {**os.environ, "OCELLUS_NATS_USER": "ocellus",
           "OCELLUS_NATS_PASSWORD_FILE": str(password_file), "OCELLUS_NODE_NAME": "refused.node",
           "OCELLUS_STATUS_INTERVAL": "0.5",
           "OCELLUS_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    proc = subprocess.Popen(
        [OCELLUS, *command, "--nats-url", url, "--log-level", "debug"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    out, err = LineReader(proc), LineReader(proc, proc.stderr)
    try:
        assert err.wait_for("NATS connected", 30), "\n".join(err.lines)
        if command[0] == "status":  # past its first requests: its report is out
            assert out.wait_for("", 30) is not None, "\n".join(err.lines)
        change_password()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(err.lines)
    assert proc.returncode == 1, text
    assert "refused this connection after it had been made" in text, text
    assert "authorization" in text and "run the command again" in text, text
    assert "Traceback" not in text, text


def test_a_nats_without_jetstream_is_a_clear_error(tmp_path: Path) -> None:
    """`status` reads heartbeats from a JetStream stream: without JetStream it says so,
    with no traceback."""
    server = ConfiguredNats(tmp_path, f"listen: 127.0.0.1:{free_port()}\n").start()
    _cleanups.append(server.stop)
    env = {**os.environ, "OCELLUS_NODE_NAME": "refused.node",
           "OCELLUS_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    out = subprocess.run([OCELLUS, "status", "--nats-url", server.url], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "no JetStream" in out.stderr and "Traceback" not in out.stderr, out.stderr
