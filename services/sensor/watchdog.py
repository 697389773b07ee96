"""The sensor watching itself and the BPF around it.

Every check interval:
- a canary: the sensor starts `/bin/true` and must see its clone, exec and
  exit come through its own ring buffer within ``canary_timeout``. That
  proves the whole chain — programs attached and enabled, ring buffer,
  reader — however it was broken (a perf event disabled through a stolen
  fd, a program replaced, a wedged reader). The canary's records are the
  sensor's own business: they are taken out before publishing;
- the pinned policy maps must still be the sensor's own (a map pinned in
  their place would take the enforcer's writes while the program reads the
  original); a missing or replaced pin is put back;
- the sensor's own links stay attached: a cgroup link can be detached by
  hand (`bpftool link detach`, `bpftool cgroup detach`), which would quietly
  end network deny;
- BPF programs and links that appear on the host and are not the sensor's
  are reported (what loaded them shows in a `bpf` policy's events).

Each finding is an alert: logged, published on ``ocellus.alerts.<node>`` and
counted in the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import bpfsys
from services.common.logging import get_logger
from services.sensor.hook_records import POLICY_MAPS

log = get_logger("ocellus.sensor.watchdog")

_CANARY = "/bin/true"
_LIFECYCLE = ("process_clone", "process_exec", "process_exit")
_REPORTED = -1  # a detached link already reported


@dataclass
class Canary:
    """One canary process and which of its records came back."""

    pid: int
    started: float
    seen: set[str] = field(default_factory=set)


class Watchdog:
    def __init__(self, bpf: Any, pin_dir: Path, canary_timeout: float = 2.0) -> None:
        self._bpf = bpf
        self._pin_dir = pin_dir
        self.canary_timeout = canary_timeout
        self._maps = {m.name: int(bpf[m.name.encode()].map_fd) for m in POLICY_MAPS}
        self._map_ids = {name: bpfsys.map_info(fd).id for name, fd in self._maps.items()}
        self.canary: Canary | None = None
        self.counters: dict[str, int] = {"alerts": 0, "canaries": 0}
        self._known_progs = set(bpfsys.prog_ids())
        self._known_links = set(bpfsys.link_ids())
        self._own_links: dict[int, tuple[int, int]] = {}  # link id -> (type, cgroup id)
        self.check_own_links(self.own_programs())  # those attached before us: the baseline

    # -- the canary ---------------------------------------------------------------
    def start_canary(self) -> None:
        """Spawned synchronously: its pid is known before the loop drains again."""
        proc = subprocess.Popen([_CANARY], stdin=subprocess.DEVNULL, close_fds=True)
        self.canary = Canary(proc.pid, time.monotonic())
        self._reap = proc
        self.counters["canaries"] += 1

    def take_canary(self, event_type: str, record: dict[str, Any]) -> bool:
        """The publisher's filter: True (and noted) for the canary's own records."""
        c = self.canary
        if c is None or record.get("pid") != c.pid or event_type not in _LIFECYCLE:
            return False
        c.seen.add(event_type)
        return True

    def canary_verdict(self) -> str | None:
        """None while waiting or when healthy; else what is missing."""
        c = self.canary
        if c is None:
            return None
        missing = [t for t in _LIFECYCLE if t not in c.seen]
        if not missing:
            self.canary = None
            self._reap.wait(1)
            return None
        if time.monotonic() - c.started < self.canary_timeout:
            return None
        self.canary = None
        self._reap.wait(1)
        return (
            f"the sensor's own canary (pid {c.pid}) was not seen through its ring buffer "
            f"within {self.canary_timeout:g}s: no {', '.join(missing)} record; its "
            "tracepoint programs may be detached or disabled"
        )

    # -- maps and neighbours --------------------------------------------------------
    def check_pins(self) -> list[str]:
        """Each pinned policy map is still ours; a missing or foreign pin is replaced."""
        alerts = []
        for name, fd in self._maps.items():
            path = self._pin_dir / name
            found = bpfsys.pinned_map_id(path)
            if found == self._map_ids[name]:
                continue
            what = "missing" if found is None else f"replaced by map id {found}"
            alerts.append(f"pinned policy map {path} was {what}; the sensor's own is pinned back")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            bpfsys.obj_pin(fd, path)
        return alerts

    def new_programs(self, own: set[int]) -> list[str]:
        """BPF programs and links that appeared since the last check, not the sensor's."""
        alerts = []
        progs = set(bpfsys.prog_ids())
        for prog_id in sorted(progs - self._known_progs - own):
            info = bpfsys.prog_info(prog_id)
            if info is not None:
                name, ptype, uid = info
                alerts.append(
                    f"BPF program {name or '(unnamed)'} (id {prog_id}, type {ptype}) "
                    f"loaded by uid {uid}"
                )
        self._known_progs = progs
        links = set(bpfsys.link_ids())
        for link_id in sorted(links - self._known_links):
            link = bpfsys.link_info(link_id)
            if link is not None and link[1] not in own:
                alerts.append(f"BPF link {link_id} (type {link[0]}) attaches program id {link[1]}")
        self._known_links = links
        return alerts

    def own_programs(self) -> set[int]:
        """Every program this process holds: BCC's and any loaded beside it."""
        return {p.id for p in bpfsys.own_programs()}

    def check_own_links(self, own: set[int]) -> list[str]:
        """The sensor's links are all still there and attached where they were."""
        alerts = []
        for link_id in bpfsys.link_ids():
            if link_id in self._own_links:
                continue
            found = bpfsys.link_info(link_id)
            if found is not None and found[1] in own:
                self._own_links[link_id] = (found[0], found[2])
        for link_id, (link_type, cgroup) in list(self._own_links.items()):
            now = bpfsys.link_info(link_id)
            if now is None:
                del self._own_links[link_id]  # closed by the sensor itself (a hook removed)
            elif link_type == 3 and cgroup != _REPORTED and (now[2] != cgroup or now[2] == 0):
                alerts.append(
                    f"the sensor's cgroup link {link_id} (program id {now[1]}) was detached "
                    "from its cgroup: network deny is off until the sensor restarts"
                )
                self._own_links[link_id] = (link_type, _REPORTED)  # said once
        return alerts


async def run_watchdog(watchdog: Watchdog, interval: float, alert: Any) -> None:
    """The checks, forever; ``alert(kind, message)`` reports a finding."""
    while True:
        watchdog.start_canary()
        await asyncio.sleep(watchdog.canary_timeout)
        if (why := watchdog.canary_verdict()) is not None:
            await alert("sensor_canary", why)
        for why in watchdog.check_pins():
            await alert("policy_map", why)
        own = watchdog.own_programs()
        for why in watchdog.check_own_links(own):
            await alert("sensor_link", why)
        for why in watchdog.new_programs(own):
            await alert("bpf_program", why)
        await asyncio.sleep(max(0.0, interval - watchdog.canary_timeout))
