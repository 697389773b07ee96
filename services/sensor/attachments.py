"""Which tracepoints the generic hook program is attached to: exactly those
the pinned hook_config map names.

The enforcer writes the map and then asks for a sync (request/reply on
``ocellus.ctl.sensor.<node>.sync_hooks``); the sensor also syncs at start
(configs written before a restart resume at once) and with every
heartbeat, so a missed request costs at most one status interval.
"""

from __future__ import annotations

from typing import Any

from services.common import bpfsys
from services.common.logging import get_logger
from services.sensor.hook_records import HookKey
from services.sensor.probes import GENERIC_PROGRAM, ProcessProbes
from services.sensor.tp_link import TracepointLink

log = get_logger("ocellus.sensor")


class HookAttachments:
    def __init__(self, probes: ProcessProbes) -> None:
        self._prog_fd = int(probes.bpf.funcs[GENERIC_PROGRAM].fd)
        self._config = bpfsys.PinnedMap(probes.pin_dir / "hook_config")
        self._links: dict[int, TracepointLink] = {}  # by tracepoint id
        self.failed: dict[int, str] = {}  # tracepoint id -> why it is not attached
        self.program_id = bpfsys.prog_id(self._prog_fd)

    def sync(self) -> dict[str, Any]:
        """Attach to every tracepoint the map names, detach from the rest."""
        wanted = {key.tp_id for key in self._config.keys(HookKey)}
        for tp_id in set(self._links) - wanted:
            self._links.pop(tp_id).close()
        self.failed = {tp: why for tp, why in self.failed.items() if tp in wanted}
        for tp_id in wanted - set(self._links):
            try:
                self._links[tp_id] = TracepointLink(self._prog_fd, tp_id, cookie=tp_id)
            except OSError as e:
                if tp_id not in self.failed:
                    log.warning(
                        "cannot attach the hook program", tracepoint_id=tp_id, reason=str(e)
                    )
                self.failed[tp_id] = str(e)
            else:
                self.failed.pop(tp_id, None)
        return self.state()

    def state(self) -> dict[str, Any]:
        return {
            "program_id": self.program_id,
            "attached": sorted(self._links),
            "failed": {str(tp): why for tp, why in sorted(self.failed.items())},
        }

    @property
    def attached(self) -> set[int]:
        return set(self._links)

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
        self._config.close()
