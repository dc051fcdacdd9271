"""The study's comparison table of a sweep (Markdown, then LaTeX), from bnsweep's public API.

    python analysis/paper_table.py results/demo
    python analysis/paper_table.py --smoke-test     # on a small generated sweep
"""

import sys
import tempfile

from bnsweep import results
from bnsweep.results import tables


def main(path: str) -> None:
    table = tables.summarize(results.load(path))
    print(tables.to_markdown(table))
    print(tables.to_latex(table))


if __name__ == "__main__":
    if sys.argv[1:] == ["--smoke-test"]:
        from bnsweep.testing import write_example_sweep

        main(str(write_example_sweep(tempfile.mkdtemp())))
    else:
        main(sys.argv[1])
