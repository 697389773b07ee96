"""python -m services.sensor"""

import sys

from services.common.lifecycle import service_main
from services.sensor.service import run
from services.sensor.settings import Settings


def main(settings: Settings | None = None) -> int:
    return service_main("sensor", lambda: settings or Settings(), run)


if __name__ == "__main__":
    sys.exit(main())
