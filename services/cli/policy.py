"""`ocellus policy apply|list|delete`: cluster-wide policies in the NATS KV
bucket ocellus_policies, checked first by this node's enforcer, and the
state every policy is in on a node."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS

from schemas import subjects
from schemas.policy import PolicyError, load_policy
from services.cli import connection
from services.cli.settings import Settings
from services.common import bus
from services.enforcer.revision import revision_of

EXIT_REFUSED, EXIT_NO_ENFORCER = 1, 3
POLL_FIRST, POLL_MAX = 0.01, 0.1  # seconds between asking a node for its policies


def add_policy_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    policy = sub.add_parser("policy", help="apply, list and delete tracing policies")
    verbs = policy.add_subparsers(dest="policy_command", required=True)
    apply = verbs.add_parser(
        "apply", parents=[common], help="check a policy on this node, then store it cluster-wide"
    )
    apply.add_argument("file", type=Path, help="TracingPolicy YAML")
    apply.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for this node to apply it"
    )
    listing = verbs.add_parser("list", parents=[common], help="policies on a node, with state")
    listing.add_argument("--json", action="store_true", help="one JSON object per policy")
    delete = verbs.add_parser("delete", parents=[common], help="delete a cluster-wide policy")
    delete.add_argument("name")
    delete.add_argument("--wait", type=float, default=10.0, help="seconds to wait for removal")
    sign = verbs.add_parser("sign", help="sign a policy file with an ed25519 key (in place)")
    sign.add_argument("file", type=Path, help="TracingPolicy YAML")
    sign.add_argument("--key", type=Path, required=True, help="ed25519 private key (PEM)")
    sign.add_argument("-o", "--output", type=Path, help="write the signed policy here instead")
    keygen = verbs.add_parser("keygen", help="make an ed25519 key pair for signing policies")
    keygen.add_argument("key", type=Path, help="private key file to create (and KEY.pub)")
    mode = verbs.add_parser(
        "mode", parents=[common], help="switch a policy between enforce and monitor, cluster-wide"
    )
    mode.add_argument("name")
    mode.add_argument(
        "mode", choices=["enforce", "monitor", "default"], help="default: the policy's own"
    )
    mode.add_argument("--wait", type=float, default=10.0, help="seconds to wait for this node")
    release = verbs.add_parser(
        "release", parents=[common], help="undo a reaction on this node: a binary or a container"
    )
    release.add_argument("name", help="the policy the reaction widened")
    what = release.add_mutually_exclusive_group(required=True)
    what.add_argument("--binary", help="a binary a reaction added to the policy's kill set")
    what.add_argument("--container", help="a container (id or unique prefix) a reaction added")


def run_offline(args: argparse.Namespace) -> int | None:
    """`policy sign` and `policy keygen`: local files only, no bus."""
    if args.policy_command not in ("sign", "keygen"):
        return None
    # Imported here: cryptography costs ~40 ms of start-up that `apply` (which
    # neither signs nor verifies: the enforcer does) should not pay.
    from services.common import signing

    if args.policy_command == "keygen":
        try:
            public = signing.generate(args.key)
        except FileExistsError:
            print(f"ocellus: {args.key} exists; not overwriting a key", file=sys.stderr)
            return EXIT_REFUSED
        print(f"private key {args.key} (keep it secret), public key {public} (trust it)")
        return 0
    try:  # sign
        text = args.file.read_bytes()
        name = load_policy(text, source=str(args.file)).metadata.name
        signed = signing.sign(text, signing.load_private(args.key))
    except OSError as e:
        print(f"ocellus: {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_REFUSED
    except (PolicyError, signing.SignatureError, ValueError) as e:
        print(f"{e}\nnot signed", file=sys.stderr)
        return EXIT_REFUSED
    out = args.output or args.file
    # Whole or not at all: an enforcer watching the directory never reads a
    # half-written file (it would refuse it as unsigned or tampered).
    partial = out.with_name(f".{out.name}.signing")
    partial.write_bytes(signed)
    partial.replace(out)
    kid = signing.key_id(signing.load_private(args.key).public_key())
    print(f"policy {name!r} signed with key {kid}: {args.output or args.file}")
    return 0


async def run_policy(settings: Settings, args: argparse.Namespace) -> int:
    if args.policy_command == "apply":
        try:
            text = args.file.read_bytes()
            name = load_policy(text, source=str(args.file)).metadata.name
        except OSError as e:
            print(f"ocellus: {args.file}: {e.strerror}", file=sys.stderr)
            return EXIT_REFUSED
        except PolicyError as e:
            print(f"{e}\nnothing was changed", file=sys.stderr)
            return EXIT_REFUSED
    nc = await connection.connect(settings, "policy")
    try:
        if args.policy_command == "apply":
            return await _apply(nc, settings.node_name, name, text, args.wait)
        if args.policy_command == "list":
            return await _list(nc, settings.node_name, as_json=args.json)
        if args.policy_command == "mode":
            return await _mode(nc, settings.node_name, args.name, args.mode, args.wait)
        if args.policy_command == "release":
            return await _release(nc, settings.node_name, args)
        return await _delete(nc, settings.node_name, args.name, args.wait)
    finally:
        await bus.drain(nc, settings.drain_timeout)


async def _ask(nc: NATS, node: str, verb: str, body: dict[str, Any] | None = None) -> Any:
    return await bus.request(nc, subjects.control("enforcer", node, verb), body or {}, 5.0)


async def _release(nc: NATS, node: str, args: argparse.Namespace) -> int:
    body = {"policy": args.name, "binary": args.binary, "container": args.container}
    answer = await _ask(nc, node, "release", body)
    if answer is None:
        print(f"no enforcer on node {node} answered", file=sys.stderr)
        return EXIT_NO_ENFORCER
    if not answer.get("ok"):
        print(f"{answer.get('error')}\nnothing was changed", file=sys.stderr)
        return EXIT_REFUSED
    print(f"released {answer['released']} from {args.name!r} on node {node}")
    return 0


async def _apply(nc: NATS, node: str, name: str, text: bytes, wait: float) -> int:
    check = await _ask(nc, node, "check", {"policy": text.decode("utf-8", "replace")})
    if check is not None and not check.get("ok"):
        print(f"{check.get('error')}\nrefused by node {node}; nothing was changed", file=sys.stderr)
        return EXIT_REFUSED
    kv = await bus.key_value(nc, subjects.POLICY_BUCKET)
    await kv.put(name, text)
    if check is None:
        print(f"policy {name!r} stored cluster-wide; no enforcer on node {node} answered")
        return EXIT_NO_ENFORCER
    for note in check.get("notes", []):
        print(f"note: {note}")
    row = await _wait_for(nc, node, name, wait, lambda r: r["revision"] == revision_of(text))
    if row is None:
        print(f"policy {name!r} stored; node {node} did not report it within {wait:g}s")
        return EXIT_NO_ENFORCER
    if row["state"] != "applied":
        print(f"policy {name!r} {row['state']} on node {node}: {row['error']}", file=sys.stderr)
        return EXIT_REFUSED
    hooks = ", ".join(h["tracepoint"] for h in row["hooks"])
    print(f"policy {name!r} applied on node {node} (revision {row['revision']}): {hooks}")
    return 0


async def _delete(nc: NATS, node: str, name: str, wait: float) -> int:
    listing = await _ask(nc, node, "list")
    row = _row(listing, name)
    if row is not None and row["source"] != "kv":
        print(f"policy {name!r} on node {node} comes from {row['source']}: remove it there")
        return EXIT_REFUSED
    kv = await bus.key_value(nc, subjects.POLICY_BUCKET)
    try:
        await kv.get(name)
    except nats.js.errors.KeyNotFoundError:
        print(f"no cluster-wide policy {name!r}", file=sys.stderr)
        return EXIT_REFUSED
    await kv.delete(name)
    if listing is None:
        print(f"policy {name!r} deleted cluster-wide; no enforcer on node {node} answered")
        return EXIT_NO_ENFORCER
    gone = await _wait_for(nc, node, name, wait, lambda r: False, until_absent=True)
    print(f"policy {name!r} deleted" + ("" if gone else f"; node {node} still lists it"))
    return 0 if gone else EXIT_NO_ENFORCER


async def _mode(nc: NATS, node: str, name: str, mode: str, wait: float) -> int:
    row = _row(await _ask(nc, node, "list"), name)
    if row is not None and row["mode"] == "monitor_only":
        print(f"policy {name!r} has no Sigkill/Signal actions: it only monitors", file=sys.stderr)
        return EXIT_REFUSED
    kv = await bus.key_value(nc, subjects.POLICY_MODE_BUCKET)
    if mode == "default":
        await kv.delete(name)
    else:
        await kv.put(name, mode.encode())
    if row is None:
        print(f"mode of {name!r} set to {mode} cluster-wide; node {node} does not run it")
        return 0
    done = await _wait_for(nc, node, name, wait, lambda r: mode == "default" or r["mode"] == mode)
    if done is None:
        print(f"mode of {name!r} set to {mode}; node {node} did not confirm within {wait:g}s")
        return EXIT_NO_ENFORCER
    print(f"policy {name!r} on node {node}: {done['mode']}")
    return 0


async def _wait_for(
    nc: NATS, node: str, name: str, wait: float, ready: Any, *, until_absent: bool = False
) -> Any:
    """The node's row for ``name`` once ``ready(row)`` (or True once it is absent).
    Asked again after 10 ms, then twice as long each time up to 100 ms: an
    enforcer applies a policy in 10-20 ms, and the command should return then."""
    deadline = time.monotonic() + wait
    pause = POLL_FIRST
    while time.monotonic() < deadline:
        row = _row(await _ask(nc, node, "list"), name)
        if until_absent and row is None:
            return True
        if row is not None and not until_absent and ready(row):
            return row
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
    return None


def _row(listing: Any, name: str) -> dict[str, Any] | None:
    if not listing:
        return None
    return next((r for r in listing.get("policies", []) if r["name"] == name), None)


async def _list(nc: NATS, node: str, *, as_json: bool) -> int:
    listing = await _ask(nc, node, "list")
    if listing is None:
        print(f"no enforcer on node {node} answered", file=sys.stderr)
        return EXIT_NO_ENFORCER
    rows = listing.get("policies", [])
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(_table(rows))
    if listing.get("sensor") is False:
        print(f"warning: the sensor on node {node} did not answer the enforcer's last request")
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "NAME", "STATE", "MODE", "HOOKS", "MATCHED", "POSTED", "SIGNALLED", "MONITORED",
        "DENIED", "RATELIMITED", "SOURCE", "ERROR",
    )  # fmt: skip
    lines = [head]
    for r in rows:
        c = r.get("counters", {})
        error = (r.get("error") or "").splitlines()
        lines.append(
            (
                r["name"],
                r["state"],
                r["mode"],
                str(len(r["hooks"])),
                str(c.get("matched", 0)),
                str(c.get("posted", 0)),
                str(c.get("signalled", 0)),
                str(c.get("monitored", 0)),
                str(c.get("denied", 0)),
                str(c.get("ratelimited", 0)),
                r["source"],
                error[0][:80] + (" …" if len(error) > 1 or len(error[0]) > 80 else "")
                if error
                else "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1]
        for line in lines
    ).rstrip()
