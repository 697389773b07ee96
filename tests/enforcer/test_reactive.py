"""Reactive enforcement, end to end: a shell started by a shell in a container
(a process_exec the enricher publishes) makes the enforcer add that
container to a reactive policy's scope, and the next forbidden open there is
killed in the kernel; other containers and the host are untouched. The test
prints the latencies: triggering exec → block in the map (the enforcer's
measure, kernel clock), and → first kill (event times)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from schemas import codec, subjects
from schemas.events import parse_timestamp
from services.enforcer.reactions import ReactionsError, load_reactions
from tests.conftest import ServiceProcess
from tests.docker_fixtures import DockerDaemon
from tests.enforcer.enforcer_process import NODE, policies, running_enforcer
from tests.enforcer.test_scoping import (
    RUN_ID,
    SECRET,
    SIGKILLED,
    Containers,
    apply,
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
"""


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reactive-policies")


@pytest.fixture(scope="module")
def enforcer(
    sensor: ServiceProcess,
    module_nats_url: str,
    policy_dir: Path,
    docker_daemon: DockerDaemon,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("reactive")
    reactions = work / "reactions.yaml"
    reactions.write_text(REACTIONS)
    Path(SECRET).write_text("secret\n")
    try:
        with running_enforcer(
            module_nats_url,
            policy_dir,
            work,
            enricher=True,
            enricher_env={"OCELLUS_ENRICHER_DOCKER_SOCKET": str(docker_daemon.socket)},
            OCELLUS_ENFORCER_DOCKER_SOCKET=str(docker_daemon.socket),
            OCELLUS_ENFORCER_REACTIONS_FILE=str(reactions),
        ) as service:
            yield service
    finally:
        Path(SECRET).unlink()


@pytest.fixture
def containers(docker_daemon: DockerDaemon, busybox_image: str) -> Iterator[Containers]:
    made = Containers(docker_daemon)
    yield made
    for cid in list(made.ids):
        made.remove(cid)


@pytest.fixture
async def events(module_nats_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    async def on_event(msg: Any) -> None:
        got.append(codec.unpack(msg.data))

    nc = await nats.connect(module_nats_url)
    await nc.subscribe(subjects.events_all(NODE), cb=on_event)
    await nc.flush()
    yield got
    await nc.close()


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
    meta = "  annotations: {ocellus.io/scope: reactive}\n"
    text = scoped_policy("block-compromised", "", meta=meta)
    run = asyncio.to_thread  # blocking calls off the loop: the events arrive meanwhile
    row = await run(apply, policy_dir, module_nats_url, "block-compromised", text)
    assert row["scope"]["cgroups"] == 0  # type: ignore[index]
    a = await run(containers.start, f"react-a-{RUN_ID}")
    b = await run(containers.start, f"react-b-{RUN_ID}")
    assert await run(containers.cat, a) == 0  # nothing detected yet: not blocked

    # A shell starting busybox's shell by path ("; true": sh forks, not execs in place)
    trigger_cmd = "/bin/busybox sh -c 'echo triggered'; true"
    assert await run(containers.docker.run, "exec", a, "sh", "-c", trigger_cmd) == "triggered"
    started = time.monotonic()
    while (code := await run(containers.cat, a)) != SIGKILLED:
        assert code == 0, code
        assert time.monotonic() - started < 5.0, "the reaction did not block within 5 s"
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
            REACTIONS.replace("addContainerTo", "addContainer"),
            "spec.reactions[0].addContainerTo",
            id="missing-target",
        ),
    ],
)
def test_reactions_file_errors_name_the_yaml_path(tmp_path: Path, text: str, message: str) -> None:
    """Bad rules (and limits) are refused naming the path in the file."""
    path = tmp_path / "reactions.yaml"
    path.write_text(text)
    with pytest.raises(ReactionsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_reactions(path)
