"""The `ocellus` command (services/cli/main.py)."""

from services.cli.startup import import_nats

# First, before any module of this package imports nats-py: see startup.py.
import_nats()
