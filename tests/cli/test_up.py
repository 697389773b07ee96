"""`ocellus up`, `ocellus events` and the sensor as people run them: real
processes, real NATS, real BPF."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO

import pytest

from schemas.events import GetEventsResponse
from tests.conftest import REPO, ServiceProcess, require_root

OCELLUS = str(Path(sys.executable).parent / "ocellus")


class LineReader:
    """Reads a child's stdout lines on a thread, all the time: a pipe left full
    would block the child's writes (and with them its event loop)."""

    def __init__(self, proc: subprocess.Popen[bytes], stream: IO[bytes] | None = None) -> None:
        """``stream``: another of its pipes (stderr) instead."""
        self.lines: list[str] = []
        self._stdout = stream or proc.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._stdout is not None
        for raw in self._stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.02)
        return None


def _start_up(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "up.log"
    env = {
        **os.environ,
        "OCELLUS_NATS_PORT": "0",
        "OCELLUS_LOG_FORMAT": "json",
        "OCELLUS_NODE_NAME": "up-test",
    }
    env.pop("OCELLUS_NATS_URL", None)
    proc = subprocess.Popen(
        [OCELLUS, "up", "--state-dir", str(tmp_path / "state"), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        stdin=subprocess.DEVNULL,
    )
    return proc, log


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while '"sensor running"' not in log.read_text() or '"ocellus up"' not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"ocellus up not ready (rc={proc.poll()}):\n{log.read_text()}")
        time.sleep(0.05)


@pytest.mark.bpf
def test_up_prints_a_command_run_after_it_started(tmp_path: Path) -> None:
    """`ocellus up` shows a live compact line for a command run after start."""
    require_root()
    proc, log = _start_up(tmp_path)
    reader = LineReader(proc)
    try:
        _wait_ready(proc, log)
        tag = f"up-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/echo", tag, "two words"], check=True, stdout=subprocess.DEVNULL)
        line = reader.wait_for(tag, timeout=10)
        assert line == f"🚀 process up-test /bin/echo {tag} 'two words'", reader.lines
        exit_line = reader.wait_for("💥 exit", timeout=10)
        assert exit_line is not None
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.bpf
def test_up_json_lines_are_tetragon_events(tmp_path: Path) -> None:
    """`ocellus up -o json` prints one Tetragon-shaped JSON object per line."""
    require_root()
    proc, log = _start_up(tmp_path, "-o", "json")
    reader = LineReader(proc)
    try:
        _wait_ready(proc, log)
        tag = f"json-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/true", tag], check=True)
        line = reader.wait_for(tag, timeout=10)
        assert line is not None
        event = GetEventsResponse.from_json_dict(json.loads(line))
        assert event.process_exec is not None
        assert event.process_exec.process.binary == "/bin/true"
        assert event.process_exec.process.arguments == tag
        assert event.node_name == "up-test"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.bpf
def test_sigterm_stops_up_and_every_service_with_0_within_5s(tmp_path: Path) -> None:
    """SIGTERM to `ocellus up` stops the services and NATS in order; all exit 0 in 5 s."""
    require_root()
    proc, log = _start_up(tmp_path)
    LineReader(proc)
    _wait_ready(proc, log)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"ocellus up still running 5 s after SIGTERM:\n{log.read_text()}")
    assert time.monotonic() - started < 5
    assert rc == 0, log.read_text()
    down = [json.loads(x) for x in log.read_text().splitlines() if '"ocellus down"' in x]
    assert down and down[0]["returncodes"] == {"sensor": 0, "enricher": 0, "enforcer": 0}


@pytest.mark.bpf
def test_sigterm_stops_the_sensor_with_0_within_5s(module_nats_url: str, tmp_path: Path) -> None:
    """The sensor alone: SIGTERM → detach, drain, exit 0 within 5 s."""
    require_root()
    service = ServiceProcess(
        "sensor", {"OCELLUS_NATS_URL": module_nats_url}, tmp_path / "sensor.log"
    )
    service.wait_for_log('"sensor running"')
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    rc = service.proc.wait(5)
    assert time.monotonic() - started < 5
    assert rc == 0, service.log()
    assert '"sensor stopped"' in service.log()


def test_unreachable_nats_is_a_clear_error(tmp_path: Path) -> None:
    """`ocellus events` against a closed port fails fast, naming the URL."""
    env = {**os.environ, "OCELLUS_NATS_CONNECT_TIMEOUT": "1", "OCELLUS_LOG_FORMAT": "json"}
    done = subprocess.run(
        [OCELLUS, "events", "--nats-url", "nats://127.0.0.1:9"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "cannot reach NATS at nats://127.0.0.1:9" in done.stderr


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    """A bad OCELLUS_* value stops the command with the setting's name."""
    env = {**os.environ, "OCELLUS_NATS_CONNECT_TIMEOUT": "soon"}
    done = subprocess.run(
        [OCELLUS, "events"], env=env, cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "nats_connect_timeout" in done.stderr


@pytest.mark.bpf
def test_the_embedded_nats_admits_only_ups_user(tmp_path: Path) -> None:
    """Other users of the machine cannot reach the NATS `up` embeds (they could
    delete policies or forge events): it wants the password `up` wrote, in a
    file only its owner reads and on no command line; `ocellus` commands of
    that user find it, with the URL, in the state directory."""
    require_root()
    proc, log = _start_up(tmp_path)
    LineReader(proc)
    state = tmp_path / "state"
    try:
        _wait_ready(proc, log)
        url = (state / "nats.url").read_text().strip()
        password_file = state / "nats-password"
        password = password_file.read_text().strip()
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert password not in log.read_text()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                assert password.encode() not in cmdline.read_bytes()
        connect = (
            "import asyncio, nats\n"
            f"asyncio.run(nats.connect({url!r}, allow_reconnect=False, connect_timeout=3))"
        )
        refused = subprocess.run(
            [sys.executable, "-c", connect], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode != 0 and "authorization" in refused.stderr.lower()
        assert not list((state / "nats").glob("*.conf"))  # read by the server, gone
        env = {**os.environ, "OCELLUS_STATE_DIR": str(state), "OCELLUS_NODE_NAME": "up-test",
               "OCELLUS_NATS_CONNECT_TIMEOUT": "2"}  # fmt: skip
        env.pop("OCELLUS_NATS_URL", None)
        listed = subprocess.run(
            [OCELLUS, "policy", "list", "--state-dir", str(state)],
            env={k: v for k, v in env.items() if k != "OCELLUS_STATE_DIR"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        second = subprocess.run([OCELLUS, "up", "--state-dir", str(state)], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert second.returncode == 1 and "another `ocellus up`" in second.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    assert not (state / "nats.url").exists() and not (state / "nats-password").exists()
    # A URL left by an `up` that no longer runs (killed) is not used.
    (state / "nats.url").write_text("nats://127.0.0.1:9\n")
    stale = subprocess.run(
        [OCELLUS, "policy", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert stale.returncode != 0 and "127.0.0.1:9" not in stale.stderr


def test_up_refuses_a_state_directory_others_may_write(tmp_path: Path) -> None:
    """The state directory holds the embedded NATS's password: `up` refuses
    one that others may write in (they could plant a link to read it)."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    env = {**os.environ, "OCELLUS_LOG_FORMAT": "json"}
    env.pop("OCELLUS_NATS_URL", None)
    up = subprocess.run([OCELLUS, "up", "--state-dir", str(state)], env=env,
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert up.returncode == 1 and "writable by no one else" in up.stderr
    assert not (state / "nats-password").exists()
