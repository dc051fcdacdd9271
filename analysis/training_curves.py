"""Clean and robust accuracy per epoch per setting (band: std over seeds), as PNG and PDF.

    python analysis/training_curves.py results/demo -o training.png   # also writes training.pdf
"""

import argparse
import sys

from bnsweep import figures, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="sweep or experiment directories (or URIs)")
    parser.add_argument("--where", help="pandas query applied to the per-epoch rows first")
    parser.add_argument("-o", "--output", default="training_curves.png",
                        help="output file; the PDF goes beside it (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        hist = results.select(results.history(args.paths), where=args.where)
        paths = figures.save_figure(figures.training_curves(hist), args.output)
    except (results.NoExperimentError, results.UsageError, ValueError) as exc:
        print(f"training_curves: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
