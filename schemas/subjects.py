"""NATS subject names: the only place they are spelled (DESIGN §2)."""

from __future__ import annotations

PREFIX = "ocellus"
EVENTS_STREAM = "OCELLUS_EVENTS"
POLICY_BUCKET = "ocellus_policies"
# Runtime mode overrides (key: policy name, value: "enforce" | "monitor"),
# written by `ocellus policy mode`, followed by every enforcer.
POLICY_MODE_BUCKET = "ocellus_policy_modes"
# What each node's hook ids mean (policy, hook, args): written by the
# enforcer before it writes the maps, read by the enricher. Key: node token.
HOOK_BUCKET = "ocellus_hooks"

# Raw record types published by the sensor; also the <type> subject token.
PROCESS_EXEC = "process_exec"
PROCESS_EXIT = "process_exit"
PROCESS_CLONE = "process_clone"
CGROUP_MKDIR = "cgroup_mkdir"
CGROUP_RMDIR = "cgroup_rmdir"
PROCESS_HOOK = "process_hook"  # a policy hook matched (generic hook engine)
# Enriched kinds of a hook match (DESIGN §2): by where the policy declared it.
PROCESS_KPROBE = "process_kprobe"
PROCESS_TRACEPOINT = "process_tracepoint"


def node_token(node: str) -> str:
    """A node name as one subject token: dots would split it."""
    token = node.replace(".", "_")
    if not token or any(c in token for c in " *>\t\r\n"):
        raise ValueError(f"node name {node!r} cannot be used in a NATS subject")
    return token


def raw(node: str, event_type: str) -> str:
    return f"{PREFIX}.raw.{node_token(node)}.{event_type}"


def raw_all(node: str | None = None) -> str:
    return f"{PREFIX}.raw.{node_token(node)}.>" if node else f"{PREFIX}.raw.>"


def events(node: str, event_type: str) -> str:
    return f"{PREFIX}.events.{node_token(node)}.{event_type}"


def events_all(node: str | None = None) -> str:
    return f"{PREFIX}.events.{node_token(node)}.>" if node else f"{PREFIX}.events.>"


def status(service: str, node: str) -> str:
    return f"{PREFIX}.status.{service}.{node_token(node)}"


def status_all() -> str:
    return f"{PREFIX}.status.>"


def alerts(node: str) -> str:
    """The sensor's findings about itself and the BPF around it (not events:
    nothing Tetragon-shaped; the status heartbeat counts them too)."""
    return f"{PREFIX}.alerts.{node_token(node)}"


def alerts_all() -> str:
    return f"{PREFIX}.alerts.>"


def deadletter(sink: str) -> str:
    """Where the exporter puts what sink ``sink`` could not take."""
    return f"{PREFIX}.deadletter.{node_token(sink)}"


def deadletter_all() -> str:
    return f"{PREFIX}.deadletter.>"


def control(service: str, node: str, verb: str) -> str:
    return f"{PREFIX}.ctl.{service}.{node_token(node)}.{verb}"


def event_type_of(subject: str) -> str:
    """The <type> token of a raw or events subject."""
    return subject.rsplit(".", 1)[-1]


# NATS's own subjects, as the per-service permissions (services/common/
# permissions.py) name them: reply inboxes, the JetStream API, KV buckets.
INBOX = "_INBOX"
JS_API = "$JS.API"


def inbox(service: str) -> str:
    """The prefix of a service's reply inboxes: only that service may read them."""
    return f"{INBOX}.{node_token(service)}"


def js_api(*tokens: str) -> str:
    """A JetStream API subject, e.g. js_api("STREAM", "INFO", EVENTS_STREAM)."""
    return ".".join((JS_API, *tokens))


def js_ack(stream: str) -> str:
    """Where a consumer of ``stream`` acks (and naks) its messages."""
    return f"$JS.ACK.{stream}.>"


def js_flow_control(stream: str) -> str:
    """Flow-control replies of push consumers (KV watches) on ``stream``."""
    return f"$JS.FC.{stream}.>"


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def kv_keys(bucket: str) -> str:
    """Every key of a KV bucket (writes are publishes here)."""
    return f"$KV.{bucket}.>"


def kv_key(bucket: str, key: str) -> str:
    """One key of a KV bucket."""
    return f"$KV.{bucket}.{key}"
