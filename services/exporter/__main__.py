"""python -m services.exporter (needs OCELLUS_EXPORTER_CONFIG_FILE)"""

import sys

from services.common.lifecycle import service_main
from services.exporter.service import run
from services.exporter.settings import Settings


def main(settings: Settings | None = None) -> int:
    # own_process: the process is the exporter's alone, so it may tune its GC.
    return service_main("exporter", lambda: settings or Settings(), run, own_process=True)


if __name__ == "__main__":
    sys.exit(main())
