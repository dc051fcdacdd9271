"""The study's comparison table: clean and robust accuracy per setting, mean ± std over seeds.

    python analysis/paper_table.py results/demo [--format markdown|latex|both] [-o table.md]

A setting is every trial key except the seed and per-trial plumbing
(bnsweep.tables.NOT_SETTING_KEYS); only terminated trials count unless --all-statuses.
"""

import argparse
import sys

from bnsweep import results, tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="sweep or experiment directories (or URIs)")
    parser.add_argument("--format", choices=("markdown", "latex", "both"), default="both")
    parser.add_argument("--where", help="pandas query applied to the trials first")
    parser.add_argument("--all-statuses", action="store_true",
                        help="also count running, failed and diverged trials")
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    try:
        df = results.select(results.load(args.paths), where=args.where)
    except (results.NoExperimentError, results.UsageError) as exc:
        print(f"paper_table: error: {exc}", file=sys.stderr)
        return 2
    statuses = sorted(set(df["status"])) if args.all_statuses else ("terminated",)
    table = tables.summarize(df, statuses=statuses)
    parts = []
    if args.format in ("markdown", "both"):
        parts.append(tables.to_markdown(table))
    if args.format in ("latex", "both"):
        parts.append(tables.to_latex(table))
    text = "\n".join(parts)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
