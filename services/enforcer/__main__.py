"""python -m services.enforcer"""

import sys

from services.common.lifecycle import service_main
from services.enforcer.service import run
from services.enforcer.settings import Settings


def main(settings: Settings | None = None) -> int:
    return service_main("enforcer", lambda: settings or Settings(), run)


if __name__ == "__main__":
    sys.exit(main())
