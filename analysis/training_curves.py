"""Clean and robust accuracy per epoch per setting (band: std over seeds), as PNG and PDF.

    python analysis/training_curves.py results/demo -o training.png   # also writes training.pdf
"""

from bnsweep import figures

if __name__ == "__main__":
    raise SystemExit(figures.script_main(None, doc=__doc__, name="training_curves", per_epoch=True,
                                         plot=figures.training_curves))
