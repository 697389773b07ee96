"""A policy text's revision: what `ocellus policy list` shows and `apply` waits
for. Its own module so the CLI need not import the compiler to compute it."""

from __future__ import annotations

import hashlib


def revision_of(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:12]
