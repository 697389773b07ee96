"""The `ocellus` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from pydantic import ValidationError

from schemas import subjects
from services.cli.embedded_nats import with_embedded_nats
from services.cli.policy import add_policy_parser, run_offline, run_policy
from services.cli.settings import Settings
from services.cli.status import add_status_parser, run_status
from services.common import bus
from services.common.errors import OcellusError
from services.common.lifecycle import stop_on_signals
from services.common.logging import configure_logging, get_logger
from services.common.settings import ConfigFileError

if TYPE_CHECKING:
    from services.cli.events import EventFilter, EventPrinter

# The event kinds `events --type` takes (schemas.events.EVENT_KINDS, checked by
# a test): spelled here so that `ocellus policy ...` does not pay for importing
# the event models at start-up (the CLI's start-up is most of `policy apply`).
EVENT_KINDS = (
    subjects.PROCESS_EXEC,
    subjects.PROCESS_EXIT,
    subjects.PROCESS_KPROBE,
    subjects.PROCESS_TRACEPOINT,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocellus", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--nats-url", help="NATS URL (env OCELLUS_NATS_URL)")
    common.add_argument("--node-name", help="node name (env OCELLUS_NODE_NAME)")
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    # The commands people run: they find a running `up`'s NATS in its state directory.
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument(
        "--state-dir",
        help="`up`'s state directory: its NATS data, URL and password (env OCELLUS_STATE_DIR)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[client], help="embedded NATS + all services + live events")
    up.add_argument("-o", "--output", choices=["compact", "json"])
    up.add_argument(
        "--exporter-config",
        type=Path,
        metavar="FILE",
        help="also run the exporter with this config (e.g. deploy/exporter.yaml)",
    )
    up.add_argument(
        "--policy-dir",
        type=Path,
        metavar="DIR",
        help="tracing policies the enforcer applies and watches (e.g. deploy/policies)",
    )

    events = sub.add_parser("events", parents=[client], help="print events from a running bus")
    events.add_argument("-o", "--output", choices=["compact", "json"])
    events.add_argument(
        "--type",
        action="append",
        default=[],
        choices=EVENT_KINDS,
        metavar="TYPE",
        help=f"{', '.join(EVENT_KINDS)} (repeatable)",
    )
    events.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME",
        help="events of this tracing policy (repeatable)",
    )
    events.add_argument("--binary", help="regular expression the binary must match")
    events.add_argument("--namespace", help="Kubernetes namespace")
    events.add_argument("--pod", help="regular expression the pod name must match")
    events.add_argument("--container", help="container name or id prefix")
    events.add_argument(
        "--file",
        metavar="PATH",
        help="read JSON-lines events from PATH ('-': stdin) instead of the bus",
    )

    sub.add_parser("sensor", parents=[common], help="run the sensor (root)")
    enforcer = sub.add_parser("enforcer", parents=[common], help="run the enforcer (CAP_BPF)")
    enforcer.add_argument("--policy-dir", type=Path, metavar="DIR", help="policies to watch")
    sub.add_parser("enricher", parents=[common], help="run the enricher")
    exporter = sub.add_parser("exporter", parents=[common], help="run the exporter")
    exporter.add_argument(
        "--exporter-config",
        dest="config_file",
        type=Path,
        metavar="FILE",
        help="sinks, filters, limits (env OCELLUS_EXPORTER_CONFIG_FILE)",
    )
    add_policy_parser(sub, client)
    add_status_parser(sub, client)
    return parser


def _overrides(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """Flags given on the command line, as settings keyword arguments."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def main(argv: list[str] | None = None) -> int:
    # What start-up imported lives until exit: frozen, no collection walks it
    # again, neither during the command nor the full one at exit (~40 ms of a
    # `policy apply`: pydantic's schemas are many small objects).
    gc.freeze()
    args = _parser().parse_args(argv)
    flags = _overrides(args, "nats_url", "node_name", "log_level", "output", "state_dir")
    try:
        if args.command == "sensor":
            from services.sensor.__main__ import main as sensor_main
            from services.sensor.settings import Settings as SensorSettings

            return sensor_main(SensorSettings(**flags))
        if args.command == "enforcer":
            from services.enforcer.__main__ import main as enforcer_main
            from services.enforcer.settings import Settings as EnforcerSettings

            return enforcer_main(EnforcerSettings(**flags, **_overrides(args, "policy_dir")))
        if args.command == "enricher":
            from services.enricher.__main__ import main as enricher_main
            from services.enricher.settings import Settings as EnricherSettings

            return enricher_main(EnricherSettings(**flags))
        if args.command == "exporter":
            from services.exporter.__main__ import main as exporter_main
            from services.exporter.settings import Settings as ExporterSettings

            return exporter_main(ExporterSettings(**flags, **_overrides(args, "config_file")))
        settings = Settings(**flags)
        if args.command != "up":  # up starts its own
            settings = with_embedded_nats(settings, settings.state_dir)
    except (ValidationError, ConfigFileError) as e:  # ConfigFileError: OCELLUS_CONFIG's file
        print(f"ocellus: invalid settings:\n{e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    log = get_logger("ocellus")
    try:
        if args.command == "up":
            from services.cli.up import run_up

            # An explicit URL (flag, env or config file) means "use that NATS".
            url = settings.nats_url if "nats_url" in settings.model_fields_set else None
            return asyncio.run(
                run_up(
                    settings,
                    nats_url=url,
                    exporter_config=args.exporter_config,
                    policy_dir=args.policy_dir,
                )
            )
        if args.command == "events":
            from services.cli.events import EventPrinter

            printer = EventPrinter(output=settings.output, event_filter=_filter(args))
            if args.file is not None:
                return _events_from_file(args.file, printer)
            return asyncio.run(_events(settings, printer))
        if args.command == "policy":
            offline = run_offline(args)
            if offline is not None:
                return offline
            return asyncio.run(run_policy(settings, args))
        if args.command == "status":
            return asyncio.run(run_status(settings, args))
    except OcellusError as e:
        log.error(f"ocellus {args.command} failed", reason=str(e))
        return 1
    except nats.js.errors.ServiceUnavailableError:
        log.error(f"ocellus {args.command} failed", url=settings.nats_url,
                  reason="this NATS has no JetStream (nats-server -js)")  # fmt: skip
        return 1
    except nats.errors.Error as e:  # NATS answered, not as the command needs
        log.error(f"ocellus {args.command} failed", reason=str(e) or type(e).__name__)
        return 1
    except re.error as e:
        print(f"ocellus: bad regular expression: {e}", file=sys.stderr)
        return 2
    return 2


def _filter(args: argparse.Namespace) -> EventFilter:
    from services.cli.events import EventFilter

    return EventFilter(
        types=frozenset(args.type),
        binary=re.compile(args.binary) if args.binary else None,
        namespace=args.namespace,
        pod=re.compile(args.pod) if args.pod else None,
        container=args.container,
        policies=frozenset(args.policy),
    )


def _events_from_file(path: str, printer: EventPrinter) -> int:
    if path == "-":
        printer.print_lines(sys.stdin)
    else:
        try:
            with open(path, encoding="utf-8") as f:  # noqa: PTH123 (a plain file read)
                printer.print_lines(f)
        except OSError as e:
            print(f"ocellus: {path}: {e.strerror}", file=sys.stderr)
            return 1
    return 1 if printer.malformed else 0


async def _events(settings: Settings, printer: EventPrinter) -> int:
    from services.cli import connection

    stop = stop_on_signals()
    refused = connection.Refused(stop)
    nc = await connection.connect(settings, "events", refused)
    try:
        from services.cli.events import run_events

        await run_events(nc, printer, stop)
    finally:
        await bus.drain(nc, settings.drain_timeout)
    return refused.report("events", settings.nats_url) if refused.reason else 0


if __name__ == "__main__":
    sys.exit(main())
