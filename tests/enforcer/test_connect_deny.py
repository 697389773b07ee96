"""Network deny end to end: an Override policy on sys_connect, in enforce mode, makes a
connect to a denied peer fail with argError (EPERM) before any packet leaves (the
listener never sees the attempt) and lets other connects through; the enricher reports
the denial (KPROBE_ACTION_OVERRIDE, the policy, the sockaddr); IPv6 too; monitor mode
lets the connect through and reports it; an invalid change leaves the deny in place;
deleting the policy allows again. A scoped policy (containerSelector, podSelector,
TracingPolicyNamespaced, hostSelector) denies where it applies and nowhere else, with real
containers. And what the connect programs cannot serve is refused by path."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.policy import PolicyError
from services.enforcer.compiled import compile_policy
from services.sensor import capabilities
from tests.conftest import ServiceProcess
from tests.docker_fixtures import DOCKER_SOCKET, DockerDaemon
from tests.enforcer.enforcer_process import (
    cli,
    policies,
    running_enforcer,
    sensor_state,
    wait_until,
)
from tests.enforcer.test_enforcement_e2e import events, find  # noqa: F401 - events: a fixture

pytestmark = [pytest.mark.bpf]

NAME = "deny-connect"
# The connecting process: its exit status is the errno connect() failed with (0: connected).
CONNECT = """import socket, sys
s = socket.socket(int(sys.argv[1]), socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect((sys.argv[2], int(sys.argv[3])))
except OSError as e:
    sys.exit(e.errno or 99)
"""


RUN_ID = secrets.token_hex(4)


def deny_policy(
    port: int,
    *,
    error: str = "-1",
    mode: str | None = None,
    side: str = "D",
    scope: str = "",
    kind: str = "TracingPolicy",
    meta: str = "",
) -> str:
    """DAddr/DPort by default (connect's sockaddr is the destination); side "S" is
    Tetragon's spelling for a sockaddr, SAddr/SPort, which means the same. ``scope``:
    spec lines (podSelector, ...), ``meta``: metadata lines (a namespace)."""
    options = f"  options: [{{name: policy-mode, value: {mode}}}]\n" if mode else ""
    arg_error = f", argError: {error}" if error else ""
    return f"""apiVersion: cilium.io/v1alpha1
kind: {kind}
metadata:
  name: {NAME}
{meta}spec:
{options}{scope}  kprobes:
  - call: sys_connect
    syscall: true
    message: "denied connect"
    args:
    - {{index: 0, type: int}}
    - {{index: 1, type: sockaddr}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: {side}Addr, values: ["127.0.0.2/32", "::1/128"]}}
      - {{index: 1, operator: {side}Port, values: ["{port}"]}}
      matchActions:
      - {{action: Override{arg_error}}}
"""


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("connect-policies")


@pytest.fixture(scope="module")
def enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    logs = tmp_path_factory.mktemp("enf")
    docker = {"OCELLUS_ENFORCER_DOCKER_SOCKET": str(DOCKER_SOCKET)}  # scoped policies
    with running_enforcer(module_nats_url, policy_dir, logs, enricher=True, **docker) as service:
        yield service


def _listener(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    s.setblocking(False)
    return s


def _receiver(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


def _loopback_trio(
    make: Callable[[socket.AddressFamily, str, int], socket.socket], ports: range
) -> Iterator[dict[str, socket.socket]]:
    """Sockets ``make`` opens on the first free port of ``ports``: 127.0.0.2 and [::1]
    (the peers denied), and 127.0.0.2 on the next port (allowed)."""
    for port in ports:
        opened: list[socket.socket] = []
        try:
            opened.append(make(socket.AF_INET, "127.0.0.2", port))
            opened.append(make(socket.AF_INET6, "::1", port))
            opened.append(make(socket.AF_INET, "127.0.0.2", port + 1))
        except OSError:
            for s in opened:
                s.close()
            continue
        yield dict(zip(("v4", "v6", "allowed"), opened, strict=True))
        for s in opened:
            s.close()
        return
    pytest.fail(f"no free port pair on loopback in {ports}")


@pytest.fixture
def listeners() -> Iterator[dict[str, socket.socket]]:
    """TCP listeners: see _loopback_trio."""
    yield from _loopback_trio(_listener, range(8100, 8900, 2))


def port_of(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def attempted(listener: socket.socket) -> bool:
    """Whether a connection reached the listener (it is then accepted and closed)."""
    if not select.select([listener], [], [], 0.3)[0]:
        return False
    conn, _ = listener.accept()
    conn.close()
    return True


def denied(hit: dict[str, Any], call: str, port: int) -> None:
    """The event of a denial by the policies here: the policy, the action, the call, the
    peer 127.0.0.2:port; the fd comes unread (the cgroup programs do not see it: never
    made up)."""
    message = {"connect": "denied connect", "sendto": "denied datagram"}[call]
    assert hit["policy_name"] == NAME and hit["action"] == "KPROBE_ACTION_OVERRIDE", hit
    assert hit["function_name"] == f"__x64_sys_{call}" and hit["message"] == message, hit
    peer = {"family": "AF_INET", "addr": "127.0.0.2", "port": port}
    assert hit["args"][1] == {"sockaddr_arg": peer}, hit
    assert hit["args"][0] == {}, hit


async def connect(family: socket.AddressFamily, host: str, port: int) -> tuple[int, int]:
    """(pid, errno) of a process that connects once; errno 0: it connected."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CONNECT, str(int(family)), host, str(port)
    )
    return proc.pid, await proc.wait()


@pytest.fixture
def apply(policy_dir: Path, module_nats_url: str) -> Iterator[Any]:
    """Write the policy and wait until it is applied; removed (and gone) afterwards."""
    path = policy_dir / f"{NAME}.yaml"

    def write(text: str, state: str = "applied") -> dict[str, Any]:
        path.write_text(text)
        row: dict[str, Any] = wait_until(
            lambda: (row := policies(module_nats_url).get(NAME)) and row["state"] == state and row,
            f"{NAME} {state}",
        )
        return row

    yield write
    path.unlink(missing_ok=True)
    wait_until(lambda: NAME not in policies(module_nats_url), f"{NAME} removed")


async def test_connect_deny_refuses_with_eperm_and_reports_the_denial(
    enforcer: ServiceProcess,
    apply: Any,
    listeners: dict[str, socket.socket],
    module_nats_url: str,
    events: list[dict[str, Any]],  # noqa: F811 - the fixture
) -> None:
    """Enforce mode: connect() to the denied peer fails with EPERM and no SYN reaches the
    listener; the next port connects; the event names the policy, the action and the peer."""
    port = port_of(listeners["v4"])
    row = apply(deny_policy(port))
    assert row["mode"] == "enforce", row
    assert any("connect4/connect6" in n for n in row["notes"]), row["notes"]
    assert (await sensor_state(module_nats_url))["connect_guard"] == "attached"

    pid, code = await connect(socket.AF_INET, "127.0.0.2", port)
    assert code == errno.EPERM
    with pytest.raises(PermissionError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    assert not attempted(listeners["v4"])

    assert (await connect(socket.AF_INET, "127.0.0.2", port + 1))[1] == 0
    assert attempted(listeners["allowed"])
    # A sys_connect rule is for connect(): a datagram sent to the peer without it passes
    # (sys_sendto rules are for that).
    assert (await send_datagram(socket.AF_INET, "127.0.0.2", port))[1] == 0

    denied(await find(events, "process_kprobe", pid), "connect", port)
    counters = policies(module_nats_url)[NAME]["counters"]
    assert counters["denied"] >= 2 and counters["posted"] >= 2, counters


async def test_connect_deny_ipv6_and_ipv4_mapped(
    enforcer: ServiceProcess,
    apply: Any,
    listeners: dict[str, socket.socket],
    events: list[dict[str, Any]],  # noqa: F811 - the fixture
) -> None:
    """[::1]:port is denied (connect6), and so is ::ffff:127.0.0.2 from an IPv6 socket
    (matched as the IPv4 peer it is); the event carries the IPv6 sockaddr. Written
    with Tetragon's SAddr/SPort, which mean the same on connect's sockaddr."""
    port = port_of(listeners["v6"])
    apply(deny_policy(port, side="S"))

    pid, code = await connect(socket.AF_INET6, "::1", port)
    assert code == errno.EPERM
    assert not attempted(listeners["v6"])
    hit = await find(events, "process_kprobe", pid)
    assert hit["action"] == "KPROBE_ACTION_OVERRIDE", hit
    assert hit["args"][1] == {"sockaddr_arg": {"family": "AF_INET6", "addr": "::1", "port": port}}

    assert (await connect(socket.AF_INET6, "::ffff:127.0.0.2", port))[1] == errno.EPERM
    assert not attempted(listeners["v4"])
    assert (await connect(socket.AF_INET6, "::1", port + 1))[1] == errno.ECONNREFUSED


# The sending process: its exit status is the errno sendto() failed with (0: sent).
SENDTO = """import socket, sys
s = socket.socket(int(sys.argv[1]), socket.SOCK_DGRAM)
try:
    s.sendto(b"ocellus", (sys.argv[2], int(sys.argv[3])))
except OSError as e:
    sys.exit(e.errno or 99)
"""


def sendto_policy(port: int, mode: str | None = None) -> str:
    """Override on sys_sendto's destination (arg 4): UDP datagrams to 127.0.0.2 or ::1 on
    ``port`` are refused."""
    options = f"  options: [{{name: policy-mode, value: {mode}}}]\n" if mode else ""
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {NAME}
spec:
{options}  kprobes:
  - call: sys_sendto
    syscall: true
    message: "denied datagram"
    args:
    - {{index: 0, type: int}}
    - {{index: 4, type: sockaddr}}
    selectors:
    - matchArgs:
      - {{index: 4, operator: DAddr, values: ["127.0.0.2/32", "::1/128"]}}
      - {{index: 4, operator: DPort, values: ["{port}"]}}
      matchActions:
      - {{action: Override, argError: -1}}
"""


@pytest.fixture
def udp_receivers() -> Iterator[dict[str, socket.socket]]:
    """UDP sockets: see _loopback_trio."""
    yield from _loopback_trio(_receiver, range(8901, 9700, 2))


def received(receiver: socket.socket) -> bool:
    """Whether a datagram reached the receiver (it is read)."""
    if not select.select([receiver], [], [], 0.3)[0]:
        return False
    receiver.recv(64)
    return True


async def test_sendto_deny_refuses_a_datagram_and_reports_it(
    enforcer: ServiceProcess,
    apply: Any,
    udp_receivers: dict[str, socket.socket],
    module_nats_url: str,
    events: list[dict[str, Any]],  # noqa: F811 - the fixture
) -> None:
    """Override on sys_sendto, served by the sendmsg4/sendmsg6 programs: a datagram to the
    denied address fails with EPERM and never arrives, by sendto and by sendmsg, over IPv4
    and IPv6; the next port gets its datagram; the event names the policy, the action and
    the destination. A connected socket's send gives no address: connect's rules see it."""
    port = port_of(udp_receivers["v4"])
    row = apply(sendto_policy(port))
    assert any("sendmsg4/sendmsg6" in n for n in row["notes"]), row["notes"]

    pid, code = await send_datagram(socket.AF_INET, "127.0.0.2", port)
    assert code == errno.EPERM
    assert not received(udp_receivers["v4"])
    assert (await send_datagram(socket.AF_INET6, "::1", port))[1] == errno.EPERM
    assert not received(udp_receivers["v6"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(PermissionError):
        s.sendmsg([b"ocellus"], [], 0, ("127.0.0.2", port))
    assert not received(udp_receivers["v4"])
    # An IPv6 socket's datagram to ::ffff:127.0.0.2 reaches sendmsg4 as IPv4: denied,
    # and reported as the IPv6 sockaddr the caller gave (as the tracepoint would).
    mapped, code = await send_datagram(socket.AF_INET6, "::ffff:127.0.0.2", port)
    assert code == errno.EPERM
    assert not received(udp_receivers["v4"])
    hit = await find(events, "process_kprobe", mapped)
    assert hit["args"][1]["sockaddr_arg"]["family"] == "AF_INET6", hit
    assert hit["args"][1]["sockaddr_arg"]["port"] == port, hit

    assert (await send_datagram(socket.AF_INET, "127.0.0.2", port + 1))[1] == 0
    assert received(udp_receivers["allowed"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.2", port))  # no connect rule for this port
        s.send(b"ocellus")
    assert received(udp_receivers["v4"])

    denied(await find(events, "process_kprobe", pid), "sendto", port)
    counters = policies(module_nats_url)[NAME]["counters"]
    assert counters["denied"] >= 3 and counters["posted"] >= 3, counters


async def test_sendto_monitor_mode_lets_the_datagram_through_and_reports_it(
    enforcer: ServiceProcess,
    apply: Any,
    udp_receivers: dict[str, socket.socket],
    events: list[dict[str, Any]],  # noqa: F811 - the fixture
) -> None:
    """Monitor mode: the datagram arrives, and the sys_sendto tracepoint reports what
    enforce mode would have done, with every arg."""
    port = port_of(udp_receivers["v4"])
    apply(sendto_policy(port, mode="monitor"))
    pid, code = await send_datagram(socket.AF_INET, "127.0.0.2", port)
    assert code == 0
    assert received(udp_receivers["v4"])
    seen = await find(events, "process_kprobe", pid)
    assert seen["action"] == "KPROBE_ACTION_POST" and seen["policy_name"] == NAME, seen
    assert seen["message"] == "denied datagram [monitor mode: would OVERRIDE (EPERM)]"
    assert seen["args"][1]["sockaddr_arg"]["port"] == port
    assert "int_arg" in seen["args"][0]


def test_sendto_override_compiles_to_sendmsg_rules() -> None:
    """Override on sys_sendto compiles to connect rules for the sendmsg programs, and
    says so; on sys_sendmsg it is refused, pointing to sys_sendto."""
    compiled = compile_policy(sendto_policy(8999), capabilities.probe())
    (rule,) = compiled.hooks[0].connect
    assert rule.call == "sendto" and rule.error == -1 and rule.post
    assert any("sendmsg4/sendmsg6" in n for n in compiled.notes), compiled.notes
    monitor = compile_policy(sendto_policy(8999, mode="monitor"), capabilities.probe())
    assert any("sendto calls Override would deny" in n for n in monitor.notes), monitor.notes
    sendmsg = (
        _HEAD
        + (
            "  - call: sys_sendmsg\n    syscall: true\n    args: [{index: 0, type: int}]\n"
            "    selectors:\n    - matchArgs: [{index: 0, operator: Equal, values: ['3']}]\n"
        )
        + _DENY
    )
    with pytest.raises(PolicyError, match="put the Override on sys_sendto"):
        compile_policy(sendmsg, capabilities.probe())


async def send_datagram(family: socket.AddressFamily, host: str, port: int) -> tuple[int, int]:
    """(pid, errno) of a process that sends one datagram; errno 0: it was sent."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDTO, str(int(family)), host, str(port)
    )
    return proc.pid, await proc.wait()


async def test_monitor_mode_lets_the_connect_through_and_reports_it(
    enforcer: ServiceProcess,
    apply: Any,
    listeners: dict[str, socket.socket],
    module_nats_url: str,
    events: list[dict[str, Any]],  # noqa: F811 - the fixture
) -> None:
    """Monitor mode connects and reports what enforce mode would have done; switching
    back to enforce denies again within a second, same hook."""
    port = port_of(listeners["v4"])
    apply(deny_policy(port, mode="monitor"))

    pid, code = await connect(socket.AF_INET, "127.0.0.2", port)
    assert code == 0
    assert attempted(listeners["v4"])
    seen = await find(events, "process_kprobe", pid)
    assert seen["action"] == "KPROBE_ACTION_POST" and seen["policy_name"] == NAME, seen
    assert seen["message"] == "denied connect [monitor mode: would OVERRIDE (EPERM)]"
    assert seen["args"][1]["sockaddr_arg"]["port"] == port
    assert "int_arg" in seen["args"][0]  # the tracepoint reads every arg

    out = await asyncio.to_thread(cli, module_nats_url, "mode", NAME, "enforce")
    assert out.returncode == 0, out.stdout + out.stderr
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (await connect(socket.AF_INET, "127.0.0.2", port))[1] != errno.EPERM:
        assert attempted(listeners["v4"])
        assert loop.time() - started < 1.0, "enforce mode not in effect within 1s"
    await asyncio.to_thread(cli, module_nats_url, "mode", NAME, "default")


async def test_arg_error_is_what_connect_returns(
    enforcer: ServiceProcess, apply: Any, listeners: dict[str, socket.socket]
) -> None:
    """argError -13: connect() fails with EACCES (bpf_set_retval), not the default EPERM."""
    port = port_of(listeners["v4"])
    apply(deny_policy(port, error="-13"))
    assert (await connect(socket.AF_INET, "127.0.0.2", port))[1] == errno.EACCES
    assert not attempted(listeners["v4"])


async def test_invalid_change_keeps_the_deny_and_delete_allows(
    enforcer: ServiceProcess,
    apply: Any,
    policy_dir: Path,
    listeners: dict[str, socket.socket],
    module_nats_url: str,
) -> None:
    """A change the connect programs cannot serve (no argError) is refused: the policy is
    stale and still denies; deleting it lets the connect through."""
    port = port_of(listeners["v4"])
    apply(deny_policy(port))
    row = apply(deny_policy(port, error=""), state="stale")
    assert "argError" in row["error"], row
    assert (await connect(socket.AF_INET, "127.0.0.2", port))[1] == errno.EPERM
    assert not attempted(listeners["v4"])

    (policy_dir / f"{NAME}.yaml").unlink()
    wait_until(lambda: NAME not in policies(module_nats_url), f"{NAME} removed")
    assert (await connect(socket.AF_INET, "127.0.0.2", port))[1] == 0
    assert attempted(listeners["v4"])


class Boxes:
    """Busybox containers, each listening on ``port`` of its own loopback (a network
    namespace of its own: 127.0.0.2 there is not the host's); removed at the end."""

    def __init__(self, docker: DockerDaemon, port: int) -> None:
        self.docker = docker
        self.port = port
        self.ids: list[str] = []

    def start(self, name: str, labels: dict[str, str] | None = None) -> str:
        cid = self.docker.run(
            "run", "-d", "--name", name,
            *(a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")),
            "ocellus-test-busybox", "sh", "-c",
            f"busybox nc -ll -p {self.port} -e true & exec sleep 300",
        )  # fmt: skip
        self.ids.append(cid)
        deadline = time.monotonic() + 30
        while self.connect(cid)[0] != 0:  # its listener is up
            assert time.monotonic() < deadline, f"container {name}: no listener on {self.port}"
            time.sleep(0.1)
        return cid

    def connect(self, cid: str) -> tuple[int, str]:
        """``nc 127.0.0.2 port`` in the container (docker exec): its exit status (0: it
        connected) and what it said."""
        done = subprocess.run(
            [self.docker.cli, "exec", cid, "busybox", "nc", "-w", "5", "127.0.0.2",
             str(self.port)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        return done.returncode, done.stderr.decode(errors="replace")


def refused(result: tuple[int, str], code: int = errno.EPERM) -> bool:
    """busybox nc failed to connect, with that errno."""
    return result[0] == 1 and os.strerror(code) in result[1]


@pytest.fixture
def boxes(
    docker_daemon: DockerDaemon, busybox_image: str, listeners: dict[str, socket.socket]
) -> Iterator[Boxes]:
    made = Boxes(docker_daemon, port_of(listeners["v4"]))
    yield made
    for cid in made.ids:
        docker_daemon.run("rm", "-f", cid)


# The scoped container is a pod's (CRI labels); the other one is a plain container with
# the pod's label, which no podSelector selects.
_POD_NAMESPACE = f"cdeny-{RUN_ID}"
_WEB = f"web-{RUN_ID}"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("kind", "scope", "meta"),
    [
        pytest.param(
            "TracingPolicy",
            f"  containerSelector:\n    matchLabels: {{name: {_WEB}}}\n",
            "",
            id="containerSelector",
        ),
        pytest.param(
            "TracingPolicy",
            "  podSelector:\n    matchLabels: {app: cdeny-web}\n",
            "",
            id="podSelector",
        ),
        pytest.param(
            "TracingPolicyNamespaced", "", f"  namespace: {_POD_NAMESPACE}\n", id="namespaced"
        ),
    ],
)
async def test_scoped_deny_refuses_in_its_scope_only(
    enforcer: ServiceProcess,
    apply: Any,
    listeners: dict[str, socket.socket],
    boxes: Boxes,
    kind: str,
    scope: str,
    meta: str,
) -> None:
    """A scoped Override: the connect fails with EPERM in the pod's container; the same
    connect from another container and from the host connects."""
    port = boxes.port
    pod = {
        "io.kubernetes.pod.namespace": _POD_NAMESPACE,
        "io.kubernetes.pod.name": "web-1",
        "io.kubernetes.container.name": _WEB,
        "app": "cdeny-web",
    }
    web = await asyncio.to_thread(boxes.start, f"cdeny-web-{RUN_ID}", pod)
    plain = await asyncio.to_thread(boxes.start, f"cdeny-plain-{RUN_ID}", {"app": "cdeny-web"})
    row = apply(deny_policy(port, scope=scope, kind=kind, meta=meta))
    assert row["scope"]["host"] is False and row["scope"]["cgroups"] >= 1, row

    denied = await asyncio.to_thread(boxes.connect, web)
    assert refused(denied), denied
    assert await asyncio.to_thread(boxes.connect, plain) == (0, "")
    assert (await connect(socket.AF_INET, "127.0.0.2", port))[1] == 0
    assert attempted(listeners["v4"])


@pytest.mark.docker
async def test_host_only_deny_refuses_on_the_host_not_in_containers(
    enforcer: ServiceProcess,
    apply: Any,
    listeners: dict[str, socket.socket],
    boxes: Boxes,
) -> None:
    """hostSelector: {} alone: the host's connect fails with argError (EACCES) and never
    reaches the listener; the same connect in a container connects."""
    port = boxes.port
    cid = await asyncio.to_thread(boxes.start, f"cdeny-host-only-{RUN_ID}")
    row = apply(deny_policy(port, error="-13", scope="  hostSelector: {}\n"))
    assert row["scope"]["host"] is True, row

    assert (await connect(socket.AF_INET, "127.0.0.2", port))[1] == errno.EACCES
    assert not attempted(listeners["v4"])
    assert await asyncio.to_thread(boxes.connect, cid) == (0, "")


async def find_in(
    got: list[dict[str, Any]], cid: str, port: int, timeout: float = 10.0
) -> dict[str, Any]:
    """The first process_kprobe of NAME from container ``cid`` connecting to ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in got:
            body = ev.get("process_kprobe")
            if (
                body
                and body["policy_name"] == NAME
                and body["process"].get("docker") == cid[:31]
                and body["args"][1]["sockaddr_arg"]["port"] == port
            ):
                return dict(body)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no process_kprobe of {NAME} from container {cid[:12]}")


@pytest.mark.docker
async def test_scoped_monitor_mode_reports_in_its_scope_only(
    enforcer: ServiceProcess,
    apply: Any,
    listeners: dict[str, socket.socket],
    boxes: Boxes,
    module_nats_url: str,
    events: list[dict[str, Any]],  # noqa: F811 - the fixture
) -> None:
    """Monitor mode, containerSelector: the container's connect connects and is reported
    as what enforce mode would do; the host's connects and is neither matched nor
    reported."""
    port = boxes.port
    cid = await asyncio.to_thread(boxes.start, f"cdeny-monitor-{RUN_ID}")
    scope = f"  containerSelector:\n    matchLabels: {{name: cdeny-monitor-{RUN_ID}}}\n"
    row = apply(deny_policy(port, mode="monitor", scope=scope))
    assert row["mode"] == "monitor" and row["scope"]["cgroups"] >= 1, row

    host_pid, code = await connect(socket.AF_INET, "127.0.0.2", port)
    assert code == 0
    assert attempted(listeners["v4"])
    assert await asyncio.to_thread(boxes.connect, cid) == (0, "")
    seen = await find_in(events, cid, port)
    assert seen["action"] == "KPROBE_ACTION_POST", seen
    assert seen["message"] == "denied connect [monitor mode: would OVERRIDE (EPERM)]"
    # The kernel counts a match as it happens, before either connect returned: exactly
    # the container's one, however late an event of the host's would come.
    counters = (await asyncio.to_thread(policies, module_nats_url))[NAME]["counters"]
    assert counters["matched"] == counters["monitored"] == counters["posted"] == 1, counters
    # Nor did an event of the host's arrive by now (the counters are the proof).
    assert not [
        ev
        for ev in events
        if (body := ev.get("process_kprobe")) and body["process"]["pid"] == host_pid
    ]


_HEAD = (
    "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: x}\nspec:\n  kprobes:\n"
)
_SOCKADDR_ARGS = "    args: [{index: 0, type: int}, {index: 1, type: sockaddr}]\n"
_DENY = "      matchActions: [{action: Override, argError: -1}]\n"
_SADDR = "    - matchArgs: [{index: 1, operator: SAddr, values: [10.0.0.0/8]}]\n"


_CONNECT_HOOK = "  - call: sys_connect\n    syscall: true\n" + _SOCKADDR_ARGS + "    selectors:\n"


@pytest.mark.parametrize(
    ("hook", "path", "why"),
    [
        pytest.param(
            "  - call: sys_openat\n    syscall: true\n    args: [{index: 1, type: string}]\n"
            "    selectors:\n    - matchArgs: [{index: 1, operator: Equal, values: [/x]}]\n"
            + _DENY,
            "selectors[0].matchActions[0]",
            "connect and sendto only",
            id="not-connect",
        ),
        pytest.param(
            _CONNECT_HOOK + _SADDR + "      matchActions: [{action: Override}]\n",
            "selectors[0].matchActions[0].argError",
            "negative errno",
            id="no-arg-error",
        ),
        pytest.param(
            _CONNECT_HOOK
            + "    - matchArgs: [{index: 0, operator: Equal, values: ['3']}]\n"
            + _DENY,
            "selectors[0].matchArgs[0]",
            "only filters on the sockaddr",
            id="fd-filter",
        ),
        pytest.param(
            _CONNECT_HOOK
            + _SADDR
            + "      matchBinaries: [{operator: In, values: [/bin/nc]}]\n"
            + _DENY,
            "selectors[0].matchBinaries",
            "not supported yet",
            id="match-binaries",
        ),
        pytest.param(
            _CONNECT_HOOK + "    - matchActions: [{action: Override, argError: -1}]\n",
            "selectors[0].matchArgs",
            "every connect of the node",
            id="deny-all",
        ),
        pytest.param(
            _CONNECT_HOOK + _SADDR + _SADDR + _DENY,
            "selectors[1].matchActions[0]",
            "must come before",
            id="after-another-selector",
        ),
        pytest.param(
            _CONNECT_HOOK
            + _SADDR
            + "      matchNamespaces: [{namespace: Net, operator: NotIn, values: [host_ns]}]\n"
            + _DENY,
            "selectors[0].matchNamespaces",
            "not supported yet",
            id="match-namespaces-in-a-scoped-policy",
        ),
    ],
)
def test_override_refused_where_the_connect_programs_cannot_serve_it(
    hook: str, path: str, why: str
) -> None:
    """Each Override the connect programs cannot evaluate is refused, naming its path, in
    a scoped policy too (the last case)."""
    scope = "  containerSelector: {matchLabels: {name: web}}\n" if "Namespaces" in hook else ""
    text = _HEAD.replace("  kprobes:", scope + "  kprobes:") + hook
    with pytest.raises(PolicyError) as e:
        compile_policy(text, capabilities.probe())
    assert f"spec.kprobes[0].{path}" in str(e.value) and why in str(e.value), str(e.value)


def test_override_refused_without_cgroup_connect_programs() -> None:
    """A kernel that refuses cgroup connect programs: Override policies are refused."""
    text = _HEAD + _CONNECT_HOOK + _SADDR + _DENY
    caps = {**capabilities.probe(), "cgroup_connect": "EPERM"}
    with pytest.raises(PolicyError, match=r"cgroup_connect: EPERM"):
        compile_policy(text, caps)
    assert compile_policy(text, capabilities.probe()).hooks[0].connect


@pytest.mark.parametrize(
    ("metadata", "scope", "host"),
    [
        pytest.param("{name: x}", "  containerSelector: {matchLabels: {name: web}}\n", False,
                     id="containerSelector"),
        pytest.param("{name: x}", "  podSelector: {matchLabels: {app: web}}\n", False,
                     id="podSelector"),
        pytest.param("{name: x}", "  hostSelector: {}\n", True, id="host-only"),
        pytest.param("{name: x, annotations: {ocellus.io/scope: reactive}}", "", False,
                     id="reactive"),
    ],
)  # fmt: skip
def test_scoped_override_compiles_to_connect_rules(metadata: str, scope: str, host: bool) -> None:
    """A scoped Override policy is accepted: its connect rules and its scope, together."""
    text = (
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {metadata}\nspec:\n"
        f"{scope}  kprobes:\n{_CONNECT_HOOK}{_SADDR}{_DENY}"
    )
    compiled = compile_policy(text, capabilities.probe())
    assert compiled.hooks[0].connect and compiled.scope is not None
    assert compiled.scope.host is host
    assert any("made in the policy's scope" in n for n in compiled.notes), compiled.notes
