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


class BusRefusedError(BusUnavailableError):
    """NATS answered and refused: wrong credentials, an untrusted certificate.
    Retrying would not help, so connecting stops at once."""

    def __init__(self, url: str, waited: float, cause: str) -> None:
        OcellusError.__init__(self, f"NATS at {url} refused the connection: {cause}")
        self.url = url
        self.waited = waited


class BusLostError(OcellusError):
    """NATS refused a running service's connection for good (its credentials
    revoked or changed): the service stops, to be restarted with new ones."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"NATS refused the connection for good: {cause}")


class BusCredentialsError(OcellusError):
    """A NATS credentials, password or TLS file is missing or unusable."""

    def __init__(self, what: str, path: object, reason: str) -> None:
        super().__init__(f"NATS {what} {path}: {reason}")
        self.what = what
        self.path = path
