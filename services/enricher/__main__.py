"""python -m services.enricher"""

import sys

from services.common.lifecycle import service_main
from services.enricher.service import run
from services.enricher.settings import Settings


def main(settings: Settings | None = None) -> int:
    return service_main("enricher", lambda: settings or Settings(), run)


if __name__ == "__main__":
    sys.exit(main())
