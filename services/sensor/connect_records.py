"""Network deny's side of bpf/lib/policy.h: the connect_rules map the enforcer writes
and the cgroup connect4/connect6 and sendmsg4/sendmsg6 programs (bpf/connect.bpf.c)
read. Checked against the
C compiler by tests/sensor/test_layout.py."""

from __future__ import annotations

import ctypes as ct

CONNECT_RULES = 32  # OCELLUS_CONNECT_RULES: entries of the connect_rules array
CR_POST = 1 << 0  # OCELLUS_CR_POST: a denied connect emits a record
CR_SENDMSG = 1 << 1  # OCELLUS_CR_SENDMSG: a sys_sendto hook's rule (sendmsg4/6)


class ConnectRule(ct.Structure):
    """struct ocellus_connect_rule: an Override selector of a sys_connect or sys_sendto
    hook."""

    _fields_ = [
        ("hook_id", ct.c_uint32),  # 0: unused
        ("tp_id", ct.c_uint32),
        ("selector", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("_pad", ct.c_uint16),
        ("error", ct.c_int32),  # a negative errno
    ]
