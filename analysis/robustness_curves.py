"""Robust accuracy against epsilon per setting (error bars: std over seeds), as PNG and PDF.

    python analysis/robustness_curves.py results/demo curves.png    # also writes curves.pdf
    python analysis/robustness_curves.py --smoke-test               # on a small generated sweep
"""

import sys
import tempfile

from bnsweep import results
from bnsweep.results import figures


def main(path: str, output: str) -> None:
    df = results.load(path)
    for saved in figures.save_figure(figures.robustness_curves(df), output):
        print(saved)


if __name__ == "__main__":
    if sys.argv[1:] == ["--smoke-test"]:
        from bnsweep.testing import write_example_sweep

        tmp = tempfile.mkdtemp()
        main(str(write_example_sweep(tmp)), f"{tmp}/curves.png")
    else:
        main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "robustness_curves.png")
