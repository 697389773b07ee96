"""A private rsyslogd (Debian's ``rsyslog`` + ``rsyslog-gnutls``) for syslog
sink tests: its own config, pid file and work directory in a temp dir, never
the system's. It listens on 127.0.0.1 over UDP, TCP and TLS (GnuTLS driver,
server certificate from a throwaway CA made here with ``cryptography``) and
writes every message it receives, raw (``%rawmsg%``: PRI, header and MSG as
sent, octet-count framing removed), one per line, to ``messages.log``.

Control characters are kept as received (``escapeControlCharactersOnReceive``
off) so a LEEF tab arrives as a tab, not ``#011``.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PROBE = "ocellus-rsyslog-probe"


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A CA and a server certificate for ``host`` (as an IP SAN), valid for a day."""
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str,
        issuer: x509.Name | None,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("ocellus test CA", None, ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = build(host, ca.subject, server_key, ca_key, ca=False)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def free_udp_port() -> int:
    # imudp cannot report a port it chose, so pick one; the window is tiny on loopback.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


CONFIG = """\
global(
  workDirectory="{work}"
  maxMessageSize="256k"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriverCAFile="{tls.ca_cert}"
  defaultNetstreamDriverCertFile="{tls.server_cert}"
  defaultNetstreamDriverKeyFile="{tls.server_key}"
)
module(load="imudp")
module(load="imtcp" maxSessions="20")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{dir}/tcp.port")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{dir}/tls.port"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="raw" type="string" string="%rawmsg%\\n")
if $rawmsg contains "{probe}" then {{
  action(type="omfile" file="{dir}/probe.log" template="raw")
  stop
}}
action(type="omfile" file="{dir}/messages.log" template="raw")
"""


@dataclass
class Rsyslog:
    directory: Path
    udp_port: int
    tcp_port: int
    tls_port: int
    tls: TlsFiles

    @property
    def messages_path(self) -> Path:
        return self.directory / "messages.log"

    def lines(self) -> list[str]:
        if not self.messages_path.exists():
            return []
        return self.messages_path.read_text(encoding="utf-8").splitlines()

    def wait_for(self, needle: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The received lines containing ``needle``, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if needle in line]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def _wait_ready(directory: Path, udp_port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"rsyslogd exited {proc.returncode}: {_stderr(directory)}")
            ports = [directory / "tcp.port", directory / "tls.port"]
            if all(p.exists() and p.read_text().strip() for p in ports):
                # UDP has no port file: a probe datagram that lands says imudp is up.
                sock.sendto(f"<14>1 - - - - - - {PROBE}".encode(), ("127.0.0.1", udp_port))
                probe = directory / "probe.log"
                if probe.exists() and probe.stat().st_size:
                    return
            time.sleep(0.05)
    pytest.fail(f"rsyslogd did not get ready in 15 s: {_stderr(directory)}")


def _stderr(directory: Path) -> str:
    path = directory / "rsyslogd.err"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    """A private rsyslogd on loopback UDP, TCP and TLS ports, for one test."""
    binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not Path(binary).exists():
        pytest.fail("rsyslogd not found: apt-get install rsyslog rsyslog-gnutls")
    directory = tmp_path / "rsyslog"
    (directory / "work").mkdir(parents=True)
    tls = make_tls_files(directory)
    udp_port = free_udp_port()
    conf = directory / "rsyslog.conf"
    conf.write_text(
        CONFIG.format(
            work=directory / "work", dir=directory, tls=tls, udp_port=udp_port, probe=PROBE
        )
    )
    with (directory / "rsyslogd.err").open("wb") as err:
        proc = subprocess.Popen(
            [binary, "-n", "-f", str(conf), "-i", str(directory / "rsyslogd.pid")],
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(directory, udp_port, proc)
        yield Rsyslog(
            directory=directory,
            udp_port=udp_port,
            tcp_port=int((directory / "tcp.port").read_text()),
            tls_port=int((directory / "tls.port").read_text()),
            tls=tls,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
