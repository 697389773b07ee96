"""Session fixtures for a real Docker daemon and a local test image.

Images cannot be pulled here (no registry), so the test image is a busybox-static
rootfs brought in with ``docker import``. A missing prerequisite fails the test
with what to do about it; it never skips."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.natsserver import die_with_parent

TEST_IMAGE = "ocellus-test-busybox:latest"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "sleep", "true", "cat", "echo")
DOCKER_SOCKET = Path("/var/run/docker.sock")
SETUP_HINT = "run scripts/setup-host.sh as root (installs docker.io and busybox-static)"


@dataclass(frozen=True)
class DockerDaemon:
    """A running dockerd and the CLI to drive it."""

    cli: str
    socket: Path

    def run(self, *args: str, timeout: float = 60.0, stdin: bytes | None = None) -> str:
        """``docker <args>``; its stdout, stripped. Fails the test on error."""
        try:
            done = subprocess.run(
                [self.cli, *args], input=stdin, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"docker {' '.join(args)}: no answer within {timeout}s")
        if done.returncode != 0:
            pytest.fail(f"docker {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode().strip()


def _docker_answers(cli: str) -> bool:
    try:
        done = subprocess.run([cli, "info"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _wait_for_dockerd(cli: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dockerd exited with {proc.returncode}; its log:\n{_tail(log_path)}")
        if _docker_answers(cli):
            return
        time.sleep(0.2)
    proc.terminate()
    pytest.fail(f"dockerd did not answer within 60s; its log:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """dockerd, started for the session (and stopped after it) unless it already runs."""
    cli, dockerd = shutil.which("docker"), shutil.which("dockerd")
    if cli is None:
        pytest.fail(f"no docker CLI on PATH: {SETUP_HINT}")
    daemon = DockerDaemon(cli=cli, socket=DOCKER_SOCKET)
    if _docker_answers(cli):
        yield daemon
        return
    if dockerd is None:
        pytest.fail(f"docker does not answer and there is no dockerd on PATH: {SETUP_HINT}")
    if os.geteuid() != 0:
        pytest.fail("docker does not answer and starting dockerd needs root: run the tests as root")
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log_path.open("wb") as log_file:
        # die_with_parent: a killed test run does not leave a daemon behind.
        proc = subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    _wait_for_dockerd(cli, proc, log_path)
    yield daemon
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF file with no program interpreter."""
    pt_interp = 3
    data = path.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        return False
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    types = (struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum))
    return pt_interp not in types


def busybox_rootfs_tar() -> bytes:
    """A tarball of a rootfs with /bin/busybox and symlinks for a few applets."""
    if not BUSYBOX.exists():
        pytest.fail(f"{BUSYBOX} is missing: {SETUP_HINT}")
    if not _is_static_elf(BUSYBOX):
        pytest.fail(
            f"{BUSYBOX} is dynamically linked and cannot run alone in an image: {SETUP_HINT}"
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp"):
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(entry)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def busybox_image(docker_daemon: DockerDaemon) -> str:
    """The local image ocellus-test-busybox:latest, imported once and then reused."""
    found = subprocess.run(
        [docker_daemon.cli, "image", "inspect", TEST_IMAGE], capture_output=True, check=False
    )
    if found.returncode != 0:
        docker_daemon.run("import", "-", TEST_IMAGE, stdin=busybox_rootfs_tar())
    return TEST_IMAGE
