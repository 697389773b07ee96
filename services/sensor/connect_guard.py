"""Network deny's programs: the cgroup connect4/connect6 and sendmsg4/sendmsg6 programs
of the sensor's BPF object (bpf/connect.bpf.c), attached to the cgroup v2 root so that
every connect() of the node, and every UDP datagram sent to an address, passes them.

They are attached through BPF links the sensor holds: when the sensor stops (or dies)
the links close and the programs detach, so nothing is left denying connects with no
sensor to report it. Their rules are in the pinned policy maps (connect_rules, with
hook_config and val_match), so a restarted sensor enforces them again as soon as it has
attached. Without the programs (no cgroup v2, a kernel that refuses them), ``state``
says why, the sensor runs on, and the enforcer refuses Override policies (it reads the
state in the reply to its sync request).
"""

from __future__ import annotations

import ctypes as ct
import os
from pathlib import Path

from services.common.hostfs import cgroup2_root
from services.common.logging import get_logger
from services.sensor.probes import ProcessProbes

log = get_logger("ocellus.sensor")

# enum bpf_attach_type: connect() of any socket; sendto/sendmsg of a UDP datagram
# to an address (sys_sendto rules)
_PROGRAMS = (
    (b"ocellus_connect4", 10),  # BPF_CGROUP_INET4_CONNECT
    (b"ocellus_connect6", 11),  # BPF_CGROUP_INET6_CONNECT
    (b"ocellus_sendmsg4", 14),  # BPF_CGROUP_UDP4_SENDMSG
    (b"ocellus_sendmsg6", 15),  # BPF_CGROUP_UDP6_SENDMSG
)
ATTACHED = "attached"

_libbpf = ct.CDLL("libbpf.so.1", use_errno=True)
_libbpf.bpf_link_create.argtypes = [ct.c_int, ct.c_int, ct.c_int, ct.c_void_p]


class ConnectGuard:
    """``attach()`` loads (verifies) and attaches all four programs, or records why not in
    ``state``; ``close()`` detaches them. Idempotent."""

    def __init__(self, probes: ProcessProbes, cgroup: Path | None = None) -> None:
        self._probes = probes
        self._cgroup = cgroup
        self._links: list[int] = []
        self.state = "not attached"

    def attach(self) -> str:
        if self._links:
            return self.state
        try:
            self._attach()
        except (OSError, ValueError) as e:
            self.close()
            self.state = f"failed: {e}"
            log.warning("network deny unavailable: its cgroup programs are not attached",
                        reason=str(e))  # fmt: skip
        else:
            self.state = ATTACHED
        return self.state

    def _attach(self) -> None:
        from bcc import BPF  # imported late: only the sensor needs BCC

        root = self._cgroup or cgroup2_root()
        if root is None:
            raise ValueError("no cgroup v2 hierarchy is mounted")
        fds = []
        for name, attach_type in _PROGRAMS:
            try:
                fn = self._probes.bpf.load_func(name, BPF.CGROUP_SOCK_ADDR, attach_type=attach_type)
            except Exception as e:  # BCC raises bare Exception for load errors
                raise ValueError(f"loading {name.decode()}: {e}") from e
            fds.append((int(fn.fd), attach_type))
        cgroup_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for prog_fd, attach_type in fds:
                link = _libbpf.bpf_link_create(prog_fd, cgroup_fd, attach_type, None)
                if link < 0:
                    raise OSError(-link, f"attaching to {root}: {os.strerror(-link)}")
                self._links.append(link)
        finally:
            os.close(cgroup_fd)
        log.info("network deny programs attached", cgroup=str(root))

    def serves(self) -> list[str]:
        """The calls whose Override the attached programs serve (the enforcer
        checks, so that a sensor older than a rule kind never misreads it)."""
        return ["connect", "sendto"] if self.state == ATTACHED else []

    def close(self) -> None:
        for link in self._links:
            os.close(link)
        self._links.clear()
        if self.state == ATTACHED:
            self.state = "detached"
