"""Pseudo-filesystems the sensor needs, mounted when missing."""

from __future__ import annotations

import ctypes as ct
import os
from pathlib import Path

from services.common.errors import OcellusError
from services.common.hostfs import mounted_types

_libc = ct.CDLL(None, use_errno=True)

TRACEFS = Path("/sys/kernel/tracing")
BPFFS = Path("/sys/fs/bpf")
SECURITYFS = Path("/sys/kernel/security")


class MountError(OcellusError):
    def __init__(self, fstype: str, target: Path, err: int) -> None:
        super().__init__(f"cannot mount {fstype} on {target}: {os.strerror(err)}")
        self.fstype = fstype
        self.target = target


def ensure_mounted(fstype: str, target: Path) -> bool:
    """Mount ``fstype`` on ``target`` unless it is there; True if we mounted it."""
    if mounted_types().get(str(target)) == fstype:
        return False
    target.mkdir(parents=True, exist_ok=True)
    if _libc.mount(fstype.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        raise MountError(fstype, target, ct.get_errno())
    return True


def ensure_sensor_mounts() -> list[str]:
    """tracefs and bpffs are required; securityfs only tells about LSMs."""
    done = []
    for fstype, target in (("tracefs", TRACEFS), ("bpf", BPFFS)):
        if ensure_mounted(fstype, target):
            done.append(f"{fstype} on {target}")
    try:
        if ensure_mounted("securityfs", SECURITYFS):
            done.append(f"securityfs on {SECURITYFS}")
    except MountError:
        pass  # optional: capabilities.probe() reports LSM as unknown
    return done
