"""How a Tetragon event maps onto OpenTelemetry: the resource (one per node), attributes
named by the semantic conventions, severity. Trace and span ids: ``otlp_ids``.

Attribute names were checked against opentelemetry-semantic-conventions 0.66b2 (semantic
conventions 1.44); they are spelled here rather than imported from its ``_incubating``
module. Ocellus-only attributes are under ``ocellus.``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource

from schemas.events import parse_timestamp

Attributes = dict[str, Any]  # values: str, int, bool or lists of one of them

# Keys of an event object beside its one event kind (Tetragon's GetEventsResponse).
_ENVELOPE_KEYS = frozenset({"node_name", "time", "cluster_name", "node_labels", "aggregation_info"})
# Policy hits: span events on the process's span; WARN when the action enforces.
POLICY_KINDS = frozenset({"process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm"})
ENFORCING_ACTIONS = frozenset(
    {"KPROBE_ACTION_SIGKILL", "KPROBE_ACTION_SIGNAL", "KPROBE_ACTION_OVERRIDE"}
)
# Tetragon's pod.workload_kind -> the semconv attribute naming that workload.
_WORKLOAD_ATTRIBUTES = {
    "Deployment": "k8s.deployment.name",
    "StatefulSet": "k8s.statefulset.name",
    "DaemonSet": "k8s.daemonset.name",
    "ReplicaSet": "k8s.replicaset.name",
    "Job": "k8s.job.name",
    "CronJob": "k8s.cronjob.name",
}
INSTRUMENTATION_SCOPE = "ocellus.exporter"


def event_kind(event: Mapping[str, Any]) -> str | None:
    """The event kind that is set ("process_exec", ...), or None."""
    for key, value in event.items():
        if key not in _ENVELOPE_KEYS and isinstance(value, Mapping):
            return key
    return None


def timestamp_ns(value: Any) -> int | None:
    """An RFC 3339 string (protobuf JSON) as nanoseconds; None when absent or malformed."""
    if not isinstance(value, str):
        return None
    try:
        ns: int = parse_timestamp(value)
    except ValueError:
        return None
    return ns


def container_of(process: Mapping[str, Any]) -> tuple[str, str]:
    """(runtime, container id) of a process; ("", "") on the host."""
    container = (process.get("pod") or {}).get("container") or {}
    runtime, sep, cid = str(container.get("id") or "").rpartition("://")
    if cid:
        return (runtime if sep else ""), cid
    # Only the truncated id of Tetragon's BPF side; semconv allows an abbreviated id.
    return "", str(process.get("docker") or "")


class ResourceCache:
    """One Resource per node (host.name), built once: the encoders group records by it."""

    def __init__(self, service_name: str, extra: Mapping[str, str], max_nodes: int = 4096) -> None:
        self._base: Attributes = {**extra, "service.name": service_name}
        self._by_node: dict[tuple[str, str], Resource] = {}
        self._max_nodes = max_nodes

    def for_event(self, event: Mapping[str, Any]) -> Resource:
        key = (str(event.get("node_name") or ""), str(event.get("cluster_name") or ""))
        resource = self._by_node.get(key)
        if resource is None:
            if len(self._by_node) >= self._max_nodes:  # a bound, not an expected case
                self._by_node.clear()
            attributes = dict(self._base)
            if key[0]:
                attributes["host.name"] = key[0]
            if key[1]:
                attributes["k8s.cluster.name"] = key[1]
            resource = self._by_node[key] = Resource(attributes)
        return resource


# One word-part of a shell-quoted string as shlex.quote writes it: bare characters,
# '...' and "..." without backslashes; or the blanks between words.
_SHELL_PART = re.compile(r"""([^ \t\r\n'"\\]+)|'([^']*)'|"([^"\\]*)"|([ \t\r\n]+)""")


def _split_shell_words(text: str) -> list[str] | None:
    """shlex.split for what shlex.quote produces, ~10x faster; None for anything else
    (backslashes, an unbalanced quote), which the caller hands to shlex itself."""
    words: list[str] = []
    word: list[str] | None = None
    pos, end = 0, len(text)
    while pos < end:
        m = _SHELL_PART.match(text, pos)
        if m is None:
            return None
        bare, single, double, blank = m.groups()
        if blank is not None:
            if word is not None:
                words.append("".join(word))
                word = None
        else:
            (word := word if word is not None else []).append(bare or single or double or "")
        pos = m.end()
    if word is not None:
        words.append("".join(word))
    return words


def _argv(binary: str, arguments: str) -> list[str] | None:
    """[binary, *arguments] split back as the enricher quoted them (shlex.quote); None
    when the string does not split (cut by the kernel side mid-quote)."""
    words = _split_shell_words(arguments)
    if words is None:
        try:
            words = shlex.split(arguments)
        except ValueError:
            return None
    return [binary, *words]


def _image_name_and_tag(image: str) -> tuple[str, str]:
    name = image.split("@", 1)[0]
    repo, sep, tag = name.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return name, ""


def process_attributes(process: Mapping[str, Any], parent: Mapping[str, Any] | None) -> Attributes:
    """process.*, container.* and k8s.* attributes of one Tetragon process."""
    attrs: Attributes = {}
    if (pid := process.get("pid")) is not None:
        attrs["process.pid"] = pid
    if parent and (ppid := parent.get("pid")) is not None:
        attrs["process.parent_pid"] = ppid
    if binary := process.get("binary"):
        attrs["process.executable.path"] = binary
        attrs["process.executable.name"] = binary.rsplit("/", 1)[-1]
        arguments = process.get("arguments") or ""
        if (argv := _argv(binary, arguments)) is not None:
            attrs["process.command_args"] = argv
            attrs["process.args_count"] = len(argv)
        else:
            attrs["process.command_line"] = f"{binary} {arguments}"
    if (uid := process.get("uid")) is not None:
        attrs["process.user.id"] = uid
    if user_name := (process.get("user") or {}).get("name"):
        attrs["process.user.name"] = user_name
    if cwd := process.get("cwd"):
        attrs["process.working_directory"] = cwd
    if start_time := process.get("start_time"):
        attrs["process.creation.time"] = start_time
    if exec_id := process.get("exec_id"):
        attrs["ocellus.exec_id"] = exec_id
    if parent_exec_id := process.get("parent_exec_id"):
        attrs["ocellus.parent_exec_id"] = parent_exec_id
    if flags := process.get("flags"):
        attrs["ocellus.process.flags"] = flags
    _add_container_attributes(process, attrs)
    return attrs


def _add_container_attributes(process: Mapping[str, Any], attrs: Attributes) -> None:
    pod = process.get("pod") or {}
    container = pod.get("container") or {}
    runtime, cid = container_of(process)
    if cid:
        attrs["container.id"] = cid
    if runtime:
        attrs["container.runtime.name"] = runtime
    if name := container.get("name"):
        # In a pod, Tetragon's container name is the pod spec's (k8s.container.name);
        # outside Kubernetes it is the runtime's (container.name).
        attrs["k8s.container.name" if pod.get("name") else "container.name"] = name
    image = container.get("image") or {}
    if image_name := image.get("name"):
        repo, tag = _image_name_and_tag(image_name)
        attrs["container.image.name"] = repo
        if tag:
            attrs["container.image.tags"] = [tag]
    if image_id := image.get("id"):
        attrs["container.image.id"] = image_id
    if (vpid := container.get("pid")) is not None:
        attrs["process.vpid"] = vpid
    if namespace := pod.get("namespace"):
        attrs["k8s.namespace.name"] = namespace
    if pod_name := pod.get("name"):
        attrs["k8s.pod.name"] = pod_name
    if pod_uid := pod.get("uid"):
        attrs["k8s.pod.uid"] = pod_uid
    workload_key = _WORKLOAD_ATTRIBUTES.get(pod.get("workload_kind") or "")
    if workload_key and (workload := pod.get("workload")):
        attrs[workload_key] = workload
    for label, value in (pod.get("pod_labels") or {}).items():
        attrs[f"k8s.pod.label.{label}"] = value


def exit_attributes(body: Mapping[str, Any]) -> Attributes:
    attrs: Attributes = {"process.exit.code": body.get("status") or 0}
    if signal := body.get("signal"):
        attrs["ocellus.process.exit.signal"] = signal
    if exit_time := body.get("time"):
        attrs["process.exit.time"] = exit_time
    return attrs


def policy_attributes(kind: str, body: Mapping[str, Any]) -> Attributes:
    """What a policy hit says beside its process: the policy, the hook, the action."""
    attrs: Attributes = {}
    for key, attr in (
        ("policy_name", "ocellus.policy.name"),
        ("action", "ocellus.policy.action"),
        ("message", "ocellus.policy.message"),
        ("function_name", "ocellus.hook.function_name"),
    ):
        if value := body.get(key):
            attrs[attr] = value
    if kind == "process_tracepoint" and body.get("subsys"):
        attrs["ocellus.hook.tracepoint"] = f"{body['subsys']}:{body.get('event', '')}"
    if tags := body.get("tags"):
        attrs["ocellus.policy.tags"] = [str(tag) for tag in tags]
    return attrs


def event_attributes(kind: str, body: Mapping[str, Any]) -> Attributes:
    """All attributes of an event's log record."""
    attrs = process_attributes(body.get("process") or {}, body.get("parent"))
    attrs["ocellus.event.type"] = kind
    if kind == "process_exit":
        attrs.update(exit_attributes(body))
    elif kind in POLICY_KINDS:
        attrs.update(policy_attributes(kind, body))
    return attrs


def is_enforcement(kind: str, body: Mapping[str, Any]) -> bool:
    """A policy hit whose action acted on the process (killed or signalled it)."""
    return kind in POLICY_KINDS and body.get("action") in ENFORCING_ACTIONS
