"""Export filters with Tetragon's keys and semantics: AND within a filter, OR
across the allow list, deny drops; Kubernetes label selectors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.exporter.filters import ExportFilter, FilterSet
from services.exporter.labels import parse_selector
from tests.exporter.exporter_helpers import make_event

WEB = make_event(
    1,
    binary="/usr/bin/curl",
    arguments="-s http://10.0.0.1/ --token=abc",
    namespace="shop",
    pod_name="web-7d9f",
    labels={"app": "web", "tier": "front"},
    parent_binary="/bin/bash",
    parent_pid=77,
    in_init_tree=True,
)
HOST = make_event(2, binary="/usr/sbin/cron", arguments="-f", parent_binary="/sbin/init")
EXIT = make_event(3, kind="process_exit", binary="/usr/bin/curl", namespace="shop")
KPROBE: dict[str, Any] = {
    "process_kprobe": {
        "process": {"pid": 5, "binary": "/bin/cat", "docker": "551e161c47d8ff0eb665438a7bcd5b4"},
        "parent": {"pid": 4, "binary": "/bin/sh"},
        "ancestors": [{"pid": 3}, {"pid": 1}],
        "policy_name": "file-monitoring",
        "function_name": "__x64_sys_openat",
    },
    "node_name": "n",
    "time": "2025-01-01T00:00:00Z",
}
WEB["process_exec"]["process"]["docker"] = "abc123def"
WEB["process_exec"]["process"]["pod"]["container"] = {"id": "containerd://abc123def456"}


@pytest.mark.parametrize(
    ("spec", "event", "expected"),
    [
        pytest.param({}, WEB, True, id="empty-filter-matches-all"),
        pytest.param({"event_set": ["PROCESS_EXEC"]}, WEB, True, id="event_set-enum-name"),
        pytest.param({"event_set": ["process_exit"]}, WEB, False, id="event_set-other-kind"),
        pytest.param({"event_set": ["PROCESS_EXIT"]}, EXIT, True, id="event_set-exit"),
        pytest.param({"binary_regex": ["curl$"]}, WEB, True, id="binary_regex"),
        pytest.param({"binary_regex": ["^curl"]}, WEB, False, id="binary_regex-anchored"),
        pytest.param({"binary_regex": ["wget", "curl"]}, WEB, True, id="binary_regex-any-value"),
        pytest.param({"parent_binary_regex": ["bash"]}, WEB, True, id="parent_binary_regex"),
        pytest.param({"parent_binary_regex": ["bash"]}, HOST, False, id="parent-other"),
        pytest.param({"namespace": ["shop"]}, WEB, True, id="namespace"),
        pytest.param({"namespace": ["kube-system"]}, WEB, False, id="namespace-other"),
        pytest.param({"namespace": [""]}, HOST, True, id="namespace-empty-is-host"),
        pytest.param({"namespace": [""]}, WEB, False, id="namespace-empty-not-pod"),
        pytest.param({"namespace": "shop"}, WEB, True, id="namespace-scalar"),
        pytest.param({"pod_regex": ["^web-"]}, WEB, True, id="pod_regex"),
        pytest.param({"pod_regex": ["^web-"]}, HOST, False, id="pod_regex-no-pod"),
        pytest.param({"container_id": ["^abc123"]}, WEB, True, id="container_id-docker"),
        pytest.param({"container_id": ["def456$"]}, WEB, True, id="container_id-full-id"),
        pytest.param({"container_id": ["^551e"]}, KPROBE, True, id="container_id-kprobe"),
        pytest.param({"container_id": ["."]}, HOST, False, id="container_id-host"),
        pytest.param({"labels": ["app=web"]}, WEB, True, id="labels-equal"),
        pytest.param({"labels": ["app!=web"]}, WEB, False, id="labels-not-equal"),
        pytest.param({"labels": ["app in (db,web)"]}, WEB, True, id="labels-in"),
        pytest.param({"labels": ["app=db", "tier=front"]}, WEB, True, id="labels-any-selector"),
        pytest.param({"labels": ["app=web,tier=back"]}, WEB, False, id="labels-all-requirements"),
        pytest.param({"labels": ["app"]}, HOST, False, id="labels-no-pod"),
        pytest.param({"policy_names": ["file-monitoring"]}, KPROBE, True, id="policy_names"),
        pytest.param({"policy_names": ["file-monitoring"]}, WEB, False, id="policy_names-exec"),
        pytest.param({"pid": [10_001]}, WEB, True, id="pid"),
        pytest.param({"pid": [77]}, WEB, False, id="pid-not-parent"),
        pytest.param({"pid_set": [77]}, WEB, True, id="pid_set-parent"),
        pytest.param({"pid_set": [1]}, KPROBE, True, id="pid_set-ancestor"),
        pytest.param({"pid_set": [2]}, KPROBE, False, id="pid_set-unrelated"),
        pytest.param({"arguments_regex": [r"--token=\S+"]}, WEB, True, id="arguments_regex"),
        pytest.param({"arguments_regex": ["^-f$"]}, WEB, False, id="arguments_regex-other"),
        pytest.param({"in_init_tree": True}, WEB, True, id="in_init_tree"),
        pytest.param({"in_init_tree": False}, HOST, True, id="in_init_tree-absent-is-false"),
        pytest.param({"in_init_tree": True}, HOST, False, id="in_init_tree-absent-not-true"),
        pytest.param(
            {"namespace": ["shop"], "binary_regex": ["curl"], "labels": ["tier=front"]},
            WEB,
            True,
            id="and-all-match",
        ),
        pytest.param(
            {"namespace": ["shop"], "binary_regex": ["wget"]}, WEB, False, id="and-one-fails"
        ),
    ],
)
def test_filter_matches_like_tetragon(spec: dict[str, Any], event: Any, expected: bool) -> None:
    """Each key, and all keys of one filter together, match as Tetragon's filters do."""
    assert ExportFilter.model_validate(spec).compile()(event) is expected


@pytest.mark.parametrize(
    ("allow", "deny", "expected"),
    [
        pytest.param([], [], [True, True, True], id="no-lists-pass-everything"),
        pytest.param([{"namespace": ["shop"]}], [], [True, False, True], id="allow-one"),
        pytest.param(
            [{"namespace": ["shop"]}, {"binary_regex": ["cron"]}],
            [],
            [True, True, True],
            id="allow-list-is-or",
        ),
        pytest.param([], [{"binary_regex": ["curl"]}], [False, True, False], id="deny-drops"),
        pytest.param(
            [{"namespace": ["shop"]}],
            [{"event_set": ["PROCESS_EXIT"]}],
            [True, False, False],
            id="deny-wins-over-allow",
        ),
    ],
)
def test_filter_set_allow_is_or_and_deny_drops(
    allow: list[dict[str, Any]], deny: list[dict[str, Any]], expected: list[bool]
) -> None:
    """An event passes if it matches any allow filter (when there are any) and no deny filter."""
    filters = FilterSet(
        [ExportFilter.model_validate(f) for f in allow],
        [ExportFilter.model_validate(f) for f in deny],
    )
    assert [filters.admits(e) for e in (WEB, HOST, EXIT)] == expected


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param("app=web", {"app": "web"}, True, id="equal"),
        pytest.param("app==web", {"app": "web"}, True, id="double-equal"),
        pytest.param("app!=web", {}, True, id="not-equal-absent"),
        pytest.param("app in (a, web)", {"app": "web"}, True, id="in-spaces"),
        pytest.param("app notin (a,b)", {}, True, id="notin-absent"),
        pytest.param("app notin (a,web)", {"app": "web"}, False, id="notin-present"),
        pytest.param("app", {"app": ""}, True, id="exists"),
        pytest.param("!app", {"app": "x"}, False, id="not-exists"),
        pytest.param(
            "app.kubernetes.io/name=x,!debug",
            {"app.kubernetes.io/name": "x"},
            True,
            id="prefixed-key-and-not-exists",
        ),
        pytest.param("", {"x": "y"}, True, id="empty-selects-everything"),
    ],
)
def test_label_selector_semantics(selector: str, labels: dict[str, str], expected: bool) -> None:
    """Kubernetes selector syntax: =, ==, !=, in, notin, exists, !exists, comma is AND."""
    assert parse_selector(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"binary_regex": ["("]}, "binary_regex", id="bad-regex"),
        pytest.param({"labels": ["app in ()"]}, "bad value list", id="bad-selector"),
        pytest.param({"labels": ["a=b=c"]}, "cannot parse", id="unparsable-selector"),
        pytest.param({"event_set": ["PROCESS_FORK"]}, "unknown event types", id="bad-event"),
        pytest.param({"binary": ["x"]}, "Extra inputs", id="unknown-key"),
    ],
)
def test_bad_filters_are_refused(spec: dict[str, Any], message: str) -> None:
    """Invalid regexes, selectors, event types and unknown keys are validation errors."""
    with pytest.raises(ValidationError, match=message):
        ExportFilter.model_validate(spec)
