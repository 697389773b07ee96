"""Reactive enforcement, end to end: a shell started by a shell in a container
(a process_exec the enricher publishes) makes the enforcer add that
container to a reactive policy's scope, and the next forbidden open there is
killed in the kernel; other containers and the host are untouched. A tool
started by a "web server" makes the enforcer add that tool's binary to a
policy's kill set (addBinaryTo): from then on that binary is killed when it
opens the secret, another one is not. The tests print the latencies:
triggering exec → block in the maps (the enforcer's measure, kernel clock),
and → first kill (event times). What reactions added outlives a SIGKILLed
enforcer: the next one finds it in the pinned maps."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import subjects
from schemas.events import parse_timestamp
from services.common.bpfsys import PinnedMap
from services.enforcer.reactions import ReactionsError, load_reactions
from services.sensor.hook_records import ScopeKey, policy_pin_dir
from tests.conftest import ServiceProcess, start_enricher
from tests.docker_fixtures import DockerDaemon
from tests.enforcer.enforcer_process import (
    NODE,
    cli,
    collected,
    policies,
    running_enforcer,
    start_enforcer,
    wait_until,
)
from tests.enforcer.test_scoping import (
    RUN_ID,
    SECRET,
    SIGKILLED,
    Containers,
    apply,
    delete,
    host_cat,
    scoped_policy,
)

pytestmark = [pytest.mark.bpf, pytest.mark.docker]

REACTIONS = """apiVersion: ocellus.io/v1alpha1
kind: Reactions
metadata: {name: shells}
spec:
  reactions:
  - name: shell-under-shell
    match:
      binary: {operator: Postfix, values: [/busybox]}
      parentBinary: {operator: Postfix, values: [/sh]}
    addContainerTo: block-compromised
  - name: tool-under-web-server
    match:
      binary: {operator: Postfix, values: [/ocellus-tool-RUN_ID]}
      parentBinary: {operator: Postfix, values: [/ocellus-websrv-RUN_ID]}
    addBinaryTo: kill-reacted-binaries
""".replace("RUN_ID", RUN_ID)
REACTIVE_META = "  annotations: {ocellus.io/scope: reactive}\n"
TRIGGER_CMD = "/bin/busybox sh -c 'echo triggered'; true"  # sh forks busybox's sh
BINARIES_META = "  annotations: {ocellus.io/binaries: reactive}\n"
PLACEHOLDER = "/nonexistent/ocellus-reacted-placeholder"  # In needs a value: matches nothing


def binaries_policy(
    meta: str = BINARIES_META, binaries: str = f"In, values: [{PLACEHOLDER}]"
) -> str:
    """Kill a process of the policy's binaries that opens the secret."""
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: kill-reacted-binaries
{meta}spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {{index: 1, type: string}}
    selectors:
    - matchBinaries:
      - {{operator: {binaries}}}
      matchArgs:
      - {{index: 1, operator: Equal, values: ["{SECRET}"]}}
      matchActions:
      - {{action: Sigkill}}
"""


class Tools:
    """Copies of cat (the tool the reaction adds, and another one) and of
    dash (the "web server" that starts the tool), at paths of this run."""

    def __init__(self, where: Path) -> None:
        self.tool = where / f"ocellus-tool-{RUN_ID}"
        self.other = where / f"ocellus-other-{RUN_ID}"
        self.websrv = where / f"ocellus-websrv-{RUN_ID}"
        cat, dash = shutil.which("cat"), shutil.which("dash")
        assert cat and dash
        for copy, original in ((self.tool, cat), (self.other, cat), (self.websrv, dash)):
            shutil.copy(original, copy)

    @staticmethod
    def status(*argv: str | Path) -> int:
        """A shell's exit status for ``argv`` (128 + signal when killed)."""
        done = subprocess.run([str(a) for a in argv], capture_output=True, timeout=30)
        return done.returncode if done.returncode >= 0 else 128 - done.returncode

    def read(self, binary: Path) -> int:
        """``binary SECRET`` (by its path, as the reaction saw it): its exit status."""
        return self.status(binary, SECRET)

    def trigger(self) -> None:
        """The "web server" runs the tool (forked: "; true"), which matches the rule."""
        assert self.status(self.websrv, "-c", f"{self.tool} /dev/null; true") == 0


@pytest.fixture
def tools(tmp_path: Path) -> Tools:
    return Tools(tmp_path)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reactive-policies")


@pytest.fixture
def enforcer_env(docker_daemon: DockerDaemon, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The reactions file and the Docker socket, as the enforcer's environment
    (and the secret on the host, for host_cat)."""
    reactions = tmp_path / "reactions.yaml"
    reactions.write_text(REACTIONS)
    Path(SECRET).write_text("secret\n")
    try:
        yield {
            "OCELLUS_ENFORCER_DOCKER_SOCKET": str(docker_daemon.socket),
            "OCELLUS_ENFORCER_REACTIONS_FILE": str(reactions),
        }
    finally:
        Path(SECRET).unlink()


@pytest.fixture
def enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    docker_daemon: DockerDaemon,
    enforcer_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[ServiceProcess]:
    """Per test: the restart test below runs enforcers of its own."""
    with running_enforcer(
        module_nats_url,
        policy_dir,
        tmp_path,
        enricher=True,
        enricher_env={"OCELLUS_ENRICHER_DOCKER_SOCKET": str(docker_daemon.socket)},
        **enforcer_env,
    ) as service:
        yield service


@pytest.fixture
def containers(docker_daemon: DockerDaemon, busybox_image: str) -> Iterator[Containers]:
    made = Containers(docker_daemon)
    yield made
    for cid in list(made.ids):
        made.remove(cid)


@pytest.fixture
async def events(module_nats_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    async with collected(module_nats_url, subjects.events_all(NODE)) as got:
        yield got


def _container_of(body: dict[str, Any]) -> str:
    return str(body["process"].get("pod", {}).get("container", {}).get("id", ""))


async def test_shell_under_shell_in_a_container_blocks_what_follows_there(
    enforcer: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    containers: Containers,
    events: list[dict[str, Any]],
) -> None:
    """Before the trigger the reactive policy applies nowhere; after `sh -c
    'busybox sh -c ...'` in container A, cat of the secret is killed in A, not
    in B, not on the host."""
    text = scoped_policy("block-compromised", "", meta=REACTIVE_META)
    run = asyncio.to_thread  # blocking calls off the loop: the events arrive meanwhile
    row = await run(apply, policy_dir, module_nats_url, "block-compromised", text)
    assert row["scope"]["cgroups"] == 0  # type: ignore[index]
    a = await run(containers.start, f"react-a-{RUN_ID}")
    b = await run(containers.start, f"react-b-{RUN_ID}")
    assert await run(containers.cat, a) == 0  # nothing detected yet: not blocked

    # A shell starting busybox's shell by path ("; true": sh forks, not execs in place)
    assert await run(containers.docker.run, "exec", a, "sh", "-c", TRIGGER_CMD) == "triggered"
    started = time.monotonic()
    while (code := await run(containers.cat, a)) != SIGKILLED:
        assert code == 0, code
        assert time.monotonic() - started < 20.0, "the reaction did not block within 20 s"
    assert await run(containers.cat, b) == 0
    assert await run(host_cat) == 0

    trigger = next(
        e
        for e in events
        if "process_exec" in e
        and e["process_exec"]["process"]["binary"].endswith("/busybox")
        and _container_of(e["process_exec"]).endswith(a)
    )
    deadline = time.monotonic() + 10
    while not (
        kills := [
            e
            for e in events
            if "process_kprobe" in e
            and e["process_kprobe"].get("action") == "KPROBE_ACTION_SIGKILL"
            and _container_of(e["process_kprobe"]).endswith(a)
        ]
    ):
        assert time.monotonic() < deadline, "no event of the kill"
        await asyncio.sleep(0.05)
    kill = kills[0]
    assert kill["process_kprobe"]["policy_name"] == "block-compromised"
    to_kill_ms = (parse_timestamp(kill["time"]) - parse_timestamp(trigger["time"])) / 1e6
    applied = [
        json.loads(line) for line in enforcer.log().splitlines() if '"reaction applied"' in line
    ]
    assert applied and applied[-1]["container"] == a[:12]
    print(
        f"\ntriggering exec -> block in the map: {applied[-1]['exec_to_map_ms']} ms; "
        f"-> first kill (next docker exec): {to_kill_ms:.1f} ms"
    )
    rows = await run(policies, module_nats_url)
    assert rows["block-compromised"]["scope"]["reacted"] == [a]

    # `ocellus policy release` undoes the reaction (by a short id, as docker prints it):
    # the policy applies in A no more; releasing again says there is nothing to release.
    out = await run(cli, module_nats_url, "release", "block-compromised", "--container", a[:12])
    assert out.returncode == 0 and a in out.stdout, out.stdout + out.stderr
    assert await run(containers.cat, a) == 0
    assert (await run(policies, module_nats_url))["block-compromised"]["scope"]["reacted"] == []
    out = await run(cli, module_nats_url, "release", "block-compromised", "--container", a[:12])
    assert out.returncode == 1 and "not a reacted container" in out.stderr, out.stderr


def _scope_entries() -> list[tuple[int, int]]:
    """(scope id, cgroup id) of every entry in the kernel's scope_cgroups."""
    pin = policy_pin_dir(Path(os.environ["OCELLUS_BPF_PIN_DIR"]), NODE) / "scope_cgroups"
    scope_map = PinnedMap(pin)
    try:
        return [(k.scope, k.cgroup_id) for k in scope_map.keys(ScopeKey)]
    finally:
        scope_map.close()


def _stop_enforcer(service: ServiceProcess, policy_dir: Path, nats_url: str) -> int:
    """As running_enforcer ends: no policy left in the maps (other modules'
    sensors load them), then a clean stop; its exit status."""
    for f in policy_dir.iterdir():
        f.unlink()
    if service.proc.poll() is None:
        wait_until(lambda: not policies(nats_url), "policies removed", 20)
    return service.stop()


async def test_reacted_container_stays_blocked_across_a_sigkilled_enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    docker_daemon: DockerDaemon,
    enforcer_env: dict[str, str],
    containers: Containers,
    tmp_path: Path,
) -> None:
    """A container a reaction added stays in the policy's scope when the
    enforcer is SIGKILLed and started again: every cat there is killed, before,
    during and after the restart and the new enforcer's first full resync; the
    policy still reports the container as reacted, and its entries leave the
    kernel's set when it is removed."""
    run, url, name = asyncio.to_thread, module_nats_url, "block-compromised"
    env = {**enforcer_env, "OCELLUS_ENFORCER_SCOPE_RESCAN_INTERVAL": "1"}
    socket = str(docker_daemon.socket)
    enricher = await run(
        start_enricher, url, tmp_path / "enricher.log", OCELLUS_ENRICHER_DOCKER_SOCKET=socket
    )
    enforcer = await run(start_enforcer, url, policy_dir, tmp_path / "first.log", **env)
    codes: list[int] = []  # of the cats in A while the enforcer is killed and replaced
    probing, prober = True, None
    try:
        text = scoped_policy(name, "", meta=REACTIVE_META)
        row = await run(apply, policy_dir, url, name, text)
        first_scope = row["scope"]["id"]  # type: ignore[index]
        a = await run(containers.start, f"survive-a-{RUN_ID}")
        b = await run(containers.start, f"survive-b-{RUN_ID}")
        assert await run(containers.docker.run, "exec", a, "sh", "-c", TRIGGER_CMD) == "triggered"
        await run(wait_until, lambda: containers.cat(a) == SIGKILLED, "the reaction", 20)
        assert await run(containers.cat, b) == 0
        # A change of the policy moves its set to another scope id: the restart
        # must find the reaction there, not count on the ids of a fresh start.
        (policy_dir / f"{name}.yaml").write_text(text + "# changed\n")
        await run(
            wait_until,
            lambda: policies(url)[name]["scope"]["id"] != first_scope,
            "the changed policy's new set",
            20,
        )

        async def probe() -> None:
            while probing:
                codes.append(await run(containers.cat, a))
                await asyncio.sleep(0.1)

        prober = asyncio.create_task(probe())
        enforcer.proc.kill()  # SIGKILL: nothing saved on the way out
        enforcer.proc.wait()
        enforcer.stop()
        restarted_ns = time.time_ns()
        async with collected(url, subjects.status("enforcer", NODE)) as beats:
            enforcer = await run(start_enforcer, url, policy_dir, tmp_path / "second.log", **env)
            assert (await run(policies, url))[name]["scope"]["reacted"] == [a]
            assert await run(containers.cat, a) == SIGKILLED

            def resynced() -> dict[str, Any] | None:
                return next(
                    (
                        beat
                        for beat in beats
                        if beat["time"] > restarted_ns
                        and beat.get("scopes", {}).get("reconciles", 0) >= 1
                    ),
                    None,
                )

            beat = await run(wait_until, resynced, "the first full scope resync", 30)
        probing = False
        await prober
        assert codes and set(codes) == {SIGKILLED}, codes
        assert await run(containers.cat, a) == SIGKILLED
        assert await run(containers.cat, b) == 0
        row = next(p for p in beat["policies"] if p["name"] == name)
        assert row["scope"]["reacted"] == [a]
        assert (await run(policies, url))[name]["scope"]["reacted"] == [a]

        # The container goes: so do its entries, in the kernel too.
        await run(containers.remove, a)
        await run(
            wait_until,
            lambda: policies(url)[name]["scope"]["reacted"] == [],
            "the removed container out of the scope",
            20,
        )
        assert await run(_scope_entries) == []
    finally:
        probing = False
        if prober is not None:
            await prober
        stopped = await run(_stop_enforcer, enforcer, policy_dir, url)
        assert await run(enricher.stop) == 0, enricher.log()
    assert stopped == 0, enforcer.log()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            REACTIONS.replace("Postfix, values: [/sh]", "Suffix, values: [/sh]"),
            "spec.reactions[0].match.parentBinary.operator",
            id="operator",
        ),
        pytest.param(
            REACTIONS.replace("values: [/busybox]", "values: [" + ", ".join(["/x"] * 65) + "]"),
            "spec.reactions[0].match.binary.values",
            id="too-many-values",
        ),
        pytest.param(
            REACTIONS.replace("    addContainerTo: block-compromised\n", ""),
            "spec.reactions[0]: Value error, give addContainerTo, addBinaryTo or both",
            id="missing-target",
        ),
        pytest.param(
            REACTIONS.replace("addBinaryTo: kill-reacted-binaries", "addBinaryTo: ''"),
            "spec.reactions[1].addBinaryTo: String should have at least 1 character",
            id="empty-binary-target",
        ),
    ],
)
def test_reactions_file_errors_name_the_yaml_path(tmp_path: Path, text: str, message: str) -> None:
    """Bad rules (and limits) are refused naming the path in the file."""
    path = tmp_path / "reactions.yaml"
    path.write_text(text)
    with pytest.raises(ReactionsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_reactions(path)


async def test_reaction_adds_the_tool_binary_to_the_kill_set(
    enforcer: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    tools: Tools,
    events: list[dict[str, Any]],
) -> None:
    """Before the trigger the tool reads the secret; after a "web server" ran
    it, the tool's binary is in the policy's matchBinaries In set: the same
    read by that binary is killed, by another copy of cat it is not, and the
    policy lists the binary as reacted. A second trigger finds it there: it is
    counted apart, not as a binary added, and times nothing."""
    run, url, name = asyncio.to_thread, module_nats_url, "kill-reacted-binaries"
    row = await run(apply, policy_dir, url, name, binaries_policy())
    assert row["binaries"] == {"reacted": []}
    assert await run(tools.read, tools.tool) == 0  # not started by the web server: no reaction
    assert await run(tools.read, tools.other) == 0

    await run(tools.trigger)
    started = time.monotonic()
    while (code := await run(tools.read, tools.tool)) != SIGKILLED:
        assert code == 0, code
        assert time.monotonic() - started < 20.0, "the reaction did not block within 20 s"
    assert await run(tools.read, tools.other) == 0
    assert await run(host_cat) == 0

    trigger = next(
        e
        for e in events
        if "process_exec" in e
        and e["process_exec"]["process"]["binary"] == str(tools.tool)
        and e["process_exec"]["parent"]["binary"] == str(tools.websrv)
    )
    deadline = time.monotonic() + 10
    while not (
        kills := [
            e
            for e in events
            if "process_kprobe" in e
            and e["process_kprobe"].get("action") == "KPROBE_ACTION_SIGKILL"
            and e["process_kprobe"]["process"]["binary"] == str(tools.tool)
        ]
    ):
        assert time.monotonic() < deadline, "no event of the kill"
        await asyncio.sleep(0.05)
    assert kills[0]["process_kprobe"]["policy_name"] == name
    to_kill_ms = (parse_timestamp(kills[0]["time"]) - parse_timestamp(trigger["time"])) / 1e6
    applied = [
        json.loads(line)
        for line in enforcer.log().splitlines()
        if '"reaction applied"' in line and '"added_binary"' in line
    ]
    assert [a["added_binary"] for a in applied] == [str(tools.tool)]
    print(
        f"\ntriggering exec -> binary in the kill set: {applied[0]['exec_to_map_ms']} ms; "
        f"-> first kill (next run of the tool): {to_kill_ms:.1f} ms"
    )
    rows = await run(policies, url)
    assert rows[name]["binaries"] == {"reacted": [str(tools.tool)]}
    assert rows[name]["hooks"][0]["id"] == row["hooks"][0]["id"]  # type: ignore[index]

    async with collected(url, subjects.status("enforcer", NODE)) as beats:
        await run(tools.trigger)  # the same binary again: already in the set

        def again() -> dict[str, Any] | None:
            return next(
                (
                    b["reactions"]
                    for b in beats
                    if b.get("reactions", {}).get("binary_already_reacted", 0) >= 1
                ),
                None,
            )

        reactions = await run(wait_until, again, "binary_already_reacted counted", 20)
    assert reactions["binaries_applied"] == 1, reactions
    # one latency sample, the first reaction's: the second wrote nothing to time
    assert reactions["binary_exec_to_map_ms_median"] == applied[0]["exec_to_map_ms"], reactions
    assert sum('"added_binary"' in line for line in enforcer.log().splitlines()) == 1
    assert (await run(policies, url))[name]["binaries"] == {"reacted": [str(tools.tool)]}

    # `ocellus policy release` takes it out again, values only (the same hook); the
    # policy's own value is not a reaction's to release.
    out = await run(cli, url, "release", name, "--binary", str(tools.tool))
    assert out.returncode == 0, out.stdout + out.stderr
    assert await run(tools.read, tools.tool) == 0
    rows = await run(policies, url)
    assert rows[name]["binaries"] == {"reacted": []}
    assert rows[name]["hooks"][0]["id"] == row["hooks"][0]["id"]  # type: ignore[index]
    out = await run(cli, url, "release", name, "--binary", PLACEHOLDER)
    assert out.returncode == 1 and "not a reacted binary" in out.stderr, out.stderr


async def test_binary_reaction_needs_a_policy_that_opts_in(
    enforcer: ServiceProcess, module_nats_url: str, policy_dir: Path, tools: Tools
) -> None:
    """ocellus.io/binaries must be `reactive` and the policy must have a
    matchBinaries In set, or it is refused naming the annotation; a reaction
    on a policy without the annotation adds nothing and is counted."""
    run, url, name = asyncio.to_thread, module_nats_url, "kill-reacted-binaries"
    annotation = r"metadata\.annotations\.ocellus\.io/binaries"
    for text, why in (
        (binaries_policy("  annotations: {ocellus.io/binaries: yes-please}\n"), "must be"),
        (binaries_policy(binaries=f"NotIn, values: [{PLACEHOLDER}]"), "operator In"),
    ):
        (policy_dir / f"{name}.yaml").write_text(text)

        def refused(why: str = why) -> str | None:
            row = policies(url).get(name)
            error = row.get("error") if row and row["state"] == "error" else None
            return error if error and why in error else None

        error = await run(wait_until, refused, f"the refusal ({why})", 20)
        assert re.search(f"{annotation}: .*{why}", error), error
    await run(delete, policy_dir, url, name)  # the refused text's row goes with it

    await run(apply, policy_dir, url, name, binaries_policy(meta=""))
    async with collected(url, subjects.status("enforcer", NODE)) as beats:
        await run(tools.trigger)

        def counted() -> bool:
            return any(
                b.get("reactions", {}).get("reaction_without_binaries", 0) >= 1 for b in beats
            )

        await run(wait_until, counted, "reaction_without_binaries counted", 20)
    assert await run(tools.read, tools.tool) == 0
    assert "binaries" not in (await run(policies, url))[name]


async def test_reacted_binary_stays_killed_across_a_sigkilled_enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    docker_daemon: DockerDaemon,
    enforcer_env: dict[str, str],
    tools: Tools,
    tmp_path: Path,
) -> None:
    """A binary a reaction added stays in the policy's kill set when the
    enforcer is SIGKILLed and started again: every read by it is killed,
    during the restart and after, the new enforcer lists it as reacted, and a
    change of the policy keeps it; another binary is never killed."""
    run, url, name = asyncio.to_thread, module_nats_url, "kill-reacted-binaries"
    socket = str(docker_daemon.socket)
    enricher = await run(
        start_enricher, url, tmp_path / "enricher.log", OCELLUS_ENRICHER_DOCKER_SOCKET=socket
    )
    enforcer = await run(start_enforcer, url, policy_dir, tmp_path / "first.log", **enforcer_env)
    codes: list[int] = []  # of the tool's reads while the enforcer is killed and replaced
    probing, prober = True, None
    try:
        await run(apply, policy_dir, url, name, binaries_policy())
        assert await run(tools.read, tools.tool) == 0
        await run(tools.trigger)
        await run(wait_until, lambda: tools.read(tools.tool) == SIGKILLED, "the reaction", 20)

        async def probe() -> None:
            while probing:
                codes.append(await run(tools.read, tools.tool))
                await asyncio.sleep(0.1)

        prober = asyncio.create_task(probe())
        enforcer.proc.kill()  # SIGKILL: nothing saved on the way out
        enforcer.proc.wait()
        enforcer.stop()
        enforcer = await run(
            start_enforcer, url, policy_dir, tmp_path / "second.log", **enforcer_env
        )
        row = (await run(policies, url))[name]
        assert row["binaries"] == {"reacted": [str(tools.tool)]}
        assert await run(tools.read, tools.tool) == SIGKILLED
        # A change of the policy (its static values too) carries the reaction over.
        text = binaries_policy(binaries=f"In, values: [{PLACEHOLDER}, {PLACEHOLDER}-2]")
        (policy_dir / f"{name}.yaml").write_text(text)
        await run(
            wait_until,
            lambda: policies(url)[name]["revision"] != row["revision"],
            "the changed policy",
            20,
        )
        probing = False
        await prober
        assert codes and set(codes) == {SIGKILLED}, codes
        assert await run(tools.read, tools.tool) == SIGKILLED
        assert await run(tools.read, tools.other) == 0
        assert (await run(policies, url))[name]["binaries"] == {"reacted": [str(tools.tool)]}
    finally:
        probing = False
        if prober is not None:
            await prober
        stopped = await run(_stop_enforcer, enforcer, policy_dir, url)
        assert await run(enricher.stop) == 0, enricher.log()
    assert stopped == 0, enforcer.log()


TOOL = "/usr/local/bin/tool"


def _two_kill_sets() -> Any:
    """binaries_policy with two selectors: the first names TOOL itself, the second
    does not; compiled."""
    from services.enforcer.compiled import compile_policy
    from services.sensor import capabilities

    text = binaries_policy(binaries=f"In, values: [{PLACEHOLDER}, {TOOL}]").replace(
        "      - {action: Sigkill}\n",
        "      - {action: Sigkill}\n    - matchBinaries:\n"
        f"      - {{operator: In, values: [{PLACEHOLDER}]}}\n"
        "      matchActions:\n      - {action: Sigkill}\n",
    )
    return compile_policy(text, capabilities.probe())


def test_release_narrows_only_the_sets_that_do_not_name_the_binary() -> None:
    """A reacted binary joined every In set; released, it leaves those whose selector
    does not name it, and stays where one names it itself."""
    from services.enforcer.reacted_binaries import narrowed, widened

    own = _two_kill_sets()

    def sets(compiled: Any) -> list[frozenset[bytes]]:
        return [s.binary.values for s in compiled.hooks[0].slots]

    assert sets(own) == [{PLACEHOLDER.encode(), TOOL.encode()}, {PLACEHOLDER.encode()}]
    reacted = widened(own, [TOOL])
    assert all(TOOL.encode() in values for values in sets(reacted))
    assert sets(narrowed(reacted, own, TOOL)) == sets(own)


def test_a_restart_tells_reacted_paths_per_selector() -> None:
    """After a restart, the adopted sets say what reactions had added, selector by
    selector: a path one selector names itself is still a reaction's in the other;
    a set whose selector the text lost keeps what the text does not name."""
    from services.enforcer.reacted_binaries import _reacted_in

    both = {PLACEHOLDER.encode(), TOOL.encode()}
    earlier = {
        ("spec.kprobes[0]", 0): set(both),
        ("spec.kprobes[0]", 1): set(both),
        ("spec.kprobes[0]", 7): {PLACEHOLDER.encode(), b"/opt/gone"},
    }
    assert _reacted_in(earlier, _two_kill_sets()) == {TOOL.encode(), b"/opt/gone"}
    assert _reacted_in({("spec.kprobes[0]", 0): set(both)}, _two_kill_sets()) == set()
