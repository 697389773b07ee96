"""Errors shared by every service; each carries what a person needs to act."""

from __future__ import annotations


class OcellusError(Exception):
    """Base of the errors Ocellus raises on purpose."""


class BusUnavailableError(OcellusError):
    """NATS could not be reached within the connect timeout."""

    def __init__(self, url: str, waited: float, cause: str) -> None:
        super().__init__(f"cannot reach NATS at {url} after {waited:.1f}s: {cause}")
        self.url = url
        self.waited = waited
