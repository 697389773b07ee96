"""Credentials, permissions and TLS against a real secured nats-server: wrong
or missing credentials stop a service at once with a line saying why; the
exporter's user cannot publish raw records or write policies; plain and
untrusted connections are refused; deploy/nats/users.conf is what the
permissions table renders."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import nats.errors
import pytest
import yaml
from nats.aio.client import Client as NATS

from schemas import subjects
from services.common import bus
from services.common.errors import BusCredentialsError, BusRefusedError, BusUnavailableError
from services.common.permissions import render_users
from tests.conftest import REPO, ServiceProcess
from tests.security.conftest import ADMIN, SecuredNats


def auth_for(secured: SecuredNats, user: str, **changes: object) -> bus.NatsAuth:
    fields: dict[str, object] = {
        "user": user,
        "password_file": secured.password_files[user],
        "tls_ca": secured.pki.ca,
        "tls_cert": secured.pki.client_cert,
        "tls_key": secured.pki.client_key,
    }
    fields.update(changes)
    return bus.NatsAuth(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def admin(secured: SecuredNats) -> AsyncIterator[NATS]:
    nc = await bus.connect(secured.url, name="test-admin", auth=auth_for(secured, ADMIN))
    yield nc
    await nc.close()


def exporter_process(secured: SecuredNats, tmp_path: Path, **env: str) -> ServiceProcess:
    config = tmp_path / "exporter.yaml"
    sink = {"name": "f", "type": "json_file", "options": {"path": str(tmp_path / "e.json")}}
    config.write_text(yaml.safe_dump({"sinks": [sink]}))
    return ServiceProcess(
        "exporter",
        secured.env(
            "exporter",
            OCELLUS_NODE_NAME="auth.node",
            OCELLUS_EXPORTER_CONFIG_FILE=str(config),
            **env,
        ),
        tmp_path / "exporter.log",
    )


def error_line(service: ServiceProcess) -> dict[str, object]:
    lines = [json.loads(x) for x in service.log().splitlines() if x.startswith("{")]
    [line] = [x for x in lines if x.get("event") == f"{service.name} cannot run"]
    return line


def test_service_with_a_wrong_password_exits_1_naming_url_and_reason(
    secured: SecuredNats, tmp_path: Path
) -> None:
    """A wrong password: exit 1 within a second or two (not after the connect
    timeout), one error line naming the URL and "authorization violation"."""
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    started = time.monotonic()
    service = exporter_process(secured, tmp_path, OCELLUS_NATS_PASSWORD_FILE=str(wrong))
    code = service.proc.wait(30)
    took = time.monotonic() - started
    assert code == 1, service.log()
    reason = str(error_line(service)["reason"])
    assert secured.url in reason and "authorization violation" in reason, reason
    assert took < 8, f"took {took:.1f}s: a refusal must not wait for the connect timeout"
    service.stop()


def test_service_with_a_missing_password_file_exits_1_naming_it(
    secured: SecuredNats, tmp_path: Path
) -> None:
    """A password file that does not exist is named in the error line."""
    missing = tmp_path / "nope" / "exporter.password"
    service = exporter_process(secured, tmp_path, OCELLUS_NATS_PASSWORD_FILE=str(missing))
    assert service.proc.wait(30) == 1, service.log()
    reason = str(error_line(service)["reason"])
    assert str(missing) in reason and "no such file" in reason, reason
    service.stop()


async def test_exporter_credentials_cannot_publish_raw_or_write_policies(
    secured: SecuredNats, admin: NATS
) -> None:
    """As the exporter's user: a raw record is refused with a permissions
    violation and nobody on ocellus.raw.> receives it; a policy put fails and
    the policies bucket is unchanged."""
    received: list[str] = []

    async def on_raw(msg: object) -> None:
        received.append(msg.subject)  # type: ignore[attr-defined]

    await admin.subscribe(subjects.raw_all(), cb=on_raw)
    policies = await bus.key_value(admin, subjects.POLICY_BUCKET)
    await admin.flush()

    exporter = await bus.connect(
        secured.url, name="as-exporter", auth=auth_for(secured, "exporter"),
        inbox_prefix=subjects.inbox("exporter"),
    )  # fmt: skip
    forged = subjects.raw("victim.node", subjects.PROCESS_EXEC)
    try:
        await exporter.publish(forged, b"forged")
        await exporter.flush()
        await asyncio.sleep(0.3)
        error = str(exporter.last_error).lower()
        assert "permissions violation" in error and forged in error, error
        with pytest.raises((nats.errors.Error, TimeoutError)):
            kv = await exporter.jetstream(timeout=2).key_value(subjects.POLICY_BUCKET)
            await kv.put("forged-policy", b"kind: TracingPolicy")
        await asyncio.sleep(0.5)
    finally:
        await exporter.close()
    assert received == []
    assert "forged-policy" not in (await _keys(policies))
    assert any('user:exporter" - Publish Violation' in v for v in secured.server.violations())


async def _keys(kv: object) -> list[str]:
    try:
        return await kv.keys()  # type: ignore[attr-defined,no-any-return]
    except nats.js.errors.NoKeysError:
        return []


async def test_sensor_credentials_cannot_read_policies(secured: SecuredNats) -> None:
    """The sensor's user has no JetStream access: opening the policies bucket fails."""
    sensor = await bus.connect(
        secured.url, name="as-sensor", auth=auth_for(secured, "sensor"),
        inbox_prefix=subjects.inbox("sensor"),
    )  # fmt: skip
    try:
        with pytest.raises((nats.errors.Error, TimeoutError, asyncio.TimeoutError)):
            await sensor.jetstream(timeout=2).key_value(subjects.POLICY_BUCKET)
        # Nor may it read another service's replies.
        await sensor.subscribe(f"{subjects.inbox('enforcer')}.>")
        await sensor.flush()
        await asyncio.sleep(0.3)
        assert "permissions violation" in str(sensor.last_error).lower()
    finally:
        await sensor.close()
    assert any('user:sensor" - Subscription Violation' in v for v in secured.server.violations())


async def test_plain_connection_is_refused_when_tls_is_required(secured: SecuredNats) -> None:
    """The server announces tls_required; a client that speaks plain NATS gets
    no PONG, and nats-py without the CA fails certificate verification."""
    host, port = _host_port(secured.url)
    reader, writer = await asyncio.open_connection(host, port)
    info = json.loads((await reader.readline()).decode().removeprefix("INFO "))
    assert info["tls_required"] is True
    user, password = "exporter", secured.passwords["exporter"]
    connect = {"user": user, "pass": password, "verbose": False, "pedantic": False}
    writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    assert b"PONG" not in answer

    with pytest.raises(BusRefusedError) as refused:
        await bus.connect(
            secured.url, name="no-ca", timeout=5,
            auth=auth_for(secured, "exporter", tls_ca=secured.pki.other_ca),
        )  # fmt: skip
    assert "certificate verification failed" in str(refused.value), refused.value


async def test_client_without_a_certificate_is_refused(secured: SecuredNats) -> None:
    """The server verifies client certificates: a right password is not enough."""
    with pytest.raises(BusUnavailableError) as refused:
        await bus.connect(
            secured.url, name="no-cert", timeout=3,
            auth=auth_for(secured, "exporter", tls_cert=None, tls_key=None),
        )  # fmt: skip
    assert secured.url in str(refused.value)


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    """A CA file that does not exist is named before any connection is tried."""
    with pytest.raises(BusCredentialsError, match=str(tmp_path / "ca.pem")):
        bus.NatsAuth(tls_ca=tmp_path / "ca.pem").options("nats://127.0.0.1:4222")


def test_tls_connection_is_encrypted(secured: SecuredNats) -> None:
    """What the server negotiates with a service's settings is TLS 1.2 or newer."""
    host, port = _host_port(secured.url)
    context = bus.NatsAuth(tls_ca=secured.pki.ca, tls_cert=secured.pki.client_cert,
                           tls_key=secured.pki.client_key)._tls_context()  # fmt: skip
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.recv(4096)  # INFO comes in clear, then the client starts TLS
        with context.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.getpeercert()["subjectAltName"] == (
                ("DNS", "localhost"),
                ("IP Address", "127.0.0.1"),
            )


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None, url
    return parsed.hostname, parsed.port


def test_users_conf_is_what_the_table_renders() -> None:
    """deploy/nats/users.conf is generated: it must not drift from the table."""
    committed = (REPO / "deploy" / "nats" / "users.conf").read_text()
    assert committed == render_users(), (
        "run: python -m services.common.permissions > deploy/nats/users.conf"
    )
