"""The study's figure: clean and robust accuracy per trainable set, one panel per init, as grouped
bars (error bars: std over seeds), saved as PNG and PDF.

    python analysis/study_figure.py results/demo study.png    # also writes study.pdf
    python analysis/study_figure.py --smoke-test              # on a small generated sweep
"""

import sys
import tempfile

from bnsweep import results
from bnsweep.results import figures


def main(path: str, output: str) -> None:
    df = results.load(path)
    for saved in figures.save_figure(figures.study_figure(df), output):
        print(saved)


if __name__ == "__main__":
    if sys.argv[1:] == ["--smoke-test"]:
        from bnsweep.testing import write_example_sweep

        tmp = tempfile.mkdtemp()
        main(str(write_example_sweep(tmp)), f"{tmp}/study.png")
    else:
        main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "study.png")
