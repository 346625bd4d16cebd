"""`python -m erckit` works like the `erckit` console script."""

import sys

from erckit.cli import main

sys.exit(main())
