"""`ocellus up`: an embedded NATS (unless one is named), every service, and
live events on screen until Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from schemas import subjects
from services.cli import embedded_nats
from services.cli.events import EventPrinter, subscribe_events
from services.cli.settings import Settings
from services.common import bus
from services.common.errors import OcellusError
from services.common.lifecycle import stop_on_signals
from services.common.logging import get_logger
from services.common.natsserver import EmbeddedNats, NatsServerError, die_with_parent
from services.exporter.config import load_config

log = get_logger("ocellus.up")


class ServiceStartError(OcellusError):
    """A service exited or did not report ready in time."""


# Services that exist, in start order (stopped in reverse): consumers first,
# so nothing the sensor publishes at start is missed; the enforcer after the
# sensor, whose policy maps it writes. The exporter runs only when given its
# config file (`--exporter-config`).
SERVICES = ("enricher", "exporter", "sensor", "enforcer")


def _embedded_needs_no_auth(settings: Settings) -> None:
    """Credentials or TLS settings name another NATS than the embedded one
    (which has its own password and no TLS): say so rather than have every
    service refused."""
    given = [name for name in ("nats_user", "nats_creds", "nats_tls_ca", "nats_tls_cert")
             if getattr(settings, name) is not None]  # fmt: skip
    if given:
        raise OcellusError(
            f"{', '.join(given)} set, but no NATS URL: they are for an external NATS "
            "(give --nats-url); the embedded one has its own password"
        )


async def _start_nats(settings: Settings, password: str) -> tuple[EmbeddedNats, str]:
    def server(port: int) -> EmbeddedNats:
        return EmbeddedNats(settings.state_dir / "nats", port=port, user=embedded_nats.USER,
                            password=password)  # fmt: skip

    nats = server(settings.nats_port)
    try:
        url = await asyncio.to_thread(nats.start)
    except NatsServerError as e:
        if settings.nats_port == 0:
            raise
        # The default port is taken (another NATS?): take any free one.
        log.warning("NATS port busy; using a free one", port=settings.nats_port, reason=str(e))
        nats = server(0)
        url = await asyncio.to_thread(nats.start)
    return nats, url


async def _spawn(
    service: str, url: str, settings: Settings, extra_env: dict[str, str]
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        **extra_env,
        "OCELLUS_NATS_URL": url,
        "OCELLUS_NODE_NAME": settings.node_name,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


async def _ready_signal(nc: NATS, service: str, node: str) -> asyncio.Future[None]:
    """Resolved by the service's first status heartbeat: it is up and subscribed."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_status(_msg: Msg) -> None:
        if not ready.done():
            ready.set_result(None)
        await sub.unsubscribe()

    sub = await nc.subscribe(subjects.status(service, node), cb=on_status)
    return ready


async def _wait_ready(
    service: str, proc: asyncio.subprocess.Process, ready: asyncio.Future[None], timeout: float
) -> None:
    exited: asyncio.Future[object] = asyncio.ensure_future(proc.wait())
    waiting: set[asyncio.Future[object]] = {ready, exited}  # type: ignore[arg-type]  # Future is invariant
    done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if ready not in done:
        why = f"exited with {proc.returncode}" if proc.returncode is not None else "timed out"
        raise ServiceStartError(f"{service} did not start: {why} (see its log above)")


async def _stop_child(name: str, proc: asyncio.subprocess.Process, timeout: float) -> int:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.error("service did not stop in time; killing", service=name, timeout=timeout)
            proc.kill()
            await proc.wait()
    return proc.returncode or 0


def _exporter_env(config_file: Path) -> dict[str, str]:
    load_config(config_file)  # a bad file stops `up` before anything starts
    return {"OCELLUS_EXPORTER_CONFIG_FILE": str(config_file.resolve())}


def _enforcer_env(policy_dir: Path) -> dict[str, str]:
    if not policy_dir.is_dir():
        raise OcellusError(f"--policy-dir {policy_dir}: not a directory")
    return {"OCELLUS_ENFORCER_POLICY_DIR": str(policy_dir.resolve())}


async def run_up(
    settings: Settings,
    *,
    nats_url: str | None,
    exporter_config: Path | None = None,
    policy_dir: Path | None = None,
) -> int:
    stop = stop_on_signals()
    services = [s for s in SERVICES if s != "exporter" or exporter_config is not None]
    extra_env = _exporter_env(exporter_config) if exporter_config is not None else {}
    if policy_dir is not None:
        extra_env.update(_enforcer_env(policy_dir))
    server = None
    auth = bus.NatsAuth.of(settings)
    lock = None
    if nats_url is None:
        _embedded_needs_no_auth(settings)
        lock = embedded_nats.UpLock(settings.state_dir)  # one `up` per state directory
    children: dict[str, asyncio.subprocess.Process] = {}
    nc = None
    failed = False
    try:
        if lock is not None:
            # Only up's user may connect: other users of the machine could
            # otherwise delete policies or forge events.
            password, password_file = lock.new_password()
            server, nats_url = await _start_nats(settings, password)
            auth = bus.NatsAuth(user=embedded_nats.USER, password_file=password_file)
            extra_env.update(embedded_nats.env(password_file))
            lock.publish(nats_url)  # for `ocellus events`, `policy`, ...
            log.info("embedded NATS ready", url=nats_url, user=embedded_nats.USER,
                     password_file=str(password_file))  # fmt: skip
        assert nats_url is not None
        nc = await bus.connect(
            nats_url, name="ocellus-up", timeout=settings.nats_connect_timeout, auth=auth
        )
        printer = EventPrinter(output=settings.output)
        await subscribe_events(nc, printer)
        for service in services:
            ready = await _ready_signal(nc, service, settings.node_name)
            children[service] = await _spawn(service, nats_url, settings, extra_env)
            await _wait_ready(service, children[service], ready, settings.start_timeout)
        log.info("ocellus up", nats=nats_url, services={n: p.pid for n, p in children.items()})

        waits = {asyncio.create_task(p.wait()): n for n, p in children.items()}
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopping, *waits}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in waits:
                failed = True
                log.error(
                    "service exited; stopping everything",
                    service=waits[task],
                    returncode=task.result(),
                )
        for task in {stopping, *waits}:
            task.cancel()
    finally:
        codes = {}
        for name in reversed(list(children)):
            codes[name] = await _stop_child(name, children[name], settings.stop_timeout)
        if nc is not None:
            await bus.drain(nc, settings.drain_timeout)
        if server is not None:
            await server.astop()
        if lock is not None:
            lock.release()
        if children:
            log.info("ocellus down", returncodes=codes)
    return 1 if failed or any(codes.values()) else 0
