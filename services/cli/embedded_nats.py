"""The NATS `ocellus up` embeds, as other `ocellus` commands find it: its URL
and the password of its one user, in the state directory, while `up` holds
the directory's lock. The password file is readable by up's user only, so
only that user's commands connect; everyone else is refused by the server.

The state directory must be up's user's own and writable by no one else,
and nothing there is followed through a symlink: another user who could
plant a file there could read the password or swap the URL."""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from pathlib import Path
from typing import TypeVar

from services.common.errors import OcellusError
from services.common.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)

USER = "ocellus"
URL_FILE = "nats.url"
PASSWORD_FILE = "nats-password"  # noqa: S105 (the name of the file, not a password)
LOCK_FILE = "up.lock"


class StateDirError(OcellusError):
    """The state directory cannot be used safely, or another `up` runs there."""


class UpLock:
    """`up`'s hold on its state directory: one `up` per directory, and the
    sign to other commands that what it published there is current."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private(state_dir)
        try:
            self._fd = _open_private(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise StateDirError(f"state directory {state_dir}: {e}") from e
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StateDirError(
                f"another `ocellus up` runs with the state directory {state_dir}"
            ) from None

    def new_password(self) -> tuple[str, Path]:
        """A fresh password for this run, and the file (0600) that holds it."""
        password = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: safe in a NATS config string
        path = self.state_dir / PASSWORD_FILE
        _write_private(path, password + "\n")
        return password, path

    def publish(self, url: str) -> None:
        _write_private(self.state_dir / URL_FILE, url + "\n")

    def release(self) -> None:
        for name in (URL_FILE, PASSWORD_FILE):
            (self.state_dir / name).unlink(missing_ok=True)
        os.close(self._fd)  # the lock goes with it


def env(password_file: Path) -> dict[str, str]:
    """What a service started by `up` connects with."""
    return {"OCELLUS_NATS_USER": USER, "OCELLUS_NATS_PASSWORD_FILE": str(password_file)}


def with_embedded_nats(settings: S, state_dir: Path) -> S:
    """``settings`` pointed at the NATS a running `up` embeds, when they name no
    NATS, credentials or TLS of their own and an `up` holds ``state_dir``."""
    if (
        "nats_url" in settings.model_fields_set
        or settings.nats_user
        or settings.nats_creds
        or settings.nats_tls_ca
        or settings.nats_tls_cert
    ):
        return settings
    url = _published_url(state_dir)
    if url is None:
        return settings
    password_file = state_dir / PASSWORD_FILE
    return settings.model_copy(
        update={"nats_url": url, "nats_user": USER, "nats_password_file": password_file}
    )


def check_private(directory: Path) -> None:
    """``directory`` is this user's and no one else may write in it."""
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state directory {directory} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(
            f"state directory {directory} must be owned by uid {os.geteuid()} and writable "
            "by no one else (it holds the embedded NATS's password)"
        )


def _published_url(state_dir: Path) -> str | None:
    """The URL a live `up` published in ``state_dir`` (None: none runs, or the
    directory or the file is not this user's alone)."""
    try:
        check_private(state_dir)
        lock = _open_private(state_dir / LOCK_FILE, os.O_RDONLY)
    except (OSError, StateDirError):
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # held by a live `up`: what it published is current
    else:
        return None  # no `up` holds it: the files, if any, are stale
    finally:
        os.close(lock)
    try:
        fd = _open_private(state_dir / URL_FILE, os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        url = f.read().decode(errors="replace").strip()
    return url or None


def _open_private(path: Path, flags: int) -> int:
    """``path`` opened without following a symlink; it must be this user's."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise OSError(f"{path} is not owned by uid {os.geteuid()}")
    return fd


def _write_private(path: Path, text: str) -> None:
    """``path`` replaced whole (0600): readers never see half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
