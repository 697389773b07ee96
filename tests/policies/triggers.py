"""What makes each policy in deploy/policies/ fire, and what the event must say.

``TRIGGERS`` maps a policy file name to a list of triggers. A trigger is::

    {
        "command": "<one shell command>",
        "expect": [<event>, ...],   # every one must be reported
    }

and an expected event is::

    {
        "event": "process_kprobe" | "process_tracepoint",
        "hook": "__x64_sys_openat"          # kprobes: the function name Tetragon reports
              | "sock:inet_sock_set_state",  # tracepoints: subsystem:event
        "args": {position: value, ...},     # position in the hook's `args` list
    }

A value is compared exactly (str for string args, int for integer args); an address
(str) as an address (an IPv4-mapped IPv6 address is reported as its dotted quad, as
Tetragon prints it); a dict (for a
``sockaddr`` arg) must be a subset of the decoded
``{"family", "addr", "port"}``. Args not named may hold anything.

How to run them:

- as root, with ``sh -c COMMAND``, ``PATH=/usr/sbin:/usr/bin:/sbin:/bin`` (Debian's
  coreutils, util-linux, strace, bpftool and /usr/bin/python3; a pyenv shim in the
  PATH forks dozens of processes per ``python3``), in a directory the command may
  write to; each command exits 0 and cleans up after itself;
- the file-access triggers create, rename, chmod, chown and remove scratch files
  named ``/etc/ocellus-trigger*`` and ``/tmp/ocellus-trigger*`` (the policy watches
  /etc, so the trigger has to touch it);
- network triggers use 127.0.0.1 and the fixed ports 47801 and 47802;
- mount triggers run in a private mount namespace (``unshare -m``) and leave
  nothing mounted; kernel-modules triggers call the module syscalls with
  arguments that cannot load anything (this kernel has no module support);
- an event is reported by the process the command started or one of its
  children: tests/policies/test_deploy_policies.py runs each command in a cgroup of
  its own and keeps the records of that cgroup only.

The commands are for the end-to-end firing test (issue 4, point 7, last bullet);
tests/policies/test_deploy_policies.py runs them against the in-process engine.
"""

from __future__ import annotations

from typing import Any

# /usr/bin/python3 one-liners; `S` is libc's syscall(2).
_PY = "python3 -c "
_LIBC = "import ctypes; S = ctypes.CDLL(None, use_errno=True).syscall; "
AT_FDCWD = -100
# AT_FDCWD as a raw syscall(2) argument: a plain Python int would travel as a 32-bit
# C int, its upper register half undefined.
_CWD = "ctypes.c_long(-100)"

# A BPF_PROG_LOAD of a two-instruction socket filter ("r0 = 0; exit") named
# ocellus_trig: union bpf_attr's prog_type, insn_cnt, insns, license, log_level,
# log_size, log_buf, kern_version, prog_flags, prog_name.
_PROG_LOAD = (
    _PY
    + "'"
    + _LIBC
    + "import struct; "
    + 'insns = ctypes.create_string_buffer(bytes.fromhex("b7000000000000009500000000000000")); '
    + 'lic = ctypes.create_string_buffer(b"GPL"); '
    + 'attr = ctypes.create_string_buffer(struct.pack("<IIQQIIQII16s", 1, 2, '
    + 'ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0, 0, 0, b"ocellus_trig"), 128); '
    + "fd = S(321, 5, attr, 128); "
    + "assert fd >= 0, ctypes.get_errno()'"
)

# capget then capset of the same sets: a capset that changes nothing.
_CAPSET = (
    _PY
    + "'"
    + _LIBC
    + "hdr = (ctypes.c_uint32 * 2)(0x20080522, 0); data = (ctypes.c_uint32 * 6)(); "
    + "assert S(125, hdr, data) == 0; assert S(126, hdr, data) == 0'"
)

# open_tree(2) a clone of a directory, then move_mount(2) it elsewhere: a bind
# mount with the new mount API, inside a private mount namespace.
_MOVE_MOUNT = (
    "mkdir -p /tmp/ocellus-trigger-src /tmp/ocellus-trigger-dst && "
    "unshare -m "
    + _PY
    + "'"
    + _LIBC
    + f'fd = S(428, {_CWD}, b"/tmp/ocellus-trigger-src", 1); '  # OPEN_TREE_CLONE
    + "assert fd >= 0, ctypes.get_errno(); "
    # MOVE_MOUNT_F_EMPTY_PATH
    + f'assert S(429, fd, b"", {_CWD}, b"/tmp/ocellus-trigger-dst", 4) == 0\''
    + " && rmdir /tmp/ocellus-trigger-src /tmp/ocellus-trigger-dst"
)

# A TCP listener and a client on 127.0.0.1: bind, listen, connect, accept4
# (Python's accept), then a legacy accept(2) of a second connection.
_TCP = (
    _PY
    + "'"
    + _LIBC
    + "import socket; "
    + "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    + 's.bind(("127.0.0.1", 47801)); s.listen(7); '
    + 'c = socket.create_connection(("127.0.0.1", 47801)); a, _ = s.accept(); '
    + 'd = socket.create_connection(("127.0.0.1", 47801)); '
    + "fd = S(43, s.fileno(), None, None); assert fd >= 0, ctypes.get_errno(); "
    + "import os; os.close(fd); a.close(); c.close(); d.close(); s.close()'"
)

_LOOPBACK_V4 = {"family": "AF_INET", "addr": "127.0.0.1", "port": 47801}
# The *_v6 fields hold IPv4 peers IPv4-mapped; they are reported as the dotted quad.
_MAPPED_LOOPBACK = "127.0.0.1"

TRIGGERS: dict[str, list[dict[str, Any]]] = {
    "file-access.yaml": [
        {
            "command": "cat /etc/shadow > /dev/null",
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_openat", "args": {1: "/etc/shadow"}}
            ],
        },
        {
            "command": _PY + "'" + _LIBC + 'assert S(2, b"/etc/gshadow", 0, 0) >= 0\'',
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_open", "args": {0: "/etc/gshadow"}}
            ],
        },
        {
            # struct open_how {u64 flags, mode, resolve}: O_RDONLY.
            "command": _PY
            + "'"
            + _LIBC
            + "how = (ctypes.c_uint64 * 3)(0, 0, 0); "
            + f'assert S(437, {_CWD}, b"/etc/hostname", how, 24) >= 0\'',
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_openat2",
                    "args": {0: AT_FDCWD, 1: "/etc/hostname"},
                }
            ],
        },
        {
            # A shell redirection opens O_WRONLY|O_CREAT|O_TRUNC (0x241); rm unlinkat()s.
            "command": "echo x > /etc/ocellus-trigger.conf && rm /etc/ocellus-trigger.conf",
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_openat",
                    "args": {1: "/etc/ocellus-trigger.conf", 2: 0x241},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_unlinkat",
                    "args": {1: "/etc/ocellus-trigger.conf", 2: 0},
                },
            ],
        },
        {
            "command": "touch /etc/ocellus-trigger.unlink && unlink /etc/ocellus-trigger.unlink",
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_unlink",
                    "args": {0: "/etc/ocellus-trigger.unlink"},
                }
            ],
        },
        {
            # rename(2) (Python), renameat(2) (raw), renameat2(2) (mv), then rm.
            "command": "touch /etc/ocellus-trigger.a && "
            + _PY
            + '\'import os; os.rename("/etc/ocellus-trigger.a", "/etc/ocellus-trigger.b")\' && '
            + _PY
            + "'"
            + _LIBC
            + f'assert S(264, {_CWD}, b"/etc/ocellus-trigger.b", '
            + f'{_CWD}, b"/etc/ocellus-trigger.c") == 0\' && '
            + "mv /etc/ocellus-trigger.c /etc/ocellus-trigger.d && rm /etc/ocellus-trigger.d",
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_rename",
                    "args": {0: "/etc/ocellus-trigger.a", 1: "/etc/ocellus-trigger.b"},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_renameat",
                    "args": {1: "/etc/ocellus-trigger.b", 3: "/etc/ocellus-trigger.c"},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_renameat2",
                    "args": {1: "/etc/ocellus-trigger.c", 3: "/etc/ocellus-trigger.d"},
                },
            ],
        },
        {
            # chmod(2) (Python) on /etc; fchmodat(2) (chmod u+s) on a /tmp file: the
            # set-user-ID bit is reported wherever the file is; fchmodat2(2) (raw).
            "command": "touch /etc/ocellus-trigger.mode /tmp/ocellus-trigger-suid && "
            + _PY
            + "'import os; os.chmod(\"/etc/ocellus-trigger.mode\", 0o600)' && "
            + "chmod 4755 /tmp/ocellus-trigger-suid && "
            + _PY
            + "'"
            + _LIBC
            + f'assert S(452, {_CWD}, b"/etc/ocellus-trigger.mode", 0o640, 0) == 0\' && '
            + "rm /etc/ocellus-trigger.mode /tmp/ocellus-trigger-suid",
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_chmod",
                    "args": {0: "/etc/ocellus-trigger.mode", 1: 0o600},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_fchmodat",
                    "args": {1: "/tmp/ocellus-trigger-suid", 2: 0o4755},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_fchmodat2",
                    "args": {1: "/etc/ocellus-trigger.mode", 2: 0o640, 3: 0},
                },
            ],
        },
        {
            # chown(2) (Python), fchownat(2) (chown).
            "command": "touch /etc/ocellus-trigger.owner && "
            + _PY
            + "'import os; os.chown(\"/etc/ocellus-trigger.owner\", 0, 0)' && "
            + "chown 0:0 /etc/ocellus-trigger.owner && rm /etc/ocellus-trigger.owner",
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_chown",
                    "args": {0: "/etc/ocellus-trigger.owner", 1: 0, 2: 0},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_fchownat",
                    "args": {1: "/etc/ocellus-trigger.owner", 2: 0, 3: 0},
                },
            ],
        },
        {
            # truncate(2) (Python) on /etc; ftruncate(2) to 0 (truncate -s 0) anywhere.
            "command": "echo data > /etc/ocellus-trigger.trunc && "
            + _PY
            + "'import os; os.truncate(\"/etc/ocellus-trigger.trunc\", 2)' && "
            + "echo data > /tmp/ocellus-trigger-trunc && "
            + "truncate -s 0 /tmp/ocellus-trigger-trunc && "
            + "rm /etc/ocellus-trigger.trunc /tmp/ocellus-trigger-trunc",
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_truncate",
                    "args": {0: "/etc/ocellus-trigger.trunc", 1: 2},
                },
                {"event": "process_kprobe", "hook": "__x64_sys_ftruncate", "args": {1: 0}},
            ],
        },
    ],
    "network.yaml": [
        {
            "command": _TCP,
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_bind",
                    "args": {1: _LOOPBACK_V4, 2: 16},
                },
                {"event": "process_kprobe", "hook": "__x64_sys_listen", "args": {1: 7}},
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_connect",
                    "args": {1: _LOOPBACK_V4, 2: 16},
                },
                # Python's accept() is accept4(fd, ..., SOCK_CLOEXEC).
                {"event": "process_kprobe", "hook": "__x64_sys_accept4", "args": {1: 0o2000000}},
                {"event": "process_kprobe", "hook": "__x64_sys_accept", "args": {}},
                # The listener (TCP_CLOSE -> TCP_LISTEN, sport 47801) ...
                {
                    "event": "process_tracepoint",
                    "hook": "sock:inet_sock_set_state",
                    "args": {0: 7, 1: 10, 2: 47801},
                },
                # ... the client (SYN_SENT -> ESTABLISHED to dport 47801) ...
                {
                    "event": "process_tracepoint",
                    "hook": "sock:inet_sock_set_state",
                    "args": {0: 2, 1: 1, 3: 47801, 4: _MAPPED_LOOPBACK, 5: _MAPPED_LOOPBACK},
                },
                # ... and the accepted end (SYN_RECV -> ESTABLISHED, sport 47801).
                {
                    "event": "process_tracepoint",
                    "hook": "sock:inet_sock_set_state",
                    "args": {0: 3, 1: 1, 2: 47801},
                },
            ],
        },
        {
            # A UDP "connect" to 127.0.0.1:47802 (no packet is sent).
            "command": _PY
            + "'import socket; s = socket.socket(type=socket.SOCK_DGRAM); "
            + 's.connect(("127.0.0.1", 47802))\'',
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_connect",
                    "args": {1: {"family": "AF_INET", "addr": "127.0.0.1", "port": 47802}, 2: 16},
                }
            ],
        },
    ],
    "privileges.yaml": [
        {
            "command": _PY
            + "'import os; os.setuid(0); os.setgid(0); os.setreuid(-1, 0); "
            + "os.setregid(0, -1); os.setresuid(-1, -1, 0); os.setresgid(0, 0, 0)'",
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_setuid", "args": {0: 0}},
                {"event": "process_kprobe", "hook": "__x64_sys_setgid", "args": {0: 0}},
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_setreuid",
                    "args": {0: 0xFFFFFFFF, 1: 0},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_setregid",
                    "args": {0: 0, 1: 0xFFFFFFFF},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_setresuid",
                    "args": {0: 0xFFFFFFFF, 1: 0xFFFFFFFF, 2: 0},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_setresgid",
                    "args": {0: 0, 1: 0, 2: 0},
                },
            ],
        },
        {
            "command": _PY
            + "'"
            + _LIBC
            + "libc = ctypes.CDLL(None); libc.setfsuid(0); libc.setfsgid(0)'",
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_setfsuid", "args": {0: 0}},
                {"event": "process_kprobe", "hook": "__x64_sys_setfsgid", "args": {0: 0}},
            ],
        },
        {
            "command": _CAPSET,
            "expect": [{"event": "process_kprobe", "hook": "__x64_sys_capset", "args": {}}],
        },
        {
            # strace attaches with PTRACE_SEIZE (0x4206).
            "command": "strace -o /dev/null true",
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_ptrace", "args": {0: 0x4206}}
            ],
        },
        {
            # unshare(CLONE_NEWNS), a tmpfs mounted and unmounted (umount2 is sys_umount).
            "command": "mkdir -p /tmp/ocellus-trigger-mnt && unshare -m sh -c "
            + "'mount -t tmpfs ocellus-trigger /tmp/ocellus-trigger-mnt && "
            + "umount /tmp/ocellus-trigger-mnt' && rmdir /tmp/ocellus-trigger-mnt",
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_unshare", "args": {0: 0x20000}},
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_mount",
                    "args": {0: "ocellus-trigger", 1: "/tmp/ocellus-trigger-mnt", 2: "tmpfs"},
                },
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_umount",
                    "args": {0: "/tmp/ocellus-trigger-mnt"},
                },
            ],
        },
        {
            "command": _MOVE_MOUNT,
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_move_mount",
                    "args": {1: "", 2: AT_FDCWD, 3: "/tmp/ocellus-trigger-dst", 4: 4},
                }
            ],
        },
        {
            # pivot_root(8) into a tmpfs, in a private mount namespace.
            "command": "mkdir -p /tmp/ocellus-trigger-root && unshare -m sh -c "
            + "'mount -t tmpfs none /tmp/ocellus-trigger-root && "
            + "mkdir /tmp/ocellus-trigger-root/old && cd /tmp/ocellus-trigger-root && "
            + "pivot_root . old' && rmdir /tmp/ocellus-trigger-root",
            "expect": [
                {
                    "event": "process_kprobe",
                    "hook": "__x64_sys_pivot_root",
                    "args": {0: ".", 1: "old"},
                }
            ],
        },
        {
            # nsenter(1) into the mount namespace of a process of our own (pid 1's may
            # be out of reach in a container): setns(fd, CLONE_NEWNS).
            "command": "unshare -m sleep 10 & p=$!; "
            + 'while [ "$(readlink /proc/$p/ns/mnt)" = "$(readlink /proc/$$/ns/mnt)" ]; '
            + "do sleep 0.01; done; nsenter -t $p -m true; r=$?; kill $p; exit $r",
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_setns", "args": {1: 0x20000}}
            ],
        },
    ],
    "kernel-modules.yaml": [
        {
            # finit_module(-1, "", 0) and delete_module("ocellus_trigger", 0): ENOSYS here
            # (EBADF / ENOENT on a kernel with modules); the attempt is what is reported.
            "command": _PY + "'" + _LIBC + 'S(313, -1, b"", 0); S(176, b"ocellus_trigger", 0)\'',
            "expect": [
                {"event": "process_tracepoint", "hook": "raw_syscalls:sys_enter", "args": {0: 313}},
                {"event": "process_tracepoint", "hook": "raw_syscalls:sys_enter", "args": {0: 176}},
            ],
        },
    ],
    "bpf.yaml": [
        {
            "command": _PROG_LOAD,
            "expect": [{"event": "process_kprobe", "hook": "__x64_sys_bpf", "args": {0: 5}}],
        },
        {
            # A pinned hash map (BPF_MAP_CREATE, BPF_OBJ_PIN), then every loaded
            # program listed (BPF_PROG_GET_FD_BY_ID).
            "command": "bpftool map create /sys/fs/bpf/ocellus-trigger type hash key 4 value 4 "
            + "entries 1 name ocellus_trig && rm /sys/fs/bpf/ocellus-trigger && "
            + "bpftool prog show > /dev/null",
            "expect": [
                {"event": "process_kprobe", "hook": "__x64_sys_bpf", "args": {0: 0}},
                {"event": "process_kprobe", "hook": "__x64_sys_bpf", "args": {0: 6}},
                {"event": "process_kprobe", "hook": "__x64_sys_bpf", "args": {0: 13}},
            ],
        },
    ],
}
