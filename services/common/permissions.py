"""Who may publish and subscribe what on NATS: one user per service, each
limited to its own subjects (DESIGN §5, README "Security").

The table below is the one place the permissions are written; it renders
the nats-server ``authorization`` block (``deploy/nats/users.conf``):

    python -m services.common.permissions > deploy/nats/users.conf

Every subject comes from schemas/subjects.py. The JetStream API subjects are
the ones nats-py 2.x sends for what each service does (found, and kept true,
by tests/security against a real nats-server: a missing one is a
"Permissions Violation" there). Replies: each service reads only its own
inboxes (``_INBOX.<service>.>``, the prefix bus.connect_service sets), and
services that answer requests (the ``ctl`` subjects) may publish only to the
reply subject of a request they received (``allow_responses``), never to
another service's inbox.

A node's services may be given the node's own subjects only (``node=``, one
users file per node); the default ``*`` lets a user act for any node.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from schemas import subjects

ANY_NODE = "*"
DEADLETTER_STREAM = "OCELLUS_DEADLETTER"  # the exporter's default (exporter.yaml dead_letter)
SERVICES = ("sensor", "enricher", "enforcer", "exporter", "cli")


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False  # may reply to requests it received (ctl verbs)


def _node(subject: Callable[..., str], node: str, *args: str) -> str:
    """``subject(node, ...)`` for one node, or with ``*`` in the node token."""
    if node != ANY_NODE:
        return subject(node, *args)
    placeholder = "OCELLUSANYNODE"
    return subject(placeholder, *args).replace(placeholder, ANY_NODE)


def _status(service: str, node: str) -> str:
    return _node(lambda n: subjects.status(service, n), node)


def _control(service: str, node: str) -> str:
    return _node(lambda n: subjects.control(service, n, "*"), node)


def _stream_admin(stream: str) -> tuple[str, ...]:
    """Create the stream or bring its config up to date (enricher, exporter)."""
    return tuple(subjects.js_api("STREAM", verb, stream) for verb in ("INFO", "CREATE", "UPDATE"))


def _kv_read(bucket: str) -> tuple[str, ...]:
    """Open a bucket, get keys, watch it (an ordered push consumer)."""
    stream = subjects.kv_stream(bucket)
    return (
        subjects.js_api("STREAM", "INFO", stream),
        subjects.js_api("STREAM", "MSG", "GET", stream),
        subjects.js_api("DIRECT", "GET", stream, ">"),
        subjects.js_api("CONSUMER", "CREATE", stream),  # an unnamed (ordered) consumer
        subjects.js_api("CONSUMER", "CREATE", stream, ">"),
        subjects.js_api("CONSUMER", "INFO", stream, ">"),
        subjects.js_api("CONSUMER", "DELETE", stream, ">"),
        subjects.js_flow_control(stream),
    )


def _kv_create(bucket: str) -> tuple[str, ...]:
    """Create the bucket when missing (bus.key_value: whoever comes first)."""
    return (subjects.js_api("STREAM", "CREATE", subjects.kv_stream(bucket)),)


def _inbox(service: str) -> str:
    return f"{subjects.inbox(service)}.>"


def permissions(node: str = ANY_NODE) -> dict[str, Permissions]:
    """Each service's permissions, for one node or (``*``) any."""
    events = subjects.EVENTS_STREAM
    policies, hooks = subjects.POLICY_BUCKET, subjects.HOOK_BUCKET
    modes = subjects.POLICY_MODE_BUCKET  # `ocellus policy mode`: enforce/monitor overrides
    return {
        # Publishes its node's raw records and heartbeats; answers sync_hooks.
        # No JetStream, no KV: it cannot read policies.
        "sensor": Permissions(
            publish=(
                _node(subjects.raw_all, node),
                _status("sensor", node),
                _node(subjects.alerts, node),  # its watchdog's findings
            ),
            subscribe=(_control("sensor", node), _inbox("sensor")),
            allow_responses=True,
        ),
        # Reads every node's raw records (queue group; one per node or
        # central), writes its node's events into OCELLUS_EVENTS (creating or
        # updating the stream), reads the hook registry.
        "enricher": Permissions(
            publish=(
                _node(subjects.events_all, node),
                _status("enricher", node),
                *_stream_admin(events),
                *_kv_read(hooks),
            ),
            subscribe=(subjects.raw_all(), _inbox("enricher")),
        ),
        # Reads policies, writes its node's hook registry, asks its sensor to
        # sync hooks, answers `ocellus policy` on its control subjects.
        "enforcer": Permissions(
            publish=(
                _status("enforcer", node),
                *_kv_read(policies),
                *_kv_create(policies),
                *_kv_read(modes),
                *_kv_create(modes),
                *_kv_read(hooks),
                *_kv_create(hooks),
                _node(lambda n: subjects.kv_key(hooks, subjects.node_token(n)), node),
                _control("sensor", node),
                _node(subjects.alerts, node),  # refused policy signatures (audit)
            ),
            subscribe=(
                _control("enforcer", node),
                _inbox("enforcer"),
                # Scoped policies follow its node's containers as their cgroups come
                # and go; reactions read its node's exec events.
                _node(lambda n: subjects.raw(n, subjects.CGROUP_MKDIR), node),
                _node(lambda n: subjects.raw(n, subjects.CGROUP_RMDIR), node),
                _node(lambda n: subjects.events(n, subjects.PROCESS_EXEC), node),
            ),
            allow_responses=True,
        ),
        # Durable pull consumers on OCELLUS_EVENTS (exporter_<sink>), acks,
        # dead letters. Cannot publish raw records, events or policies.
        "exporter": Permissions(
            publish=(
                _status("exporter", node),
                subjects.js_api("STREAM", "INFO", events),
                # Any consumer of the stream: its durables are exporter_<sink>,
                # and a subject wildcard is a whole token (no "exporter_*").
                subjects.js_api("CONSUMER", "INFO", events, "*"),
                subjects.js_api("CONSUMER", "CREATE", events, "*"),
                subjects.js_api("CONSUMER", "CREATE", events, "*", ">"),
                subjects.js_api("CONSUMER", "MSG", "NEXT", events, "*"),
                subjects.js_ack(events),
                *_stream_admin(DEADLETTER_STREAM),
                subjects.deadletter_all(),
            ),
            subscribe=(_inbox("exporter"),),
        ),
        # `ocellus policy apply|list|delete`, `ocellus events`, `ocellus status`.
        "cli": Permissions(
            publish=(
                *_kv_read(policies),
                *_kv_create(policies),
                subjects.kv_keys(policies),
                *_kv_read(modes),
                *_kv_create(modes),
                subjects.kv_keys(modes),
                _control("enforcer", ANY_NODE),
            ),
            subscribe=(
                subjects.events_all(),
                subjects.status_all(),
                subjects.alerts_all(),
                _inbox("cli"),
            ),
        ),
    }


def password_variable(service: str) -> str:
    """The environment variable nats-server takes a service's password from."""
    return f"OCELLUS_NATS_{service.upper()}_PASSWORD"


def render_users(passwords: Mapping[str, str] | None = None, node: str = ANY_NODE) -> str:
    """The nats-server ``authorization`` block: a user per service, named after
    it. Passwords are ``$OCELLUS_NATS_<SERVICE>_PASSWORD`` references (taken
    from the server's environment) unless given (tests)."""
    lines = [
        "# Generated by `python -m services.common.permissions`: edit the table in",
        "# services/common/permissions.py, not this file. One NATS user per Ocellus",
        "# service; each password comes from the server's environment",
        "# (OCELLUS_NATS_<SERVICE>_PASSWORD) and, on the service side, from the file",
        '# named by OCELLUS_NATS_PASSWORD_FILE (README "Security").',
        "authorization {",
        "  users = [",
    ]
    for service, perms in permissions(node).items():
        if passwords is not None:
            password = json.dumps(passwords[service])
        else:
            password = f"${password_variable(service)}"
        lines += [
            "    {",
            f"      user: {service}",
            f"      password: {password}",
            "      permissions: {",
            f"        publish: {{ allow: {_list(perms.publish)} }}",
            f"        subscribe: {{ allow: {_list(perms.subscribe)} }}",
        ]
        if perms.allow_responses:
            lines.append('        allow_responses: { max: 1, expires: "1m" }')
        lines += ["      }", "    }"]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in items) + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.permissions", description=render_users.__doc__
    )
    parser.add_argument("--node", default=ANY_NODE, help="one node's users (default: any node)")
    args = parser.parse_args(argv)
    sys.stdout.write(render_users(node=args.node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
