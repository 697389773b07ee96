"""Field masks (Tetragon's field filters) and argument redaction."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from services.exporter.masks import FieldMask, Redactor, RedactRule
from tests.exporter.exporter_helpers import make_event

EXEC = make_event(
    1, arguments="-u admin --password=hunter2 -v", namespace="shop", labels={"a": "1"}
)
EXEC["process_exec"]["ancestors"] = [
    {"pid": 3, "binary": "/bin/sh", "arguments": "-c run --password=p3"},
    {"pid": 2, "binary": "/sbin/init"},
]
EXIT = make_event(2, kind="process_exit", arguments="--password=hunter2")


def masked(event: dict[str, Any], include: list[str], exclude: list[str]) -> dict[str, Any]:
    copied = copy.deepcopy(event)
    FieldMask(include, exclude).apply(copied)
    return copied


BODY = EXEC["process_exec"]
PROC = BODY["process"]
WITHOUT_ARGS = {k: v for k, v in PROC.items() if k != "arguments"}
ANCESTORS_NO_ARGS = [{"pid": 3, "binary": "/bin/sh"}, {"pid": 2, "binary": "/sbin/init"}]
POD_NO_LABELS = {"namespace": "shop", "name": "web-0"}


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        pytest.param(
            ["process.binary", "process.pid"],
            [],
            {"process": {"binary": "/bin/true", "pid": 10_001}},
            id="include-keeps-only-paths",
        ),
        pytest.param(["process"], [], {"process": PROC}, id="include-whole-message"),
        pytest.param(
            [],
            ["process.arguments", "parent"],
            {"process": WITHOUT_ARGS, "ancestors": BODY["ancestors"]},
            id="exclude-removes-paths",
        ),
        pytest.param(
            ["process_exec.process.arguments"],
            [],
            {"process": {"arguments": PROC["arguments"]}},
            id="kind-qualified-include",
        ),
        pytest.param(
            ["ancestors"],
            ["ancestors.arguments"],
            {"ancestors": ANCESTORS_NO_ARGS},
            id="path-into-a-list",
        ),
        pytest.param(
            ["process.pod.pod_labels"],
            ["process.pod.pod_labels.a"],
            {"process": {"pod": {"pod_labels": {}}}},
            id="path-into-a-map",
        ),
        pytest.param(
            ["process.pod"],
            ["process.pod.pod_labels"],
            {"process": {"pod": POD_NO_LABELS}},
            id="exclude-wins-over-include",
        ),
    ],
)
def test_field_mask_applies_like_tetragon_field_filters(
    include: list[str], exclude: list[str], expected: dict[str, Any]
) -> None:
    """Include keeps only the listed paths, exclude removes them, paths are relative to the kind."""
    event = masked(EXEC, include, exclude)
    assert event["process_exec"] == expected
    assert (event["node_name"], event["time"]) == (EXEC["node_name"], EXEC["time"])  # always kept


def test_kind_qualified_paths_leave_other_kinds_alone() -> None:
    """`process_exec.…` masks touch exec events only."""
    mask = ["process_exec.process.binary"]
    assert masked(EXIT, mask, []) == EXIT
    assert masked(EXIT, [], ["process_exec.process.arguments"]) == EXIT
    assert masked(EXIT, ["process.pid"], [])["process_exit"] == {"process": {"pid": 10_002}}


@pytest.mark.parametrize(
    ("rule", "arguments", "expected"),
    [
        pytest.param(
            {"regex": r"--password=(\S+)"},
            "-u admin --password=hunter2 -v",
            "-u admin --password=***** -v",
            id="capture-group",
        ),
        pytest.param(
            {"regex": r"--password=\S+", "replacement": "--password=*****"},
            "--password=a --password=b",
            "--password=***** --password=*****",
            id="replacement-every-match",
        ),
        pytest.param(
            {"regex": r"(\w+):(\w+)@"},
            "https://user:pw@host",
            "https://*****:*****@host",
            id="several-groups",
        ),
        pytest.param(
            {"regex": r"((a)b)c"},
            "abc",
            "*****c",
            id="nested-groups-once",
        ),
        pytest.param(
            {"regex": r"(?:-p|--pass)[= ]?(\S+)"},
            "mysql -p s3cret",
            "mysql -p *****",
            id="non-capturing-prefix",
        ),
        pytest.param(
            {"regex": r"--password=(\S+)"},
            "-v",
            "-v",
            id="no-match-unchanged",
        ),
    ],
)
def test_redaction_rules(rule: dict[str, Any], arguments: str, expected: str) -> None:
    """Capture groups become *****; a replacement replaces whole matches."""
    assert RedactRule.model_validate(rule).redact(arguments) == expected


def test_redaction_covers_process_parent_and_ancestors() -> None:
    """Every process in the event has its arguments redacted; binary_regex narrows."""
    event = copy.deepcopy(EXEC)
    event["process_exec"]["parent"]["arguments"] = "--password=parent"
    rules = [RedactRule.model_validate({"regex": r"--password=(\S+)"})]
    Redactor(rules).apply(event)
    body = event["process_exec"]
    assert body["process"]["arguments"] == "-u admin --password=***** -v"
    assert body["parent"]["arguments"] == "--password=*****"
    assert body["ancestors"][0]["arguments"] == "-c run --password=*****"

    only_sh = RedactRule.model_validate({"regex": r"--password=(\S+)", "binary_regex": ["/sh$"]})
    event = copy.deepcopy(EXEC)
    Redactor([only_sh]).apply(event)
    assert "hunter2" in event["process_exec"]["process"]["arguments"]
    assert event["process_exec"]["ancestors"][0]["arguments"] == "-c run --password=*****"


def test_redaction_rule_that_cannot_redact_is_refused() -> None:
    """A regex with no capture group and no replacement would redact nothing: refused."""
    with pytest.raises(ValidationError, match="no capture group"):
        RedactRule.model_validate({"regex": r"--password=\S+"})
