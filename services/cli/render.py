"""Compact one-line rendering of Tetragon-shaped events, for people."""

from __future__ import annotations

import shlex

from schemas.events import (
    GetEventsResponse,
    KprobeArgument,
    Process,
    ProcessKprobe,
    ProcessTracepoint,
)


def where(resp: GetEventsResponse, process: Process) -> str:
    """<namespace>/<pod> for pods, the container name, else the node name."""
    pod = process.pod
    if pod is not None and pod.name:
        return f"{pod.namespace}/{pod.name}"
    if pod is not None and pod.container is not None and pod.container.name:
        return pod.container.name
    return resp.node_name


def _command(process: Process) -> str:
    return f"{process.binary or '?'} {process.arguments}".rstrip()


def compact(resp: GetEventsResponse) -> str | None:
    """The compact line, or None for kinds that have no compact form."""
    if resp.process_exec is not None:
        p = resp.process_exec.process
        return f"🚀 process {where(resp, p)} {_command(p)}"
    if resp.process_exit is not None:
        ev = resp.process_exit
        outcome = ev.signal or str(ev.status)
        return f"💥 exit    {where(resp, ev.process)} {_command(ev.process)} {outcome}"
    hook = resp.process_kprobe or resp.process_tracepoint
    if hook is not None:
        return _hook_line(hook, where(resp, hook.process))
    return None


def join_arguments(argv_tail: list[str]) -> str:
    """argv[1:] as one string that a shell would split back the same way."""
    return " ".join(shlex.quote(a) for a in argv_tail)


# Hook events: an emoji and the syscall (or tracepoint) name, like Tetragon's compact
# output, then where, the binary and the target (path, address:port, uid, command...).
_ICONS = {
    "📬": "open openat openat2 creat fd_install",
    "📪": "close",
    "📚": "read pread64 readv preadv",
    "✍": "write pwrite64 writev pwritev",
    "🗑": "unlink unlinkat rmdir",
    "🔀": "rename renameat renameat2 link linkat symlink symlinkat",
    "🔐": "chmod fchmod fchmodat chown fchown lchown fchownat",
    "✂": "truncate ftruncate",
    "📁": "mkdir mkdirat",
    "🔌": "connect tcp_connect inet_sock_set_state",
    "📥": "accept accept4",
    "📌": "bind",
    "👂": "listen",
    "🔑": "setuid setgid setreuid setregid setresuid setresgid setfsuid setfsgid capset",
    "🕵": "ptrace",
    "💾": "mount umount umount2 pivot_root fsmount move_mount",
    "🧩": "init_module finit_module delete_module",
    "🔧": "unshare setns",
    "🐝": "bpf",
    "💀": "kill tkill tgkill",
}
ICONS = {name: icon for icon, names in _ICONS.items() for name in names.split()}
_SYSCALL_PREFIXES = ("__x64_sys_", "__arm64_sys_", "__ia32_sys_", "__se_sys_", "sys_enter_")
# Two targets that are one thing moving: "old -> new".
_PAIRS = frozenset(_ICONS["🔀"].split())


def hook_name(hook: ProcessKprobe | ProcessTracepoint) -> str:
    """The syscall (or tracepoint event) a hook event is about: "openat", "setuid"."""
    name = hook.function_name if isinstance(hook, ProcessKprobe) else hook.event
    for prefix in _SYSCALL_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name.removeprefix("sys_exit_").removeprefix("sys_")


def _address(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _target(arg: KprobeArgument) -> str | None:
    """What an arg names (a path, an address...), or None for a plain number."""
    if arg.string_arg is not None:
        return shlex.quote(arg.string_arg)
    if arg.sockaddr_arg is not None:
        sa = arg.sockaddr_arg
        return _address(sa.addr, sa.port) if sa.family in ("AF_INET", "AF_INET6") else sa.addr
    if arg.sock_arg is not None:
        s = arg.sock_arg
        return f"{_address(s.saddr, s.sport)} -> {_address(s.daddr, s.dport)}"
    path = arg.path_arg or arg.file_arg
    if path is not None:
        return shlex.quote(path.path)
    if arg.bytes_arg is not None:
        text = arg.bytes_arg.decode("utf-8", "backslashreplace")
        return repr(text[:40] + ("…" if len(text) > 40 else ""))
    if arg.bpf_cmd_arg is not None:
        return arg.bpf_cmd_arg
    if arg.capability_arg is not None:
        return arg.capability_arg.name or str(arg.capability_arg.value)
    return None


def _number(arg: KprobeArgument) -> str:
    for value in (arg.int_arg, arg.uint_arg, arg.long_arg, arg.size_arg):
        if value is not None:
            return str(value)
    return "?"  # an arg that could not be read


def _hook_line(hook: ProcessKprobe | ProcessTracepoint, at: str) -> str:
    name = hook_name(hook)
    icon = ICONS.get(name, "🔎")
    targets = [t for t in map(_target, hook.args) if t is not None]
    if not targets:  # setuid(0), listen(3, 128): the numbers are the point
        targets = [_number(a) for a in hook.args]
    joined = " -> ".join(targets) if name in _PAIRS and len(targets) == 2 else " ".join(targets)
    line = f"{icon} {name:<7} {at} {hook.process.binary or '?'} {joined}".rstrip()
    returned = getattr(hook, "return_", None)  # process_kprobe with return: true
    if returned is not None:
        line += f" = {_number(returned)}"
    if hook.action in ("KPROBE_ACTION_SIGKILL", "KPROBE_ACTION_SIGNAL", "KPROBE_ACTION_OVERRIDE"):
        line += f" ({hook.action.removeprefix('KPROBE_ACTION_')})"
    return line
