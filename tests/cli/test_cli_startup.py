"""The CLI's own list of event kinds is the schema's, and `ocellus policy`
does not import the event models (its start-up is most of `policy apply`)."""

from __future__ import annotations

import subprocess
import sys

from schemas.events import EVENT_KINDS
from services.cli import main
from tests.conftest import REPO


def test_cli_event_kinds_are_the_schemas() -> None:
    assert main.EVENT_KINDS == EVENT_KINDS


def test_policy_commands_do_not_import_the_event_models() -> None:
    code = (
        "import sys; from services.cli import main; "
        "main._parser().parse_args(['policy', 'list']); "
        "print('schemas.events' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "False"
