"""``python -m benchmarks``: run the scenarios, print the table, write the raw figures."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
