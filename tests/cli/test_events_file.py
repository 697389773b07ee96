"""`ocellus events --file`: Tetragon JSON lines in, filtered lines out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

OCELLUS = str(Path(sys.executable).parent / "ocellus")
T = "2026-11-28T10:00:00Z"


def _exec(binary: str, pod: dict | None = None, node: str = "n1") -> dict:
    process = {"exec_id": "aWQ=", "pid": 7, "binary": binary, "arguments": "-x"}
    if pod is not None:
        process["pod"] = pod
    return {"process_exec": {"process": process}, "node_name": node, "time": T}


LINES = [
    _exec("/bin/ls"),
    _exec(
        "/bin/sh",
        {
            "namespace": "shop",
            "name": "web-1",
            "container": {"id": "docker://abc123", "name": "app"},
        },
    ),
    _exec("/usr/bin/curl", {"container": {"id": "docker://def456", "name": "redis"}}),
    {
        "process_exit": {"process": {"pid": 7, "binary": "/bin/ls"}, "status": 2},
        "node_name": "n1",
        "time": T,
    },
]


def run_events(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OCELLUS, "events", "--file", "-", *args],
        input=stdin,
        text=True,
        capture_output=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            [],
            [
                "🚀 process n1 /bin/ls -x",
                "🚀 process shop/web-1 /bin/sh -x",
                "🚀 process redis /usr/bin/curl -x",
                "💥 exit    n1 /bin/ls 2",
            ],
            id="all",
        ),
        pytest.param(["--namespace", "shop"], ["🚀 process shop/web-1 /bin/sh -x"], id="namespace"),
        pytest.param(["--pod", "^web-"], ["🚀 process shop/web-1 /bin/sh -x"], id="pod-regex"),
        pytest.param(
            ["--container", "redis"], ["🚀 process redis /usr/bin/curl -x"], id="container-name"
        ),
        pytest.param(
            ["--container", "abc"], ["🚀 process shop/web-1 /bin/sh -x"], id="container-id"
        ),
        pytest.param(
            ["--binary", "ls$", "--type", "process_exit"],
            ["💥 exit    n1 /bin/ls 2"],
            id="binary-and-type",
        ),
    ],
)
def test_events_file_filters(args: list[str], expected: list[str]) -> None:
    """Filters select by namespace, pod, container, binary and type; all must hold."""
    done = run_events(*args, stdin="\n".join(json.dumps(x) for x in LINES) + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected


def test_events_file_json_round_trips() -> None:
    """-o json prints each selected event as the same Tetragon JSON it read."""
    done = run_events("-o", "json", stdin="\n".join(json.dumps(x) for x in LINES))
    assert [json.loads(x) for x in done.stdout.splitlines()] == LINES


def test_events_file_reports_bad_lines() -> None:
    """A line that is not an event is skipped, said on stderr, and fails the run."""
    done = run_events(stdin=json.dumps(LINES[0]) + "\nnot json\n" + json.dumps({"x": 1}) + "\n")
    assert done.stdout.splitlines() == ["🚀 process n1 /bin/ls -x"]
    assert done.returncode == 1
    assert "line" in done.stderr
