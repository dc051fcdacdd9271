"""Robust accuracy against epsilon per setting (error bars: std over seeds), as PNG and PDF.

    python analysis/robustness_curves.py results/demo -o curves.png   # also writes curves.pdf
"""

import argparse
import sys

from bnsweep import figures, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="sweep or experiment directories (or URIs)")
    parser.add_argument("--where", help="pandas query applied to the trials first")
    parser.add_argument("-o", "--output", default="robustness_curves.png",
                        help="output file; the PDF goes beside it (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        df = results.select(results.load(args.paths), where=args.where)
        paths = figures.save_figure(figures.robustness_curves(df), args.output)
    except (results.NoExperimentError, results.UsageError, ValueError) as exc:
        print(f"robustness_curves: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
