"""Socket filters and integer sets against the real kernel: loopback TCP connects
by real processes, filtered on connect's sockaddr (SAddr/SPort/Family, as Tetragon
allows on a sockaddr) and on sock:inet_sock_set_state's address fields (DAddr,
DPort, Protocol, Family, State), IPv4 and IPv6; InMap and large Equal sets."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.policy import PolicyError
from schemas.raw import RawHook
from services.enforcer.compile import compile_selectors
from services.enforcer.plan import plan_hooks
from services.sensor.hook_records import FilterOp
from tests.hook_engine import NO_KPROBES, Engine, engine, policy, run

__all__ = ["engine"]  # the fixture, used by name

CONNECT = """  kprobes:
  - call: sys_connect
    syscall: true
    args: [{index: 1, type: sockaddr}]
"""
# inet_sock_set_state: 5 oldstate, 6 newstate, 7 sport, 8 dport, 9 family,
# 10 protocol, 11 saddr, 12 daddr, 13 saddr_v6, 14 daddr_v6 (format-field indexes)
TCP_STATE = """  tracepoints:
  - subsystem: sock
    event: inet_sock_set_state
    args: [{index: 8}, {index: 12}, {index: 14}, {index: 6}, {index: 9}, {index: 10}]
"""
SETUID = """  kprobes:
  - call: sys_setuid
    syscall: true
    args: [{index: 0, type: uint32}]
"""
TCP_SYN_SENT = 2


@pytest.fixture
def listener() -> Iterator[tuple[int, int]]:
    """A listening IPv4 and IPv6 loopback socket: (v4 port, v6 port)."""
    v4 = socket.create_server(("127.0.0.1", 0))
    v6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    yield v4.getsockname()[1], v6.getsockname()[1]
    v4.close()
    v6.close()


def connect(host: str, port: int) -> int:
    """A real process connecting to host:port over TCP; its pid (other processes on
    the host connect to loopback too: records are told apart by pid)."""
    code = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2]))).close()"
    proc = subprocess.Popen([sys.executable, "-c", code, host, str(port)], stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return proc.pid


def place(engine: Engine, spec: str, selectors: str) -> int:
    planned, hook = engine.plan(spec + "    selectors:\n" + selectors)
    return engine.table.attach(planned, compile_selectors("p", planned, hook))


def of(engine: Engine, hook_id: int, pid: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    return engine.wait(lambda r: r["hook_id"] == hook_id and r["pid"] == pid, timeout=timeout)


def test_sockaddr_saddr_sport_match_a_loopback_connect(
    engine: Engine, listener: tuple[int, int]
) -> None:
    """SAddr 127.0.0.0/8 + SPort on connect's sockaddr reports the connect with family,
    address and port; SAddr 10.0.0.0/8 on the same connect reports nothing."""
    port, _ = listener
    hit = place(
        engine,
        CONNECT,
        f"    - matchArgs: [{{index: 1, operator: SAddr, values: [127.0.0.0/8]}},\n"
        f"                  {{index: 1, operator: SPort, values: ['{port}']}}]\n",
    )
    miss = place(
        engine, CONNECT, "    - matchArgs: [{index: 1, operator: SAddr, values: [10.0.0.0/8]}]\n"
    )
    try:
        pid = connect("127.0.0.1", port)
        [rec] = of(engine, hit, pid)
        assert rec["args"] == [{"family": "AF_INET", "addr": "127.0.0.1", "port": port}]
        RawHook.model_validate(rec)
        assert not of(engine, miss, pid, timeout=0.3)
    finally:
        engine.table.detach(hit)
        engine.table.detach(miss)


def test_sockaddr_ipv6_and_family(engine: Engine, listener: tuple[int, int]) -> None:
    """SAddr ::1/128 matches a connect to [::1] and not one to 127.0.0.1; Family AF_INET6
    likewise; SAddr 127.0.0.0/8 does not match ::1."""
    port4, port6 = listener
    v6 = place(engine, CONNECT, "    - matchArgs: [{index: 1, operator: SAddr, values: ['::1']}]\n")
    fam = place(
        engine, CONNECT, "    - matchArgs: [{index: 1, operator: Family, values: [AF_INET6]}]\n"
    )
    v4 = place(
        engine,
        CONNECT,
        f"    - matchArgs: [{{index: 1, operator: SAddr, values: [127.0.0.0/8]}},\n"
        f"                  {{index: 1, operator: SPort, values: ['{port6}']}}]\n",
    )
    try:
        pid4 = connect("127.0.0.1", port4)
        pid6 = connect("::1", port6)
        [rec] = of(engine, v6, pid6)
        assert rec["args"] == [{"family": "AF_INET6", "addr": "::1", "port": port6}]
        assert [r["args"][0]["addr"] for r in of(engine, fam, pid6)] == ["::1"]
        assert not of(engine, v6, pid4, timeout=0.3)
        assert not of(engine, fam, pid4, timeout=0.1)
        assert not of(engine, v4, pid6, timeout=0.1)
    finally:
        for hook_id in (v6, fam, v4):
            engine.table.detach(hook_id)


@pytest.mark.parametrize(
    ("operator", "values", "reported"),
    [
        pytest.param("SPort", ["{lo}:{hi}"], True, id="in-range"),
        pytest.param("SPort", ["{above}:65535"], False, id="out-of-range"),
        pytest.param("NotSPort", ["{lo}:{hi}"], False, id="not-in-range"),
        pytest.param("NotSPort", ["1:1023", "{above}:65535"], True, id="not-in-others"),
        pytest.param("SPortPriv", [], False, id="priv"),
        pytest.param("NotSPortPriv", [], True, id="not-priv"),
    ],
)
def test_sockaddr_port_ranges(
    engine: Engine,
    listener: tuple[int, int],
    operator: str,
    values: list[str],
    reported: bool,
) -> None:
    """SPort/NotSPort with ranges and the Priv forms, on a connect to an unprivileged port."""
    port, _ = listener
    vals = [v.format(lo=port - 3, hi=port + 3, above=port + 1) for v in values]
    hook_id = place(
        engine,
        CONNECT,
        "    - matchArgs: [{index: 1, operator: SAddr, values: [127.0.0.1]},\n"
        f"                  {{index: 1, operator: {operator}, values: {vals!r}}}]\n",
    )
    try:
        pid = connect("127.0.0.1", port)
        found = of(engine, hook_id, pid, 1.0 if reported else 0.3)
        assert [r["args"][0]["port"] for r in found] == ([port] if reported else [])
    finally:
        engine.table.detach(hook_id)


def test_tcp_state_daddr_dport_state(engine: Engine, listener: tuple[int, int]) -> None:
    """inet_sock_set_state: DAddr 127.0.0.0/8 on daddr + DPort + State TCP_SYN_SENT +
    Protocol + Family report the connect with its addresses; DAddr 10.0.0.0/8 does not."""
    port, _ = listener
    hit = place(
        engine,
        TCP_STATE,
        f"    - matchArgs: [{{index: 12, operator: DAddr, values: [127.0.0.0/8]}},\n"
        f"                  {{index: 8, operator: DPort, values: ['{port}']}},\n"
        "                  {index: 6, operator: State, values: [TCP_SYN_SENT]},\n"
        "                  {index: 10, operator: Protocol, values: [IPPROTO_TCP]},\n"
        "                  {index: 9, operator: Family, values: [AF_INET]}]\n",
    )
    miss = place(
        engine,
        TCP_STATE,
        f"    - matchArgs: [{{index: 12, operator: DAddr, values: [10.0.0.0/8]}},\n"
        f"                  {{index: 8, operator: DPort, values: ['{port}']}}]\n",
    )
    try:
        pid = connect("127.0.0.1", port)
        [rec] = of(engine, hit, pid)
        dport, daddr, daddr_v6, state, family, protocol = rec["args"]
        assert (dport, daddr, state, family, protocol) == (
            port, "127.0.0.1", TCP_SYN_SENT, socket.AF_INET, socket.IPPROTO_TCP,
        )  # fmt: skip
        # the kernel maps an IPv4 peer into the v6 field (the decoder may unmap it)
        assert daddr_v6 in ("::ffff:127.0.0.1", "127.0.0.1")
        assert not of(engine, miss, pid, timeout=0.3)
    finally:
        engine.table.detach(hit)
        engine.table.detach(miss)


def test_tcp_state_ipv6_and_mapped_ipv4(engine: Engine, listener: tuple[int, int]) -> None:
    """DAddr ::1 on daddr_v6 matches an IPv6 connect; DAddr 127.0.0.0/8 on daddr_v6 matches
    an IPv4 connect (IPv4-mapped) and not the IPv6 one."""
    port4, port6 = listener
    six = place(
        engine,
        TCP_STATE,
        f"    - matchArgs: [{{index: 14, operator: DAddr, values: ['::1/128']}},\n"
        f"                  {{index: 8, operator: DPort, values: ['{port6}']}},\n"
        "                  {index: 6, operator: State, values: [TCP_SYN_SENT]}]\n",
    )
    mapped = place(
        engine,
        TCP_STATE,
        "    - matchArgs: [{index: 14, operator: DAddr, values: [127.0.0.0/8]},\n"
        f"                  {{index: 8, operator: DPort, values: ['{port4}:{port4}', '{port6}']}}"
        ",\n"
        "                  {index: 6, operator: State, values: [TCP_SYN_SENT]}]\n",
    )
    try:
        pid6 = connect("::1", port6)
        pid4 = connect("127.0.0.1", port4)
        assert [r["args"][2] for r in of(engine, six, pid6)] == ["::1"]
        assert [r["args"][0] for r in of(engine, mapped, pid4)] == [port4]
        assert not of(engine, mapped, pid6, timeout=0.2)
        assert not of(engine, six, pid4, timeout=0.1)
    finally:
        engine.table.detach(six)
        engine.table.detach(mapped)


def test_socket_operators_refused_where_tetragon_refuses() -> None:
    """DAddr on bind's sockaddr (an address of our own), and DAddr on a source-address
    field, are errors naming the filter; on connect's sockaddr (the destination)
    DAddr compiles to what SAddr, Tetragon's spelling, compiles to."""
    daddr = "    selectors:\n    - matchArgs: [{index: %d, operator: DAddr, values: [127.0.0.1]}]\n"
    with pytest.raises(PolicyError, match="where it is the destination"):
        p = policy(CONNECT.replace("sys_connect", "sys_bind") + daddr % 1)
        [planned] = plan_hooks("p", p.spec, NO_KPROBES)
        compile_selectors("p", planned, p.spec.kprobes[0])
    compiled = []
    for op in ("DAddr", "SAddr"):
        p = policy(CONNECT + daddr.replace("DAddr", op) % 1)
        [planned] = plan_hooks("p", p.spec, NO_KPROBES)
        compiled.append(compile_selectors("p", planned, p.spec.kprobes[0]))
    assert compiled[0] == compiled[1]
    p = policy(TCP_STATE.replace("{index: 8}", "{index: 11}") + daddr % 11)
    [planned] = plan_hooks("p", p.spec, NO_KPROBES)
    with pytest.raises(PolicyError, match="source address: use SAddr") as e:
        compile_selectors("p", planned, p.spec.tracepoints[0])
    assert "spec.tracepoints[0].selectors[0].matchArgs[0].operator" in str(e.value)


def test_inmap_and_large_equal_on_ints(engine: Engine) -> None:
    """InMap with values and a range, NotInMap, and Equal with more values than a filter
    holds inline: setuid(5500) and setuid(4242) are reported, setuid(0) is not."""
    many = [str(v) for v in range(4240, 4260)]  # 20 values: a val_match set
    planned, hook = engine.plan(
        SETUID + "    selectors:\n"
        "    - matchArgs: [{index: 0, operator: InMap, values: ['5000:6000', '4242']},\n"
        "                  {index: 0, operator: NotInMap, values: ['5001']}]\n"
        f"    - matchArgs: [{{index: 0, operator: Equal, values: {many!r}}}]\n"
    )
    slots = compile_selectors("p", planned, hook)
    assert [f.op for s in slots for f in s.filters] == [FilterOp.VAL_SET] * 3
    hook_id = engine.table.attach(planned, slots)
    code = "import os,sys; os.setuid(int(sys.argv[1]))"
    try:
        for uid in ("0", "5001", "5500", "4242", "4250"):
            run(sys.executable, "-c", code, uid)
        found = engine.wait(lambda r: r["hook_id"] == hook_id and r["args"] == [4250])
        assert found
        got = sorted((r["args"][0], r["selector"]) for r in engine.hooks if r["hook_id"] == hook_id)
        assert got == [(4242, 0), (4250, 1), (5500, 0)]
    finally:
        engine.table.detach(hook_id)
