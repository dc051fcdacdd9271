"""`python -m bnsweep`: the same as the `bnsweep` command."""

import sys

from bnsweep.cli import main

sys.exit(main())
