"""Clean and robust accuracy per epoch per setting (band: std over seeds), as PNG and PDF.

    python analysis/training_curves.py results/demo training.png    # also writes training.pdf
    python analysis/training_curves.py --smoke-test                 # on a small generated sweep
"""

import sys
import tempfile

from bnsweep import results
from bnsweep.results import figures


def main(path: str, output: str) -> None:
    for saved in figures.save_figure(figures.training_curves(results.history(path)), output):
        print(saved)


if __name__ == "__main__":
    if sys.argv[1:] == ["--smoke-test"]:
        from bnsweep.testing import write_example_sweep

        tmp = tempfile.mkdtemp()
        main(str(write_example_sweep(tmp)), f"{tmp}/training.png")
    else:
        main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "training_curves.png")
