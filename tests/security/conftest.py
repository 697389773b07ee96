"""A nats-server as deploy/nats/users.conf makes it: one user per service with
the permissions of services/common/permissions.py, TLS with a CA made for the
run (client certificates verified), plus an `admin` user for the tests' own
observations. Each service gets its password from a file."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.permissions import SERVICES, render_users
from tests.nats_servers import ConfiguredNats, TestPki, make_pki

ADMIN = "admin"


@dataclass(frozen=True)
class SecuredNats:
    server: ConfiguredNats
    pki: TestPki
    passwords: dict[str, str]
    password_files: dict[str, Path]

    @property
    def url(self) -> str:
        return self.server.url

    def env(self, service: str, **overrides: str) -> dict[str, str]:
        """OCELLUS_* for a service connecting as its own user over TLS."""
        return {
            "OCELLUS_NATS_URL": self.url,
            "OCELLUS_NATS_USER": service,
            "OCELLUS_NATS_PASSWORD_FILE": str(self.password_files[service]),
            "OCELLUS_NATS_TLS_CA": str(self.pki.ca),
            "OCELLUS_NATS_TLS_CERT": str(self.pki.client_cert),
            "OCELLUS_NATS_TLS_KEY": str(self.pki.client_key),
            **overrides,
        }


def secured_config(pki: TestPki, passwords: dict[str, str], store: Path) -> str:
    """users.conf's authorization block (with test passwords and an admin),
    TLS required with client certificates verified, JetStream."""
    users = render_users(passwords).replace(
        "  users = [\n",
        f'  users = [\n    {{ user: {ADMIN}, password: "{passwords[ADMIN]}" }}\n',
        1,
    )
    return f"""
listen: 127.0.0.1:-1
server_name: secured
jetstream {{ store_dir: "{store}" }}
tls {{
  cert_file: "{pki.server_cert}"
  key_file: "{pki.server_key}"
  ca_file: "{pki.ca}"
  verify: true
  timeout: 2
}}
{users}
"""


def start_secured(directory: Path) -> SecuredNats:
    pki = make_pki(directory / "pki")
    passwords = {s: secrets.token_urlsafe(18) for s in (*SERVICES, ADMIN)}
    files = {}
    for service, password in passwords.items():
        path = directory / "secrets" / f"{service}.password"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
        files[service] = path
    server = ConfiguredNats(directory, secured_config(pki, passwords, directory / "js"))
    return SecuredNats(server.start(), pki, passwords, files)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    """One secured nats-server for a module's tests."""
    nats = start_secured(tmp_path_factory.mktemp("secured"))
    yield nats
    nats.server.stop()
