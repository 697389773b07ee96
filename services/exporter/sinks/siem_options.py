"""Options the SIEM sinks (syslog, Splunk HEC, Elasticsearch) share: TLS files
that must exist, checked while the exporter config is validated (so a mistyped
CA path is a config error naming the sink and field, not a failure at the first
send), and the client TLS context. Secrets: secret.py.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator


def _readable_file(path: str) -> str:
    try:
        with Path(path).open("rb"):
            return path
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e


# A path option (CA bundle, certificate, key) that must name a readable file.
ReadableFile = Annotated[str, AfterValidator(_readable_file)]


def client_tls_context(
    ca_file: str | None,
    verify: bool,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A client context: the system CAs or ``ca_file``; ``verify=False`` turns off
    both the chain and the name check (an explicit, insecure opt-out)."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context
