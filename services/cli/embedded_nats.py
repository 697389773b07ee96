"""The NATS `ocellus up` embeds, as other `ocellus` commands find it: its URL
and the password of its one user, in the state directory. The password file
is readable by up's user only (root: /var/lib/ocellus), so only that user's
commands connect; everyone else is refused by the server."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TypeVar

from services.common.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)

USER = "ocellus"
URL_FILE = "nats.url"
PASSWORD_FILE = "nats-password"  # noqa: S105 (the name of the file, not a password)


def new_password(state_dir: Path) -> Path:
    """A fresh password for this run of `up`, in a file only its owner reads."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path


def publish(state_dir: Path, url: str) -> None:
    (state_dir / URL_FILE).write_text(url + "\n")


def withdraw(state_dir: Path) -> None:
    for name in (URL_FILE, PASSWORD_FILE):
        (state_dir / name).unlink(missing_ok=True)


def env(password_file: Path) -> dict[str, str]:
    """What a service started by `up` connects with."""
    return {"OCELLUS_NATS_USER": USER, "OCELLUS_NATS_PASSWORD_FILE": str(password_file)}


def with_embedded_nats(settings: S, state_dir: Path) -> S:
    """``settings`` pointed at the NATS a running `up` embeds, when they name no
    NATS or credentials of their own and `up` published one in ``state_dir``."""
    if "nats_url" in settings.model_fields_set or settings.nats_user or settings.nats_creds:
        return settings
    try:
        url = (state_dir / URL_FILE).read_text().strip()
    except OSError:
        return settings
    if not url:
        return settings
    password_file = state_dir / PASSWORD_FILE
    return settings.model_copy(
        update={"nats_url": url, "nats_user": USER, "nats_password_file": password_file}
    )
