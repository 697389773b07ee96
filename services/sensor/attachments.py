"""Which tracepoints the generic hook program is attached to: exactly those
the pinned hook_config map names.

The enforcer writes the map and then asks for a sync (request/reply on
``ocellus.ctl.sensor.<node>.sync_hooks``); the sensor also syncs at start
(configs written before a restart resume at once) and with every
heartbeat, so a missed request costs at most one status interval.
"""

from __future__ import annotations

import errno
from typing import Any

from services.common import bpfsys
from services.common.logging import get_logger
from services.sensor.hook_records import SLOT_RETURN, HookKey
from services.sensor.probes import (
    GENERIC_ARGS_PROGRAM,
    GENERIC_EXIT_PROGRAM,
    GENERIC_PROGRAM,
    ProcessProbes,
)
from services.sensor.tp_link import TracepointLink

log = get_logger("ocellus.sensor")


class HookAttachments:
    def __init__(self, probes: ProcessProbes) -> None:
        self._prog_fd = int(probes.bpf.funcs[GENERIC_PROGRAM].fd)
        # Where the record is long enough, the engine's entry with the first args.
        self._args_fd = int(probes.bpf.funcs[GENERIC_ARGS_PROGRAM].fd)
        self._config = bpfsys.PinnedMap(probes.pin_dir / "hook_config")
        self._links: dict[int, TracepointLink] = {}  # by tracepoint id
        # return: true hooks: the exit program on their sys_exit_* tracepoints
        self._exit_fd = int(probes.bpf.funcs[GENERIC_EXIT_PROGRAM].fd)
        self._exit_links: dict[int, TracepointLink] = {}
        self.failed: dict[int, str] = {}  # tracepoint id -> why it is not attached
        self.program_id = bpfsys.prog_id(self._prog_fd)
        self.args_program_id = bpfsys.prog_id(self._args_fd)

    def sync(self) -> dict[str, Any]:
        """Attach to every tracepoint the map names, detach from the rest: the
        generic program where hooks enter, the exit program where the exit side
        of a return: true hook is (keys with SLOT_RETURN)."""
        keys = self._config.keys(HookKey)
        exits = {key.tp_id for key in keys if key.slot & SLOT_RETURN}
        self._sync_links(self._exit_links, exits, (self._exit_fd,))
        wanted = {key.tp_id for key in keys if not key.slot & SLOT_RETURN}
        self.failed = {tp: why for tp, why in self.failed.items() if tp in wanted | exits}
        self._sync_links(self._links, wanted, (self._args_fd, self._prog_fd))
        return self.state()

    def _sync_links(
        self, links: dict[int, TracepointLink], wanted: set[int], prog_fds: tuple[int, ...]
    ) -> None:
        """``prog_fds``: the program to attach, or the ones to try in turn (the
        kernel refuses a program reading past the end of a shorter record)."""
        for tp_id in set(links) - wanted:
            links.pop(tp_id).close()
        for tp_id in wanted - set(links):
            try:
                links[tp_id] = _attach_first(prog_fds, tp_id)
            except OSError as e:
                if tp_id not in self.failed:
                    log.warning(
                        "cannot attach the hook program", tracepoint_id=tp_id, reason=str(e)
                    )
                self.failed[tp_id] = str(e)
            else:
                self.failed.pop(tp_id, None)

    def state(self) -> dict[str, Any]:
        return {
            "program_id": self.program_id,
            "args_program_id": self.args_program_id,
            "attached": sorted(self._links),
            # those where the entry with the first args runs the engine
            "args_attached": sorted(
                t for t, ln in self._links.items() if ln.prog_fd == self._args_fd
            ),
            "attached_exit": sorted(self._exit_links),
            "failed": {str(tp): why for tp, why in sorted(self.failed.items())},
        }

    @property
    def attached(self) -> set[int]:
        return set(self._links) | set(self._exit_links)

    def close(self) -> None:
        for link in [*self._links.values(), *self._exit_links.values()]:
            link.close()
        self._links.clear()
        self._exit_links.clear()
        self._config.close()


def _attach_first(prog_fds: tuple[int, ...], tp_id: int) -> TracepointLink:
    """The first of ``prog_fds`` the kernel attaches to the tracepoint (EACCES:
    the program reads past the end of its record; anything else is logged,
    and the next one tried: the last does the same work, only slower)."""
    for prog_fd in prog_fds[:-1]:
        try:
            return TracepointLink(prog_fd, tp_id, cookie=tp_id)
        except OSError as e:
            if e.errno != errno.EACCES:
                log.warning("hook entry program refused, the engine instead",
                            tracepoint_id=tp_id, reason=str(e))  # fmt: skip
    return TracepointLink(prog_fds[-1], tp_id, cookie=tp_id)
