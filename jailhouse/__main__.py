"""Run ``jhctl`` as ``python -m jailhouse``."""

import sys

from jailhouse.cli import main

if __name__ == "__main__":
    sys.exit(main())
