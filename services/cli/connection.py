"""The NATS connection of an `ocellus` command: named after the command, with
the settings' credentials, its replies in the CLI's inboxes; and what a
long-running command does when the server refuses it once connected."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from nats.aio.client import Client as NATS

from schemas import subjects
from services.cli.settings import Settings
from services.common import bus


class Refused:
    """Set when NATS refuses a command's connection after it had been made: the
    `ocellus up` it found restarted (each start makes a new password), or its
    credentials were revoked. Retrying with the same ones cannot help, so a
    command that waits on ``stop`` (if given) stops, and says why."""

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None
        self._stop = stop

    def __call__(self, why: str) -> None:
        if self.reason is None:
            self.reason = why
            self.event.set()
            if self._stop is not None:
                self._stop.set()

    async def sleep(self, seconds: float) -> None:
        """Up to ``seconds``: less if the connection is refused meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)

    def report(self, command: str, url: str) -> int:
        """Print why the command stopped; its exit status."""
        print(
            f"ocellus {command}: NATS ({url}) refused this connection after it had been made: "
            f"{self.reason}. An `ocellus up` makes a new password each time it starts: "
            "run the command again.",
            file=sys.stderr,
        )
        return 1


async def connect(settings: Settings, command: str, refused: Refused | None = None) -> NATS:
    return await bus.connect(
        settings.nats_url,
        name=f"ocellus-{command}",
        timeout=settings.nats_connect_timeout,
        auth=bus.NatsAuth.of(settings),
        inbox_prefix=subjects.inbox("cli"),
        on_refused=refused,
    )
