"""`python -m bnsweep.cli`: the `bnsweep` command."""

import sys

from bnsweep.cli import main

sys.exit(main())
