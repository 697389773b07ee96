"""What the process selectors need to know of namespaces at load (-D macros of
bpf/lib/proc_select.h): the host's namespace inums, for matchNamespaces'
``host_ns``, and the nsfs device, for bpf_get_ns_current_pid_tgid().

The host's namespaces are read from kthreadd (pid 2): kernel threads always
run in the initial namespaces, and unlike pid 1 its /proc/<pid>/ns links are
readable without ptrace rights over an init that may hold more capabilities
than the sensor. This needs the host's pid namespace (``pid: host``), which
the sensor has anyway.
"""

from __future__ import annotations

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
    try:
        return {kind: (kthreadd / "ns" / name).stat().st_ino for kind, name in NS_FILES.items()}
    except OSError as e:
        raise NamespaceError(f"cannot read the host's namespaces in {kthreadd}/ns: {e}") from e


def nsfs_device(proc: Path = Path("/proc")) -> int:
    """st_dev of the namespace filesystem (the same for every namespace)."""
    return (proc / "self" / "ns" / "pid").stat().st_dev


def namespace_cflags(proc: Path = Path("/proc")) -> list[str]:
    hosts = host_namespaces(proc)
    return [
        f"-DOCELLUS_NSFS_DEV={nsfs_device(proc)}",
        *(f"-DOCELLUS_HOST_NS_{kind}={inum}" for kind, inum in hosts.items()),
    ]
