"""python -m services.enricher (and `ocellus enricher`)"""

import sys

from services.common.lifecycle import service_main
from services.enricher.service import run, tune_gc
from services.enricher.settings import Settings


def main(settings: Settings | None = None) -> int:
    tune_gc()  # the process's own setting (tests calling run() keep Python's)
    return service_main("enricher", lambda: settings or Settings(), run)


if __name__ == "__main__":
    sys.exit(main())
