"""Network deny: Tetragon's ``Override`` on ``sys_connect``, served by the sensor's cgroup
connect4/connect6 programs (bpf/connect.bpf.c) instead of bpf_override_return (this
kernel has no kprobes); and on ``sys_sendto`` (its sockaddr, arg 4, the datagram's
destination), served by the same guard as sendmsg4/sendmsg6 programs: a UDP datagram
sent to a denied address without connect() (sendto, sendmsg, sendmmsg) fails the same way.

A policy such as::

    kprobes:
    - call: sys_connect
      syscall: true
      args: [{index: 0, type: int}, {index: 1, type: sockaddr}]
      selectors:
      - matchArgs:
        - {index: 1, operator: SAddr, values: [10.0.0.0/8]}
        - {index: 1, operator: SPort, values: ["443"]}
        matchActions:
        - {action: Override, argError: -1}

compiles to the usual hook on ``syscalls:sys_enter_connect``, whose Override slot posts
nothing (action OVERRIDE), plus one connect rule per Override selector naming that slot.
The connect programs evaluate the slot's filters on the peer of every connect() of the
node (io_uring's too); on a match they refuse it before any packet is built, the caller
gets ``argError`` (bpf_set_retval: any negative errno, EPERM being the kernel's default),
and a record says so (KPROBE_ACTION_OVERRIDE, the sockaddr arg; the fd and addrlen args
are not visible to them and arrive unread). In monitor mode the slot's action is POST:
the tracepoint posts the event (with every arg), the connect programs let it through.

A scoped policy (podSelector, containerSelector, TracingPolicyNamespaced, hostSelector,
the reactive scope) denies where its scope applies: the connect programs read the
slot's scope as the tracepoint does (the connecting task's cgroup in the scope's set in
``scope_cgroups``, or not in it for a scope that takes in the host).

What the connect programs cannot evaluate is refused by path: Override on any call but
connect and sendto, without a negative ``argError`` (they cannot make a connect "succeed" without
connecting), with process selectors (matchBinaries, matchPIDs, matchNamespaces: their
evaluation inside the programs' rule loop takes the verifier past its 1M-instruction
limit) or filters on other args, without any filter (that would deny every connect of
the node, or of the scope), after a selector of another action (the first matching
selector decides, and they cannot evaluate that one), with Sigkill/Signal.

``ConnectRules`` writes the pinned ``connect_rules`` map; the engine calls it as part
of a policy's whole-or-nothing apply.
"""

from __future__ import annotations

import ctypes as ct
import errno
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.policy import PolicyError, Problem
from schemas.policy.hooks import AnyHook
from services.common import bpfsys
from services.common.logging import get_logger
from services.enforcer.hooktable import HookTableError
from services.enforcer.plan import SOCKADDR, PlannedHook
from services.sensor.connect_records import CONNECT_RULES, CR_POST, CR_SENDMSG, ConnectRule
from services.sensor.hook_records import Action, ArgPart, FilterOp, SlotConfig

if TYPE_CHECKING:
    from services.enforcer.compiled import CompiledHook

log = get_logger("ocellus.enforcer")

_ERRNO_EXAMPLES = {
    "connect": "-1 EPERM, -13 EACCES, -111 ECONNREFUSED",
    "sendto": "-1 EPERM, -13 EACCES, -101 ENETUNREACH",
}
# The calls Override is served for (their tracepoint -> the call), and the flags
# that say which programs serve a call's rules (sendto: sendmsg4/6).
_SERVED = {("syscalls", "sys_enter_connect"): "connect", ("syscalls", "sys_enter_sendto"): "sendto"}
_CALL_FLAGS = {"connect": 0, "sendto": CR_SENDMSG}
_ERRNO_MAX = 4095  # the kernel's error values: -4095 .. -1
# (part, op) of the filters the connect programs evaluate on a sockaddr arg.
_EVALUABLE = {
    (ArgPart.FAMILY, FilterOp.VAL_SET),
    (ArgPart.PORT, FilterOp.VAL_SET),
    (ArgPart.ADDR, FilterOp.ADDR),
}


@dataclass(frozen=True, slots=True)
class ConnectRuleSpec:
    """One Override selector of a sys_connect or sys_sendto hook."""

    selector: int
    error: int  # negative errno: what connect() or sendto() returns
    post: bool = True  # False: NoPost (denied, not reported)
    call: str = "connect"  # or "sendto": the sendmsg4/6 programs serve it

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(-self.error, str(self.error))

    @property
    def would(self) -> str:
        """What enforce mode would do (a monitor-mode event's message says it)."""
        return f"OVERRIDE ({self.errno_name})"


def compile_connect_rules(
    policy: str,
    planned: PlannedHook,
    hook: AnyHook,
    slots: Sequence[SlotConfig],
    capabilities: Mapping[str, str],
) -> tuple[ConnectRuleSpec, ...]:
    """The connect rules of a hook's Override selectors (none without Override); a
    PolicyError names every Override the connect programs cannot serve."""
    selectors = list(getattr(hook, "selectors", []) or [])
    problems: list[Problem] = []
    rules: list[ConnectRuleSpec] = []
    other_before = False  # a selector of another action comes first
    for i, (selector, slot) in enumerate(zip(selectors, slots, strict=False)):
        path = f"{planned.path}.selectors[{i}]"
        acts = [(j, a) for j, a in enumerate(selector.match_actions) if a.action == "Override"]
        if not acts:
            other_before = True
            continue
        j, act = acts[0]
        where = f"{path}.matchActions[{j}]"
        found = _problems(path, where, act.arg_error, planned, slot, capabilities)
        if other_before:
            found.append(
                Problem(
                    where,
                    "an Override selector must come before the hook's other selectors: the "
                    "first selector that matches decides, and the connect programs cannot "
                    "evaluate the others",
                )
            )
        if found:
            problems += found
            continue
        post = not any(a.action == "NoPost" for a in selector.match_actions)
        call = _SERVED[(planned.tracepoint.subsystem, planned.tracepoint.event)]
        rules.append(ConnectRuleSpec(i, int(act.arg_error or 0), post, call))
    if problems:
        raise PolicyError(policy, problems)
    return tuple(rules)


def _problems(
    path: str,
    where: str,
    arg_error: int | None,
    planned: PlannedHook,
    slot: SlotConfig,
    capabilities: Mapping[str, str],
) -> list[Problem]:
    tp = planned.tracepoint
    call = _SERVED.get((tp.subsystem, tp.event))
    if planned.event_kind != "process_kprobe" or call is None:
        kprobes = capabilities.get("kprobes", "not probed")
        hint = ""
        if tp.event in ("sys_enter_sendmsg", "sys_enter_sendmmsg"):
            hint = (
                "; to deny UDP datagrams to an address, put the Override on sys_sendto: "
                "it is served for sendmsg and sendmmsg too"
            )
        return [
            Problem(
                where,
                "Override is served for connect and sendto only (syscall: true sys_connect "
                "and sys_sendto kprobes), by cgroup connect4/connect6 and sendmsg4/sendmsg6 "
                "programs; another call's return value needs bpf_override_return, which this "
                f"kernel does not offer (kprobes: {kprobes}){hint}",
            )
        ]
    out = []
    state = capabilities.get("cgroup_connect", "not probed")
    if state != "yes":
        out.append(
            Problem(
                where,
                f"Override on {call} needs cgroup socket-address programs, which this "
                f"kernel refuses (cgroup_connect: {state})",
            )
        )
    if arg_error is None or not -_ERRNO_MAX <= arg_error <= -1:
        out.append(
            Problem(
                f"{where}.argError",
                f"Override on {call} needs argError, the negative errno {call}() fails with "
                f"({_ERRNO_EXAMPLES[call]}, ...): the programs refuse a {call}, they "
                "cannot make it succeed without doing it",
            )
        )
    if slot.signal or slot.action != Action.OVERRIDE:
        out.append(Problem(where, "Override cannot be combined with Sigkill or Signal"))
    for present, key in (
        (slot.binary is not None, "matchBinaries"),
        (slot.pids is not None, "matchPIDs"),
        (bool(slot.namespaces), "matchNamespaces"),
        (bool(slot.return_filters), "matchReturnArgs"),
    ):
        if present:
            out.append(
                Problem(
                    f"{path}.{key}",
                    f"{key} with Override is not supported yet: the connect programs "
                    "evaluate the sockaddr (address, port, family) and the policy's scope "
                    "(podSelector, containerSelector, hostSelector) only",
                )
            )
    if not slot.filters:
        out.append(
            Problem(
                f"{path}.matchArgs",
                f"an Override selector without matchArgs would deny every {call} of the "
                "node: filter the sockaddr arg (SAddr, SPort, Family)",
            )
        )
    for k, f in enumerate(slot.filters):
        arg = planned.args[f.arg]
        if arg.read != SOCKADDR or (f.part, f.op) not in _EVALUABLE:
            out.append(
                Problem(
                    f"{path}.matchArgs[{k}]",
                    "with Override, only filters on the sockaddr arg (SAddr, SPort, Family "
                    "and their negations) are supported: the connect programs see the peer, "
                    "not the other args",
                )
            )
    return out


class ConnectRulesError(HookTableError):
    """Connect rules that cannot be placed (the map is full or not there)."""


class ConnectRules:
    """The pinned ``connect_rules`` array (the sensor creates it): one entry per Override
    selector, by hook id. Entries found at start (an earlier enforcer's) are kept
    under their hook ids until ``put``, ``drop`` or ``retain`` says otherwise."""

    def __init__(self, pin_dir: Path | None) -> None:
        self._map: bpfsys.PinnedMap | None = None
        self._by_hook: dict[int, list[int]] = {}
        if pin_dir is None:
            return
        try:
            self._map = bpfsys.PinnedMap(pin_dir / "connect_rules")
        except OSError as e:
            raise ConnectRulesError(f"the connect_rules map is not in {pin_dir}: {e}") from e
        for i in range(CONNECT_RULES):
            rule = ConnectRule()
            if self._map.lookup(ct.c_uint32(i), rule) and rule.hook_id:
                self._by_hook.setdefault(rule.hook_id, []).append(i)

    @classmethod
    def open(cls, pin_dir: Path) -> ConnectRules:
        """The map in ``pin_dir``; without it, rules that refuse every connect rule."""
        try:
            return cls(pin_dir)
        except ConnectRulesError as e:
            log.warning("connect deny unavailable", reason=str(e))
            return cls(None)

    def hook_ids(self) -> set[int]:
        return set(self._by_hook)

    def put(self, hook_ids: Sequence[int], hooks: Sequence[CompiledHook]) -> None:
        """The rules of these hooks, replacing what they had: the new entries are
        written first, then the old ones go (a change never leaves a moment without)."""
        wanted = [
            (hook_id, hook.planned.tracepoint.id, spec)
            for hook_id, hook in zip(hook_ids, hooks, strict=True)
            for spec in hook.connect
        ]
        if not wanted:
            self.drop(hook_ids)
            return
        if self._map is None:
            raise ConnectRulesError(
                "Override on connect or sendto needs the sensor's connect_rules map, which this "
                "enforcer could not open"
            )
        used = {i for entries in self._by_hook.values() for i in entries}
        free = [i for i in range(CONNECT_RULES) if i not in used]
        if len(wanted) > len(free):
            raise ConnectRulesError(
                f"{len(wanted)} connect rules (Override selectors) wanted, {len(free)} of "
                f"{CONNECT_RULES} free on this node"
            )
        new: dict[int, list[int]] = {}
        try:
            for (hook_id, tp_id, spec), i in zip(wanted, free, strict=False):
                flags = (CR_POST if spec.post else 0) | _CALL_FLAGS[spec.call]
                rule = ConnectRule(hook_id, tp_id, spec.selector, flags)
                rule.error = spec.error
                self._map.update(ct.c_uint32(i), rule)
                new.setdefault(hook_id, []).append(i)
        except OSError as e:
            self._clear(j for entries in new.values() for j in entries)
            raise ConnectRulesError(f"writing connect_rules: {e.strerror or e}") from e
        self.drop(hook_ids)
        self._by_hook.update(new)

    def drop(self, hook_ids: Iterable[int]) -> None:
        """Remove the rules of these hooks (best effort: a failure is logged)."""
        self._clear(i for hook_id in hook_ids for i in self._by_hook.pop(hook_id, []))

    def retain(self, hook_ids: set[int]) -> None:
        """Remove the rules of every other hook (an earlier enforcer's, unclaimed)."""
        self.drop([h for h in self._by_hook if h not in hook_ids])

    def _clear(self, indexes: Iterable[int]) -> None:
        for i in indexes:
            if self._map is None:
                return
            try:
                self._map.update(ct.c_uint32(i), ConnectRule())
            except OSError as e:
                log.warning("cannot clear a connect rule", index=i, reason=str(e))

    def close(self) -> None:
        if self._map is not None:
            self._map.close()


def connect_note(monitor: bool, calls: set[str], *, scoped: bool = False) -> str:
    """What `policy apply` says of a policy with connect rules (``calls``: connect,
    sendto)."""
    if monitor:
        note = f"monitor mode: {' and '.join(sorted(calls))} calls Override would deny are "
        note += "reported, not denied"
    else:
        parts = []
        if "connect" in calls:
            parts.append(
                "Override on connect: the sensor's cgroup connect4/connect6 programs refuse the "
                "connect before any packet leaves, and connect() fails with argError"
            )
        if "sendto" in calls:
            parts.append(
                "Override on sendto: the sensor's cgroup sendmsg4/sendmsg6 programs refuse a "
                "UDP datagram sent to a matching address (sendto, sendmsg, sendmmsg; not one "
                "on a connected socket, which connect's rules see) before it is built, and "
                "the call fails with argError; raw and ICMP ping sockets do not pass them: "
                "their sendto is neither denied nor reported"
            )
        note = "; ".join(parts) + (
            "; the event carries the sockaddr (the other args are not visible there)"
        )
    if scoped:
        note += (
            "; only calls made in the policy's scope count (the calling process's "
            "cgroup decides, not the socket's)"
        )
    return note
