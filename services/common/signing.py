"""Signed policies: an ed25519 signature over a policy's exact bytes, carried
in a last comment line so that the file stays a valid (Tetragon) policy:

    ...the policy YAML...
    # ocellus-signature: ed25519 <key id> <base64 signature>

The signature covers every byte before that line. A key id is the first 16
hex digits of the SHA-256 of the raw public key; trusted keys are PEM files
(``*.pub``) in a directory the enforcer is given.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.errors import OcellusError

MARKER = b"# ocellus-signature: ed25519 "


class SignatureError(OcellusError):
    """A policy that is unsigned, tampered with, or signed by a key not trusted."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate(private_path: Path) -> Path:
    """A new key pair: the private key (mode 0600) and ``<name>.pub`` next to it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an ed25519 private key")
    return key


def load_trusted(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``*.pub`` ed25519 key of ``directory``, by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(directory.glob("*.pub")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError(f"{path}: not an ed25519 public key")
        keys[key_id(key)] = key
    if not keys:
        raise SignatureError(f"no trusted keys (*.pub) in {directory}")
    return keys


def split(text: bytes) -> tuple[bytes, bytes | None]:
    """(signed body, signature line or None)."""
    body = text.rstrip(b"\n")
    at = body.rfind(b"\n") + 1
    last = body[at:]
    if not last.startswith(MARKER):
        return text, None
    return body[:at], last


def sign(text: bytes, key: Ed25519PrivateKey) -> bytes:
    """``text`` (any earlier signature line dropped) with its signature line."""
    body, _ = split(text)
    if not body.endswith(b"\n"):
        body += b"\n"
    signature = base64.b64encode(key.sign(body))
    return body + MARKER + key_id(key.public_key()).encode() + b" " + signature + b"\n"


def verify(text: bytes, trusted: dict[str, Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed ``text``; SignatureError otherwise."""
    body, line = split(text)
    if line is None:
        raise SignatureError("the policy is not signed (no '# ocellus-signature:' last line)")
    try:
        kid, signature = line[len(MARKER) :].decode().split(" ", 1)
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("the signature line is malformed") from None
    key = trusted.get(kid)
    if key is None:
        raise SignatureError(f"signed by key {kid}, which is not trusted here")
    try:
        key.verify(raw, body)
    except InvalidSignature:
        raise SignatureError(
            f"the signature by key {kid} does not verify: the policy was changed after signing"
        ) from None
    return kid
