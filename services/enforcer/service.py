"""The enforcer's lifecycle: find the sensor's policy maps, take over what an
earlier enforcer left, apply the policies of the directory and of the KV
bucket, then follow both; answer `ocellus policy` on the control subjects.

Stopping leaves the maps as they are: enforcement goes on without the
enforcer, and the next one adopts the hooks it still wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import ValidationError

from schemas import codec, subjects
from schemas.policy import PolicyError
from schemas.raw import RawBatch, RawCgroup
from services.common import bus, heartbeats, signing
from services.common.cgroups import CgroupError
from services.common.containers import ContainerResolver
from services.common.errors import OcellusError
from services.common.lifecycle import RateLimitedLog, stop_on_signals
from services.common.logging import get_logger
from services.common.metrics import start_telemetry
from services.enforcer.connect_rules import ConnectRules
from services.enforcer.engine import ApplyError, PolicyEngine, SignatureCheck
from services.enforcer.hooktable import HookTable, HookTableError
from services.enforcer.reactions import ReactionsFileWatch, Reactor, load_reactions
from services.enforcer.registry import Registry
from services.enforcer.scopes import ScopeError, ScopeManager
from services.enforcer.settings import Settings
from services.enforcer.sources import DirectorySource, KvSource, ModeSource
from services.sensor import capabilities
from services.sensor.hook_records import policy_pin_dir

log = get_logger("ocellus.enforcer")


async def run(
    settings: Settings, *, nc: NATS | None = None, stop: asyncio.Event | None = None
) -> None:
    stop = stop or stop_on_signals()
    started = time.monotonic()
    own_nc = nc is None
    if nc is None:
        nc = await bus.connect_service(settings, "enforcer", stop)
    tasks: list[asyncio.Task[None]] = []
    watchers: list[KvSource | ModeSource] = []
    table: HookTable | None = None
    resolver: ContainerResolver | None = None
    telemetry = await start_telemetry(settings, "enforcer", nc)
    telemetry.check("policy maps found", lambda: table is not None)
    try:
        table = await _wait_for_maps(settings, stop)
        if table is None:
            return
        caps = capabilities.probe()
        registry = Registry(
            await bus.key_value(nc, subjects.HOOK_BUCKET), settings.node_name, settings.retired_ttl
        )
        connect = ConnectRules.open(policy_pin_dir(settings.bpf_pin_dir, settings.node_name))
        reactor = Reactor(
            load_reactions(settings.reactions_file) if settings.reactions_file else None, None
        )
        resolver, scopes = await _scopes(settings, table)
        reactor.scopes = scopes
        engine = PolicyEngine(
            table,
            registry,
            _sensor_sync(nc, settings),
            caps,
            connect=connect,
            signatures=_signatures(nc, settings),
            scopes=scopes,
        )
        reactor.binaries = engine  # addBinaryTo
        adopted = await engine.adopt()
        subs = []
        if scopes is not None:
            # Before any policy is placed: no container start goes unseen.
            subs += await _follow_cgroups(nc, settings, scopes)
            reconcile = scopes.run_reconcile(settings.scope_rescan_interval)
            tasks.append(asyncio.create_task(reconcile, name="scope-reconcile"))

        # Modes first: a policy applied next already gets its runtime mode.
        modes = ModeSource(engine, await bus.key_value(nc, subjects.POLICY_MODE_BUCKET))
        await modes.start()
        watchers.append(modes)
        tasks.append(asyncio.create_task(modes.run(), name="policy-modes"))
        directory = None
        if settings.policy_dir is not None:
            directory = DirectorySource(engine, settings.policy_dir, settings.poll_interval)
            await directory.scan()
            tasks.append(asyncio.create_task(directory.run(), name="policy-dir"))
        if settings.kv_policies:
            kv_source = KvSource(engine, await bus.key_value(nc, subjects.POLICY_BUCKET))
            await kv_source.start()
            watchers.append(kv_source)
            tasks.append(asyncio.create_task(kv_source.run(), name="policy-kv"))
        await engine.finish_adoption()

        subs += [
            await nc.subscribe(subjects.control("enforcer", settings.node_name, verb), cb=handler)
            for verb, handler in _handlers(nc, settings, engine).items()
        ]
        if settings.reactions_file is not None:  # addBinaryTo works without scopes
            subs.append(await _follow_execs(nc, settings, reactor))
            watch = _watch_reactions(ReactionsFileWatch(reactor, settings.reactions_file), settings)
            tasks.append(asyncio.create_task(watch, name="reactions-file"))
        report = _report(nc, settings, engine, started, reactor)
        tasks.append(asyncio.create_task(report, name="status"))
        telemetry.status(lambda: _status(settings, engine, started, reactor))
        telemetry.ready()  # maps found, policy sources loaded
        log.info(
            "enforcer running",
            node=settings.node_name,
            policies=len(engine.statuses()),
            adopted_hooks=adopted,
            policy_dir=str(settings.policy_dir) if settings.policy_dir else None,
            start_seconds=round(time.monotonic() - started, 3),
        )
        await stop.wait()
        log.info("enforcer stopping")
        for sub in subs:
            await sub.unsubscribe()
        await _publish_status(nc, settings, engine, started, reactor)
    finally:
        await telemetry.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watcher in watchers:
            with contextlib.suppress(Exception):
                await watcher.stop()
        if resolver is not None:
            await resolver.close()
        if table is not None:
            table.close()
        if own_nc:
            await bus.drain(nc, settings.drain_timeout)
        log.info("enforcer stopped")
        # Last, so a lost connection is what the exit says, whatever failed after it
        # (a closed client's unsubscribe raises) or returned early.
        bus.raise_if_lost(nc)


async def _wait_for_maps(settings: Settings, stop: asyncio.Event) -> HookTable | None:
    """The sensor creates the maps when it loads; wait up to maps_wait for them."""
    pin_dir = policy_pin_dir(settings.bpf_pin_dir, settings.node_name)
    deadline = time.monotonic() + settings.maps_wait
    said = False
    while True:
        try:
            # Ids from the clock: a record of a hook an earlier enforcer removed
            # can never be taken for a hook of this one.
            return HookTable(pin_dir, first_id=_first_id())
        except HookTableError as e:
            if time.monotonic() >= deadline:
                raise OcellusError(str(e)) from None
            if not said:
                log.info("waiting for the sensor's policy maps", path=str(pin_dir))
                said = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
            return None


def _signatures(nc: NATS, settings: Settings) -> SignatureCheck | None:
    """Required signatures when trusted keys are given; a refusal is an audit
    event on ocellus.alerts.<node> (kind policy_signature) and a log line."""
    if settings.trusted_keys_dir is None:
        return None
    trusted = signing.load_trusted(settings.trusted_keys_dir)
    log.info("policies must be signed", trusted_keys=sorted(trusted))

    async def refused(name: str, source: str, why: str) -> None:
        log.error("unsigned or tampered policy refused", policy=name, source=source, reason=why)
        body = {
            "node": settings.node_name,
            "kind": "policy_signature",
            "message": f"policy {name!r} from {source} refused: {why}",
            "time": time.time_ns(),
        }
        await nc.publish(subjects.alerts(settings.node_name), codec.pack(body))

    return SignatureCheck(trusted, refused)


async def _scopes(
    settings: Settings, table: HookTable
) -> tuple[ContainerResolver | None, ScopeManager | None]:
    """The container resolver and the scope sets; (None, None) without cgroup2:
    scoped policies are then refused, the others apply."""
    resolver = ContainerResolver(
        cgroup_root=settings.cgroup_root,
        docker_socket=settings.docker_socket,
        unresolved_ttl=0.05,  # scopes.py asks again within a second
    )
    try:
        await resolver.start()
    except CgroupError as e:
        log.warning("scoped policies unavailable", reason=str(e))
        return None, None
    return resolver, ScopeManager(resolver, table.scope_map)


async def _follow_cgroups(nc: NATS, settings: Settings, scopes: ScopeManager) -> list[Any]:
    """The sensor's cgroup_mkdir / cgroup_rmdir records of this node."""
    warned = RateLimitedLog(5.0)

    async def on_cgroups(msg: Any) -> None:
        try:
            batch = RawBatch.model_validate(codec.unpack(msg.data))
            records = [RawCgroup.model_validate(r) for r in batch.records]
        except (codec.DecodeError, ValidationError) as e:
            scopes.counters["malformed_cgroup_messages"] += 1
            if warned.ready():
                log.warning("dropping malformed cgroup records", reason=str(e)[:300])
            return
        for rec in records:
            if batch.type == subjects.CGROUP_MKDIR:
                await scopes.cgroup_created(rec.id, rec.path)
            else:
                scopes.cgroup_removed(rec.id, rec.path)

    return [
        await nc.subscribe(subjects.raw(settings.node_name, kind), cb=on_cgroups)
        for kind in (subjects.CGROUP_MKDIR, subjects.CGROUP_RMDIR)
    ]


async def _follow_execs(nc: NATS, settings: Settings, reactor: Reactor) -> Any:
    async def on_exec(msg: Any) -> None:
        await reactor.handle(msg.data)

    subject = subjects.events(settings.node_name, subjects.PROCESS_EXEC)
    return await nc.subscribe(subject, cb=on_exec, pending_msgs_limit=65536)


async def _watch_reactions(watch: ReactionsFileWatch, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.poll_interval)
        watch.poll()


def _first_id() -> int:
    return (int(time.time()) & 0x3FFFFF) << 10  # a new range each second, for ~48 days


def _sensor_sync(nc: NATS, settings: Settings) -> Any:
    subject = subjects.control("sensor", settings.node_name, "sync_hooks")

    async def sync() -> dict[str, Any] | None:
        state = await bus.request(nc, subject, {}, settings.sensor_timeout)
        return state if isinstance(state, dict) else None

    return sync


def _handlers(nc: NATS, settings: Settings, engine: PolicyEngine) -> dict[str, Any]:
    async def reply(msg: Any, body: dict[str, Any]) -> None:
        if msg.reply:
            await nc.publish(msg.reply, codec.pack({"node": settings.node_name, **body}))

    async def on_list(msg: Any) -> None:
        await reply(msg, {"policies": engine.statuses(), "sensor": engine.sensor_answered})

    async def on_check(msg: Any) -> None:
        """Compile a policy here without applying it (`ocellus policy apply` asks first)."""
        try:
            text = codec.unpack(msg.data).get("policy", "")
            compiled = engine.check(text, source="ocellus policy apply")
        except PolicyError as e:
            await reply(msg, {"ok": False, "error": str(e)})
        except codec.DecodeError as e:
            await reply(msg, {"ok": False, "error": f"malformed request: {e}"})
        else:
            hooks = [
                f"{h.planned.tracepoint.subsystem}:{h.planned.tracepoint.event}"
                for h in compiled.hooks
            ]
            await reply(
                msg,
                {
                    "ok": True,
                    "name": compiled.name,
                    "revision": compiled.revision,
                    "hooks": hooks,
                    "notes": list(compiled.notes),
                },
            )

    async def on_release(msg: Any) -> None:
        """Undo a reaction (`ocellus policy release`): a binary or a container."""
        try:
            body = codec.unpack(msg.data)
            answer = await release(engine, str(body.get("policy", "")), body)
        except codec.DecodeError as e:
            answer = {"ok": False, "error": f"malformed request: {e}"}
        await reply(msg, answer)

    return {"list": on_list, "check": on_check, "release": on_release}


async def release(engine: PolicyEngine, policy: str, body: dict[str, Any]) -> dict[str, Any]:
    """What `ocellus policy release` asked, done: {ok, released} or {ok: false, error}."""
    binary, container = body.get("binary"), body.get("container")
    try:
        if isinstance(binary, str) and binary:
            if await engine.release_binary(policy, binary):
                return {"ok": True, "released": binary}
            return {"ok": False, "error": f"{binary!r} is not a reacted binary of {policy!r}"}
        if isinstance(container, str) and container:
            cid = (
                await engine.scopes.release_container(policy, container) if engine.scopes else None
            )
            if cid is not None:
                return {"ok": True, "released": cid}
            return {"ok": False, "error": f"{container!r} is not a reacted container of {policy!r}"}
    except (ApplyError, ScopeError, PolicyError) as e:
        return {"ok": False, "error": str(e)}
    return {"ok": False, "error": "malformed request: give a binary or a container"}


def _status(
    settings: Settings, engine: PolicyEngine, started: float, reactor: Reactor
) -> dict[str, Any]:
    """The heartbeat body (also what /metrics reads)."""
    body = heartbeats.heartbeat(
        "enforcer",
        settings.node_name,
        started,
        policies=engine.statuses(),
        sensor=engine.sensor_answered,
    )
    if engine.scopes is not None:
        body["scopes"] = dict(engine.scopes.counters)
    if reactor.rules is not None:
        body["reactions"] = reactor.status()
    return body


async def _publish_status(
    nc: NATS, settings: Settings, engine: PolicyEngine, started: float, reactor: Reactor
) -> None:
    await heartbeats.publish(nc, _status(settings, engine, started, reactor))


async def _report(
    nc: NATS, settings: Settings, engine: PolicyEngine, started: float, reactor: Reactor
) -> None:
    while True:
        await _publish_status(nc, settings, engine, started, reactor)
        await asyncio.sleep(settings.status_interval)
