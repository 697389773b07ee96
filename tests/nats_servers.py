"""Real nats-servers started from a config file, for the security and cluster
tests: users and permissions, TLS with a CA made here, JetStream clusters on
loopback. Client ports are picked by the server (-1); route ports cannot be,
so free ones are found first."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.natsserver import die_with_parent, find_binary


def password_config(port: int, password: str, store: Path) -> str:
    """One user, ``ocellus`` with ``password``, on a loopback port; JetStream."""
    user = f'{{ user: "ocellus", password: "{password}" }}'
    return (
        f"listen: 127.0.0.1:{port}\njetstream: {{ store_dir: {store} }}\n"
        f"authorization {{ users: [ {user} ] }}\n"
    )


def free_port() -> int:
    """A loopback port free right now (for routes, which cannot use port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ConfiguredNats:
    """``nats-server -c <conf>``: the config is written into ``directory``,
    which also holds the JetStream store and the log."""

    def __init__(self, directory: Path, config: str, name: str = "nats") -> None:
        self.directory = directory
        self.name = name
        self.config = config
        self.conf_path = directory / f"{name}.conf"
        self.log_path = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.monitor_url = ""

    def start(self, timeout: float = 15.0) -> ConfiguredNats:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config)
        ports_dir = self.directory / f"{self.name}-ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        self.proc = subprocess.Popen(
            [find_binary(), "-c", str(self.conf_path), "--ports_file_dir", str(ports_dir),
             "-l", str(self.log_path)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log()[-2000:]}")
            for ports_file in ports_dir.glob("*.ports"):
                try:
                    ports = json.loads(ports_file.read_text())
                except ValueError:
                    continue
                self.url = ports["nats"][0]
                self.monitor_url = (ports.get("monitoring") or [""])[0]
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server {self.name} not ready in {timeout}s: {self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def violations(self) -> list[str]:
        """The server's "Publish Violation" / "Subscription Violation" log lines."""
        return [line for line in self.log().splitlines() if "Violation" in line]

    def reload(self, config: str) -> None:
        """Another config, read by the running server (SIGHUP): e.g. users removed,
        whose live connections it then ends."""
        assert self.proc is not None
        self.config = config
        self.conf_path.write_text(config)
        self.proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class TestPki:
    """A CA made for one test run, a server certificate for 127.0.0.1 and
    localhost, and a client certificate (for servers that verify clients)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must fail


def make_pki(directory: Path) -> TestPki:
    """Generate the CA and certificates with `cryptography` (EC P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(
        ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str, server: bool
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return key, builder.sign(ca_key, hashes.SHA256())

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    pem = serialization.Encoding.PEM
    ca_key, ca = make_ca("ocellus test CA")
    server_key, server = leaf(ca_key, ca, "nats", server=True)
    client_key, client = leaf(ca_key, ca, "ocellus-service", server=False)
    _, other = make_ca("unrelated CA")
    return TestPki(
        ca=write("ca.pem", ca.public_bytes(pem)),
        server_cert=write("server.pem", server.public_bytes(pem)),
        server_key=write("server-key.pem", key_pem(server_key)),
        client_cert=write("client.pem", client.public_bytes(pem)),
        client_key=write("client-key.pem", key_pem(client_key)),
        other_ca=write("other-ca.pem", other.public_bytes(pem)),
    )
