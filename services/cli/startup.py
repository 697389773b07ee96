"""nats-py without aiohttp at start-up.

nats-py imports aiohttp as it is imported (``nats/aio/transport.py``) only to
use it for WebSocket connections (``ws://``, ``wss://`` URLs), and importing
aiohttp builds its SSL contexts: 100-150 ms, a third of `ocellus policy apply`
on a 2-vCPU VM. So nats-py is imported here with a stand-in for aiohttp that
imports the real one at its first use: a WebSocket URL still works, and every
other command starts without aiohttp.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class ImportedOnUse(types.ModuleType):
    """Stands in for a module in the namespace of whoever imported it while
    the stand-in was in sys.modules; the first attribute looked up on it
    imports the real module (an ordinary import, cached as usual)."""

    def __getattr__(self, attr: str) -> Any:
        real = importlib.import_module(self.__name__)
        self.__dict__.update(vars(real))  # later lookups find it here, not in this hook
        return getattr(real, attr)


def import_nats() -> None:
    """Import nats-py, with aiohttp imported at its first use. Does nothing
    once nats-py or aiohttp is imported (there is nothing left to save)."""
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    spec = importlib.util.find_spec("aiohttp")
    stand_in = None
    if spec is not None:  # without aiohttp, nats-py does without WebSockets itself
        stand_in = ImportedOnUse(spec.name)
        stand_in.__spec__ = spec  # what `import` checks of a module already in sys.modules
        sys.modules[spec.name] = stand_in
    try:
        import nats  # noqa: F401 (imported for its side effect: the stand-in stays in nats-py)
    finally:
        if stand_in is not None and sys.modules.get("aiohttp") is stand_in:
            del sys.modules["aiohttp"]
