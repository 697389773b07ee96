"""Every service's telemetry endpoint: Prometheus ``/metrics``, liveness
``/healthz`` and readiness ``/readyz`` on one aiohttp server in the service's
own event loop, and OTLP metrics (gRPC) to a collector.

The numbers are the ones the service's heartbeat carries: the service hands
over the function that builds its heartbeat body, and services.common.heartbeats
turns it into samples at each scrape or export. No second bookkeeping.

- ``/healthz``: 200 whenever the loop answers (a stuck loop does not).
- ``/readyz``: 200 once the service said it is ready and every check holds
  (NATS connected, the service's own: programs attached, subscribed, ...);
  503 with the failing checks otherwise.
- Off unless ``metrics_port`` is set (0: any free port, logged); OTLP off
  unless ``metrics_otlp_endpoint`` is set. Telemetry never stops a service:
  a failing scrape or export is logged, and the service runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from services.common import bpfsys, heartbeats
from services.common.errors import OcellusError
from services.common.heartbeats import FAMILIES, Sample
from services.common.logging import get_logger
from services.common.settings import ServiceSettings

log = get_logger("ocellus.metrics")

Check = Callable[[], bool]


class MetricsError(OcellusError):
    """The metrics endpoint cannot be served as configured."""


class Telemetry:
    """One per service process; see the module docstring."""

    def __init__(self, settings: ServiceSettings, service: str) -> None:
        self.settings = settings
        self.service = service
        self.port: int | None = None  # bound port, once serving
        self._checks: dict[str, Check] = {}
        self._ready = False
        self._nc: Any = None
        self._status: Callable[[], dict[str, Any]] | None = None
        self._program_names: Callable[[], dict[int, str]] | None = None
        self._stats_fd: int | None = None
        self._runner: web.AppRunner | None = None
        self._otlp: _OtlpMetrics | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    # -- what the service tells ---------------------------------------------------
    def watch_nats(self, nc: Any) -> None:
        """Readiness follows this connection; nc.is_connected is False while
        nats-py reconnects."""
        self._nc = nc

    def status(self, body: Callable[[], dict[str, Any]]) -> None:
        """The function that builds the service's heartbeat body."""
        self._status = body

    def check(self, name: str, check: Check) -> None:
        """One more condition of readiness, evaluated at each /readyz."""
        self._checks[name] = check

    def ready(self) -> None:
        """Start-up is done: /readyz answers from the checks from now on."""
        self._ready = True

    def bpf_program_names(self, names: Callable[[], dict[int, str]]) -> None:
        """Program fd -> full name (the kernel keeps 15 characters)."""
        self._program_names = names

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        if s.metrics_bpf_stats:
            try:
                self._stats_fd = bpfsys.enable_run_time_stats()
            except OSError as e:
                log.warning("cannot turn BPF run-time stats on", reason=str(e))
        if s.metrics_port is not None:
            await self._serve(s.metrics_address, s.metrics_port)
        if s.metrics_otlp_endpoint:
            self._otlp = _OtlpMetrics(self, s.metrics_otlp_endpoint)
            self._otlp.start()

    async def stop(self) -> None:
        """Idempotent: one last OTLP export, then the endpoint closes."""
        self._ready = False
        if self._otlp is not None:
            await self._otlp.stop()
            self._otlp = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None

    # -- readings ------------------------------------------------------------------
    def readiness(self) -> tuple[bool, dict[str, bool]]:
        checks = {"started": self._ready}
        if self._nc is not None:
            checks["nats"] = bool(self._nc.is_connected)
        for name, check in self._checks.items():
            try:
                checks[name] = bool(check())
            except Exception as e:  # a check that fails says "not ready", never crashes
                log.warning("readiness check failed", check=name, reason=repr(e))
                checks[name] = False
        return all(checks.values()), checks

    def samples(self) -> list[Sample]:
        base = {"service": self.service, "node": self.settings.node_name}
        ready, checks = self.readiness()
        out = [Sample("ocellus_ready", base, 1 if ready else 0)]
        if "nats" in checks:
            out.append(Sample("ocellus_nats_connected", base, 1 if checks["nats"] else 0))
        if self._status is not None:
            try:
                out.extend(heartbeats.samples(self._status()))
            except Exception as e:  # a half-started service: what it can say, it says
                log.warning("metrics: status unavailable", reason=repr(e))
        if self.settings.metrics_bpf_stats:
            out.extend(self._bpf_samples(base))
        return out

    def _bpf_samples(self, base: dict[str, str]) -> Iterator[Sample]:
        enabled = self._stats_fd is not None or bpfsys.run_time_stats_enabled()
        yield Sample("ocellus_bpf_stats_enabled", base, 1 if enabled else 0)
        names = self._program_names() if self._program_names is not None else {}
        for prog in bpfsys.own_programs():
            labels = {**base, "program": names.get(prog.fd, prog.name), "id": str(prog.id)}
            yield Sample("ocellus_bpf_program_runs_total", labels, prog.run_cnt)
            yield Sample("ocellus_bpf_program_run_seconds_total", labels, prog.run_time_ns / 1e9)

    # -- HTTP ----------------------------------------------------------------------
    async def _serve(self, address: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, address, port).start()
        except OSError as e:
            await runner.cleanup()
            raise MetricsError(f"metrics endpoint {address}:{port}: {e.strerror or e}") from e
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("metrics serving", address=address, port=self.port, service=self.service)

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"service": self.service, "alive": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, checks = self.readiness()
        body = {"service": self.service, "ready": ready, "checks": checks}
        return web.Response(
            status=200 if ready else 503, text=json.dumps(body), content_type="application/json"
        )


async def start_telemetry(settings: ServiceSettings, service: str, nc: Any = None) -> Telemetry:
    """The service's telemetry, serving as the settings say (nothing when off);
    readiness follows ``nc``'s connection."""
    telemetry = Telemetry(settings, service)
    if nc is not None:
        telemetry.watch_nats(nc)
    await telemetry.start()
    return telemetry


class _Collector:
    """prometheus_client custom collector: the samples, grouped in families."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for s in self._telemetry.samples():
            family = FAMILIES[s.name]
            metric = families.get(s.name)
            if metric is None:
                metric = Metric(s.name.removesuffix("_total"), family.help, family.kind)
                families[s.name] = metric
            metric.add_sample(s.name, s.labels, float(s.value))
        return list(families.values())


class _OtlpMetrics:
    """OTLP/gRPC metrics: observable instruments read a snapshot the event
    loop takes every ``metrics_otlp_interval`` seconds, then the SDK exports
    it from a thread (the service's counters are only ever read on the loop)."""

    def __init__(self, telemetry: Telemetry, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        self._telemetry = telemetry
        settings = telemetry.settings
        credentials = None
        if settings.metrics_otlp_ca_file is not None:
            import grpc

            ca = settings.metrics_otlp_ca_file.read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        exporter = OTLPMetricExporter(
            endpoint=endpoint,
            insecure=endpoint.startswith("http://") or None,
            credentials=credentials,
            timeout=max(1.0, settings.metrics_otlp_interval),
        )
        # math.inf: no SDK thread; the loop below decides when to collect.
        self._reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
        resource = Resource(
            {
                "service.name": f"ocellus-{telemetry.service}",
                "service.namespace": "ocellus",
                "host.name": settings.node_name,
            }
        )
        self._provider = MeterProvider(metric_readers=[self._reader], resource=resource)
        meter = self._provider.get_meter("ocellus")
        self._snapshot: dict[str, list[Sample]] = {}
        for family in FAMILIES.values():
            name, callback = family.name.removesuffix("_total"), self._callback(family.name)
            if family.kind == "counter":
                meter.create_observable_counter(name, callbacks=[callback], description=family.help)
            else:
                meter.create_observable_gauge(name, callbacks=[callback], description=family.help)
        self._task: asyncio.Task[None] | None = None
        self.exports = 0

    def _callback(self, name: str) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        def observe(_: Any) -> Iterable[Any]:
            return [Observation(s.value, s.labels) for s in self._snapshot.get(name, [])]

        return observe

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="otlp-metrics")
        log.info("OTLP metrics exporting", endpoint=self._telemetry.settings.metrics_otlp_endpoint)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._telemetry.settings.metrics_otlp_interval)
            await self._export()

    async def _export(self) -> None:
        snapshot: dict[str, list[Sample]] = {}
        for s in self._telemetry.samples():
            snapshot.setdefault(s.name, []).append(s)
        self._snapshot = snapshot
        try:  # the SDK logs a failed export itself and tries again next time
            await asyncio.to_thread(self._reader.collect)
            self.exports += 1
        except Exception as e:
            log.warning("OTLP metrics export failed", reason=repr(e))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._export()  # the last numbers
        timeout = self._telemetry.settings.drain_timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.to_thread(self._provider.shutdown, timeout_millis=timeout * 1000), timeout
            )
