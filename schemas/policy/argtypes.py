"""The arg types a hook can declare (Tetragon's list), and the classes operators care about."""

from __future__ import annotations

from .values import INT_TYPE_BOUNDS

# Tetragon's KProbeArg.type enum (pkg/k8s/apis/cilium.io/v1alpha1), in its order. "auto" (the
# default) takes the type from the tracepoint format file; it is only meaningful there.
ARG_TYPES: tuple[str, ...] = (
    "auto", "int", "sint8", "int8", "uint8", "sint16", "int16", "uint16", "uint32", "sint32",
    "int32", "ulong", "uint64", "size_t", "long", "sint64", "int64", "char_buf", "char_iovec",
    "skb", "sock", "sockaddr", "socket", "string", "fd", "file", "filename", "path", "nop",
    "bpf_attr", "perf_event", "bpf_map", "user_namespace", "capability", "kiocb", "iov_iter",
    "cred", "const_buf", "load_info", "module", "syscall64", "kernel_cap_t", "cap_inheritable",
    "cap_permitted", "cap_effective", "linux_binprm", "data_loc", "net_device", "bpf_cmd",
    "dentry", "bpf_prog",
)  # fmt: skip

# Read as a number: compared with Equal, GT, LT, Mask, InRange, InMap.
INTEGER_TYPES = frozenset(INT_TYPE_BOUNDS)
# Read as text (a string, a buffer, or the path/name of the object): Equal, Prefix, Postfix.
STRING_TYPES = frozenset(
    {"string", "char_buf", "fd", "file", "filename", "path", "linux_binprm", "data_loc",
     "net_device", "dentry"}
)  # fmt: skip
# Matched by SubString / SubStringIgnCase (as Tetragon).
SUBSTRING_TYPES = frozenset({"string", "char_buf"})
# Read as a socket 4-tuple: the port, address, protocol, family and state operators.
SOCKET_TYPES = frozenset({"sock", "skb", "sockaddr", "socket"})
# Read as a capability set: Equal against a mask, CapabilitiesGained.
CAPABILITY_SET_TYPES = frozenset(
    {"kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective"}
)
# Carry a struct file / struct path: FileType, NotFileType.
FILE_OBJECT_TYPES = frozenset({"file", "path"})
# Buffers that take sizeArgIndex / returnCopy; maxData only applies to char_buf.
BUFFER_TYPES = frozenset({"char_buf", "char_iovec"})
