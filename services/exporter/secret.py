"""Secrets in sink options, one way for every sink: ``token: Secret`` accepts
a literal string, ``{env: NAME}`` or ``{file: PATH}``, resolved while the
exporter config is validated (so a missing one is a config error naming the
sink, the field and where it looked) into a ``SecretStr``: shown as
'**********' in reprs, logs and errors; ``.get_secret_value()`` gives it.

Surrounding whitespace is dropped (a token file ends with a newline; a token
never starts or ends with a space), and an empty secret is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr

FORMS = "a secret is a string, {env: NAME} or {file: PATH}"


def resolve_secret(value: Any) -> Any:
    """The secret's value, from where ``value`` says; ValueError names the
    variable or file, never a value."""
    # Reading the environment here is deliberate: a secret named in the exporter
    # file ({env: NAME}) is not one of Ocellus's own settings.
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        secret, origin = value.strip(), "the literal value"
    elif isinstance(value, Mapping) and set(value) == {"env"}:
        name = str(value["env"])
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        secret, origin = os.environ[name].strip(), f"environment variable {name}"
    elif isinstance(value, Mapping) and set(value) == {"file"}:
        path = Path(str(value["file"]))
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ValueError(f"cannot read secret file {path}: {reason}") from None
        origin = f"secret file {path}"
    else:
        raise ValueError(FORMS)
    if not secret:
        raise ValueError(f"{origin} is empty")
    return secret


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]


def refuse_replaced_keys(data: Any, replaced: Mapping[str, str]) -> Any:
    """For a ``model_validator(mode="before")``: options an older exporter read
    (``token_env``...) are refused with what to write instead."""
    if isinstance(data, Mapping):
        for old, new in replaced.items():
            if old in data:
                hint = f"write {new}: {{env: NAME}} or {new}: {{file: PATH}}"
                raise ValueError(f"{old} is no longer read: {hint}")
    return data
