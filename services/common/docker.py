"""Just enough of the Docker Engine API for enrichment: container inspect over
the daemon's unix socket, every call bounded by a timeout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from schemas.events import parse_timestamp
from services.common.errors import OcellusError

# Go's zero time.Time: what Docker reports for "never started".
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class DockerUnavailableError(OcellusError):
    """The daemon could not be asked, or answered with something unusable."""

    def __init__(self, socket: Path, reason: str) -> None:
        super().__init__(f"Docker Engine API at {socket}: {reason}")
        self.socket = socket
        self.reason = reason


class DockerClient:
    """An aiohttp session on the Docker socket, opened on first use."""

    def __init__(self, socket: Path, *, timeout: float = 2.0) -> None:
        self.socket = socket
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        """``GET /containers/<id>/json``; None when the daemon does not know the id."""
        session = self._session_for_loop()
        url = f"http://docker/containers/{quote(container_id, safe='')}/json"
        try:
            async with session.get(url) as response:
                if response.status == 404:
                    return None
                body = await response.read()
                if response.status != 200:
                    message = _error_message(body)
                    raise DockerUnavailableError(self.socket, f"HTTP {response.status}: {message}")
        except (aiohttp.ClientError, OSError) as e:
            raise DockerUnavailableError(self.socket, str(e) or type(e).__name__) from e
        except TimeoutError as e:
            raise DockerUnavailableError(self.socket, f"no answer within {self.timeout}s") from e
        try:
            document = json.loads(body)
        except ValueError as e:
            raise DockerUnavailableError(self.socket, f"inspect returned bad JSON: {e}") from e
        if not isinstance(document, dict):
            raise DockerUnavailableError(self.socket, "inspect returned no JSON object")
        return document

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No keep-alive pool worth having for a handful of calls per new container,
            # and a fresh connection notices a restarted daemon.
            connector = aiohttp.UnixConnector(path=str(self.socket), force_close=True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session


def _error_message(body: bytes) -> str:
    # The daemon's errors are {"message": "..."}.
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")


def parse_docker_time(value: object) -> int | None:
    """Docker's RFC 3339 timestamps (Go's RFC3339Nano: up to 9 fractional
    digits, trailing zeros trimmed) → ns since the epoch; None for Go's zero
    time ("never"), a missing value, or anything that is not RFC 3339."""
    if not isinstance(value, str) or not value or value == _GO_ZERO_TIME:
        return None
    try:
        ns = parse_timestamp(value)
    except ValueError:  # includes out-of-range fields: month 13, second 60
        return None
    return ns if isinstance(ns, int) and ns > 0 else None
