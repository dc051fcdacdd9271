"""`python -m bnsweep.bench`: see bnsweep/bench/__init__.py and --help."""

import sys

from bnsweep.bench.runner import main

main(sys.argv[1:])
