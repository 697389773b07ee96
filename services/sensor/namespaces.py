"""What the process selectors need to know of namespaces at load (-D macros of
bpf/lib/proc_select.h): the host's namespace inums, for matchNamespaces'
``host_ns``, and the nsfs device, for bpf_get_ns_current_pid_tgid().

The host's namespaces are read from kthreadd (pid 2): kernel threads always
run in the initial namespaces. This needs the host's pid namespace (``pid:
host``), which the sensor has anyway. Reading its ns links needs ptrace
rights over it, which a sensor in a container lacks without CAP_SYS_PTRACE:
then the kernel's fixed numbers of the initial namespaces stand in.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.common.errors import OcellusError

# enum ocellus_ns_kind name suffix -> /proc/<pid>/ns entry
NS_FILES = {
    "UTS": "uts",
    "IPC": "ipc",
    "MNT": "mnt",
    "PID": "pid",
    "NET": "net",
    "TIME": "time",
    "CGROUP": "cgroup",
    "USER": "user",
}


class NamespaceError(OcellusError):
    """The host's namespaces cannot be read."""


# The kernel gives its initial namespaces fixed inode numbers (PROC_*_INIT_INO);
# net and mnt only since 6.18 (measured here). Used when kthreadd's ns links
# cannot be read: in a container even root lacks ptrace rights over a kernel
# thread unless it holds CAP_SYS_PTRACE.
_FIXED_INUMS = {
    "IPC": 0xEFFFFFFF,
    "UTS": 0xEFFFFFFE,
    "USER": 0xEFFFFFFD,
    "PID": 0xEFFFFFFC,
    "CGROUP": 0xEFFFFFFB,
    "TIME": 0xEFFFFFFA,
}
_FIXED_SINCE_6_18 = {"NET": 0xEFFFFFF9, "MNT": 0xEFFFFFF8}


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-", 1)[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def host_namespaces(proc: Path = Path("/proc")) -> dict[str, int]:
    """{kind: inum} of the initial namespaces, read from kthreadd."""
    kthreadd = proc / "2"
    try:
        stat = (kthreadd / "stat").read_text()
    except OSError as e:
        raise NamespaceError(f"cannot read {kthreadd}/stat: {e.strerror}") from e
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    if comm != "kthreadd":
        raise NamespaceError(
            f"pid 2 is {comm!r}, not kthreadd: the sensor needs the host's pid namespace "
            "to know the host's namespaces (matchNamespaces host_ns)"
        )
    fixed = dict(_FIXED_INUMS)
    if _kernel_at_least(6, 18):
        fixed.update(_FIXED_SINCE_6_18)
    inums = {}
    for kind, name in NS_FILES.items():
        try:
            inums[kind] = (kthreadd / "ns" / name).stat().st_ino
        except PermissionError as e:
            if kind not in fixed:
                raise NamespaceError(
                    f"cannot read {kthreadd}/ns/{name} ({e.strerror}) and this kernel gives "
                    "that namespace no fixed number: grant the sensor CAP_SYS_PTRACE"
                ) from e
            inums[kind] = fixed[kind]
        except OSError as e:
            raise NamespaceError(f"cannot read the host's namespaces in {kthreadd}/ns: {e}") from e
    return inums


def nsfs_device(proc: Path = Path("/proc")) -> int:
    """st_dev of the namespace filesystem (the same for every namespace)."""
    return (proc / "self" / "ns" / "pid").stat().st_dev


def namespace_cflags(proc: Path = Path("/proc")) -> list[str]:
    hosts = host_namespaces(proc)
    return [
        f"-DOCELLUS_NSFS_DEV={nsfs_device(proc)}",
        *(f"-DOCELLUS_HOST_NS_{kind}={inum}" for kind, inum in hosts.items()),
    ]
