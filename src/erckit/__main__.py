"""`python -m erckit` works like the `erckit` console script."""

import sys

from erckit.cli import main

if __name__ == "__main__":  # engines that start worker processes (vLLM) re-import the main module
    sys.exit(main())
