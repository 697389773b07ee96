"""python -m services.enricher"""

import asyncio
import sys

from pydantic import ValidationError

from services.common.errors import OcellusError
from services.common.logging import configure_logging, get_logger
from services.enricher.service import run
from services.enricher.settings import Settings


def main(settings: Settings | None = None) -> int:
    try:
        settings = settings or Settings()
    except ValidationError as e:
        print(f"enricher: invalid settings:\n{e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(run(settings))
    except OcellusError as e:
        get_logger("ocellus.enricher").error("enricher cannot run", reason=str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
