"""Robust accuracy against epsilon per setting (error bars: std over seeds), as PNG and PDF.

    python analysis/robustness_curves.py results/demo -o curves.png   # also writes curves.pdf
"""

from bnsweep import figures

if __name__ == "__main__":
    raise SystemExit(figures.script_main(None, doc=__doc__, name="robustness_curves", per_epoch=False,
                                         plot=figures.robustness_curves))
