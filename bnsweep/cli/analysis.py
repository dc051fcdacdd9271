"""Reading what sweeps wrote: `bnsweep results` (one row per trial, or per epoch), `report`, `table`,
`plot`, and the evidence that travels: `record` (a run record to commit) and `quote` (the numbers a
Markdown file quotes from records, kept equal to them)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from bnsweep.cli.base import PATHS_HELP, comma_list, number, writing
from bnsweep.core.choices import DONE
from bnsweep.errors import UsageError
from bnsweep.files import output_path

PLOTS = ("study", "robustness", "training")


# -- results and report ------------------------------------------------------------------------

def add_results(sub) -> None:
    from bnsweep.results.formats import FORMATS

    p = sub.add_parser("results", help="query sweep results as a table (one row per trial)",
                       description="Load Ray Tune experiments (a sweep directory, a stage directory or a URI) "
                                   "into one row per trial, filter, select columns, sort, and print or save.")
    p.add_argument("paths", nargs="+", help=PATHS_HELP)
    p.add_argument("--where", help="filter, e.g. \"stage == 'adv' and trainable == 'bn'\"")
    p.add_argument("--columns", help="comma-separated columns to show, e.g. trainable,seed,robust_acc")
    p.add_argument("--sort", help="comma-separated columns to sort by")
    p.add_argument("--desc", action="store_true", help="sort in descending order")
    p.add_argument("--history", action="store_true", help="one row per trial and epoch")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from the -o suffix, else table)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results.formats import SUFFIX_FORMAT

    fmt = args.format or SUFFIX_FORMAT.get(os.path.splitext(args.output or "")[1], "table")
    if args.output:
        output_path(args.output, "-o", directory=False)
    df = (results.history if args.history else results.load)(args.paths)
    df = results.select(df, args.where, comma_list(args.columns), comma_list(args.sort), args.desc)
    with writing("-o", args.output):
        results.write_frame(df, fmt, args.output)
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="write a Markdown report with the comparison table and figures",
                       description="Summarise sweep results: trials by status, best trial per stage, the "
                                   "comparison table, robustness and training curves, failed trials and "
                                   "sanity checks of the evaluation.")
    p.add_argument("paths", nargs="+", help=PATHS_HELP)
    p.add_argument("-o", "--output", default="report", help="output directory (default: report)")
    p.add_argument("--metric", help="metric for 'best trial' (default: the sweep file's, else robust_acc)")
    p.add_argument("--mode", choices=("max", "min"), help="max or min (default: the sweep file's)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    output = output_path(args.output, "-o", directory=True)
    from bnsweep.results.report import write_report  # matplotlib: only for a command worth running

    with writing("-o", output):
        print(write_report(args.paths, output, args.metric, args.mode))
    return 0


# -- table -------------------------------------------------------------------------------------

def add_table(sub) -> None:
    p = sub.add_parser("table", help="the comparison table: mean ± std over seeds per setting",
                       description="Trials grouped by setting (every trial key except the seed and per-trial "
                                   "plumbing), clean and robust accuracy as mean ± std over seeds; each robust "
                                   "column names its radius.")
    p.add_argument("paths", nargs="+", help=PATHS_HELP)
    p.add_argument("--format", choices=("markdown", "latex", "both"), default="markdown")
    p.add_argument("--where", help="filter the trials first")
    p.add_argument("--all-statuses", action="store_true", help="also count running, failed and diverged trials")
    p.add_argument("--eps-255", type=number(float, 0, 255, "radii in 1/255"), nargs="+", metavar="E",
                   help="PGD robust accuracy at these radii in 1/255, one column each (default: the "
                        "training radius of the adversarially trained trials)")
    versus = p.add_mutually_exclusive_group()
    versus.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="also the difference of means A - B over seeds with a 95%% Welch interval, where A "
                             "and B are --where expressions that each select one setting, e.g. \"trainable == "
                             "'bn' and init != 'random'\" \"trainable == 'fc' and init != 'random'\"")
    versus.add_argument("--reference", metavar="R", help="also every other setting against the one R selects "
                                                          "(as --compare)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_table)


def _differences(df, args: argparse.Namespace, statuses) -> str:
    """--compare A B, or --reference R, as a Markdown table."""
    from bnsweep.results import compare

    if args.compare:
        a, b = args.compare
        diffs = compare.compare(df, a, b, statuses=statuses, radii=args.eps_255)
    else:
        diffs = compare.against_reference(df, args.reference, statuses=statuses, radii=args.eps_255)
    return compare.to_markdown(diffs)


def cmd_table(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results import tables

    output = args.output and output_path(args.output, "-o", directory=False)
    df = results.select(results.load(args.paths), where=args.where)
    statuses = sorted(set(df["status"])) if args.all_statuses else DONE
    table = tables.summarize(df, statuses=statuses, radii=args.eps_255)
    parts = []
    if args.format in ("markdown", "both"):
        parts.append(tables.to_markdown(table))
    if args.format in ("latex", "both"):
        parts.append(tables.to_latex(table))
    if args.compare or args.reference:
        parts.append(_differences(df, args, statuses))
    text = "\n".join(parts)
    if not output:
        sys.stdout.write(text)
        return 0
    with writing("-o", output):
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with open(output, "w") as fh:
            fh.write(text)
    return 0


# -- plot --------------------------------------------------------------------------------------

def add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw the study's bars, robustness or training curves (PNG and PDF)",
                       description="study: clean and robust accuracy per trainable set, one panel per init "
                                   "(grouped bars, error bars: std over seeds; adversarially trained trials); "
                                   "robustness: robust accuracy against epsilon per setting; training: clean "
                                   "and robust accuracy per epoch per setting.")
    p.add_argument("kind", choices=PLOTS)
    p.add_argument("paths", nargs="+", help=PATHS_HELP)
    p.add_argument("--where", help="filter the trials (or per-epoch rows) first")
    p.add_argument("-o", "--output", help="output PNG; the PDF goes beside it (default: KIND.png)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results import figures

    output = args.output or f"{args.kind}.png"
    for suffix in (".png", ".pdf"):  # the PDF goes beside the PNG
        output_path(os.path.splitext(output)[0] + suffix, "-o", directory=False)
    per_epoch = args.kind == "training"
    frame = (results.history if per_epoch else results.load)(args.paths)
    draws: dict[str, Callable[..., Any]] = {"study": figures.study_figure, "robustness": figures.robustness_curves,
                                            "training": figures.training_curves}
    try:
        fig = draws[args.kind](results.select(frame, where=args.where))
    except ValueError as err:  # nothing to plot
        raise UsageError(f"{args.kind}: {err}") from None
    with writing("-o", output):
        print("\n".join(map(str, figures.save_figure(fig, output))))
    return 0


# -- record and quote --------------------------------------------------------------------------

def add_record(sub) -> None:
    p = sub.add_parser("record", help="make a run record of an experiment: small, self-contained, to commit",
                       description="Write a record directory: the sweep file as run and its overrides, "
                                   "trials.csv (one row per trial) and epochs.csv (one per trial and epoch), "
                                   "record.json (the command that started the sweep, the machines and code that "
                                   "ran its trials, wall times) and the report of the record itself. No "
                                   "checkpoints, no event files. table, plot, report and results read a record "
                                   "as they read the experiment.")
    p.add_argument("experiment", help="the experiment directory (or a URI), e.g. results/demo")
    p.add_argument("-o", "--output", required=True,
                   help="the record directory, e.g. docs/runs/demo (new, empty, or a record it replaces)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="record even when bnsweep (here, or where the trials ran) had uncommitted changes; "
                        "the record and its report then say DIRTY")
    p.set_defaults(func=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    from bnsweep.results.record import write_record

    output = output_path(args.output, "-o", directory=True)
    path = write_record(args.experiment, output, allow_dirty=args.allow_dirty)
    size = sum(os.path.getsize(os.path.join(output, f)) for f in os.listdir(output))
    print(f"{path} (record of {args.experiment}: {len(os.listdir(output))} files, {size / 1e3:.0f} kB)")
    with open(path) as fh:
        if json.load(fh)["dirty"]:
            print("bnsweep: warning: DIRTY record: code with uncommitted changes ran the trials or made the "
                  "record, so its numbers cannot be traced to a commit (record.json and report.md say so)",
                  file=sys.stderr)
    return 0


def add_quote(sub) -> None:
    p = sub.add_parser("quote", help="rewrite the numbers a Markdown file quotes from run records",
                       description="Render every <!-- record: PATH KIND ... --> ... <!-- /record --> block of the "
                                   "files from its record (PATH relative to the file) and write it in. Kinds of a "
                                   "run record: table, compare, interval, cell, timing, costs, wall, provenance; of a "
                                   "benchmark record: bench PART, bench header (see bnsweep/results/quote.py).")
    p.add_argument("files", nargs="+", help="Markdown files, e.g. docs/studies/demo.md")
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 when a block differs from its record")
    p.set_defaults(func=cmd_quote)


def cmd_quote(args: argparse.Namespace) -> int:
    from bnsweep.results import quote

    stale = 0
    for path in args.files:
        changed = quote.rewrite(path, check=args.check)
        stale += len(changed)
        for spec in changed:
            print(f"{path}: {'differs from its record' if args.check else 'rewrote'}: {spec}")
    if args.check and stale:
        print(f"bnsweep: {stale} quoted block(s) differ from their records; rewrite them with: "
              f"bnsweep quote {' '.join(args.files)}", file=sys.stderr)
        return 1
    return 0


COMMANDS = (add_results, add_report, add_table, add_plot, add_record, add_quote)
