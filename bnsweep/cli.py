"""The `bnsweep` command: train, eval, validate, run, resume, results, report, table, plot.

Every subcommand lives here; the layers below raise `errors.BadInput` for anything the user can
fix, and `main` prints it as one line (`bnsweep: error: ...`) and exits with status 2, before
anything heavy (data, Ray) starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from bnsweep.errors import BadInput, ConfigError, UsageError

EXIT_BAD_INPUT = 2


# -- train -------------------------------------------------------------------------------------

def _trial_config(args: argparse.Namespace, base: dict[str, Any] | None = None):
    """Trial keys from `base` (a resumed run's saved config), then --config, then --set."""
    from bnsweep.core.config import load_yaml, make_config, parse_overrides

    values: dict[str, Any] = dict(base or {})
    if args.config:
        loaded = load_yaml(args.config)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("file", args.config, "a YAML mapping of trial keys")
        values.update(loaded or {})
    values.update(parse_overrides(args.set or []))
    cfg = make_config(values, where=args.config or "")
    if cfg.dataset == "folder":
        from bnsweep.core import folder

        folder.check(cfg.data_dir, cfg.n_train, cfg.n_test, where=args.config or "")
    return cfg


def _format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if key in ("n_trainable_params", "n_params"):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bnsweep.core import checkpoints
    from bnsweep.core.train import fit

    out = os.path.abspath(args.out)
    metrics_file = os.path.join(out, "metrics.jsonl")
    checkpoint = os.path.join(out, checkpoints.FILENAME)
    if os.path.exists(metrics_file) and not args.resume:
        _trial_config(args)  # bad keys are reported first
        raise UsageError(f"--out: {out!r} already holds a run; allowed: a new directory, or --resume to continue it")
    if args.resume and not os.path.exists(checkpoint):
        raise UsageError(f"--resume: {out!r} holds no {checkpoints.FILENAME}; allowed: a directory of an earlier run")
    # A resumed run keeps its saved config (--config/--set may still change keys, e.g. epochs).
    cfg = _trial_config(args, checkpoints.load(checkpoint, key="resume")["config"] if args.resume else None)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg.to_dict(), fh, indent=2)

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        tqdm.write(_format_metrics(metrics))
        with open(metrics_file, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if checkpoint_dir:
            shutil.copyfile(os.path.join(checkpoint_dir, checkpoints.FILENAME), checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)

    def progress(batches, total: int, desc: str):
        return tqdm(batches, total=total, desc=desc, leave=False, file=sys.stderr)

    final = fit(cfg, report, resume=checkpoint if args.resume else None, progress=progress)
    with open(os.path.join(out, "final.json"), "w") as fh:
        json.dump(final, fh, indent=2)
    if final.get("diverged"):
        print(f"bnsweep: trial diverged: {final['diverged_reason']}", file=sys.stderr)
        return 1
    print(f"wrote {out}/{{config.json, metrics.jsonl, final.json, {checkpoints.FILENAME}}}")
    return 0


# -- eval --------------------------------------------------------------------------------------

def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from bnsweep.core import checkpoints
    from bnsweep.core.config import make_config
    from bnsweep.core.evaluate import eps_metric, robust_accuracy
    from bnsweep.core.train import Trial

    state = checkpoints.load(args.checkpoint, key="checkpoint")
    saved = {k: v for k, v in state["config"].items() if k not in ("init", "init_checkpoint")}
    cfg = make_config({**saved, "device": args.device, "eval_n": args.n, "eval_eps_255": args.eps_255,
                       "eval_steps": args.steps, "eval_restarts": args.restarts})
    trial = Trial(dataclasses.replace(cfg, init="random"))
    checkpoints.load_weights(trial.model, state, {**cfg.to_dict(), "init": args.checkpoint}, key="checkpoint")
    x, y = trial.eval_split()
    out = robust_accuracy(trial.model, x, y, attack=args.attack, eps_255=cfg.eval_eps_255, steps=cfg.eval_steps,
                          step_255=0, restarts=cfg.eval_restarts, seed=cfg.seed)
    print(f"{args.checkpoint}: {cfg.model} on {cfg.dataset}, trainable={cfg.trainable}, n={len(y)}, "
          f"attack={args.attack}" + (f" (steps {args.steps}, restarts {args.restarts})" if args.attack == "pgd" else ""))
    print(f"{'eps_255':>8}  {'clean_acc':>9}  {'robust_acc':>10}")
    for eps in sorted(cfg.eval_eps_255):
        print(f"{eps:>8g}  {out['clean_acc']:>9.4f}  {out[eps_metric(eps)]:>10.4f}")
    return 0


# -- sweeps ------------------------------------------------------------------------------------

def _load_sweep(args: argparse.Namespace):
    from bnsweep.core.config import parse_overrides
    from bnsweep.sweep.spec import load_sweep

    return load_sweep(args.sweep, parse_overrides(args.set or []))


def cmd_validate(args: argparse.Namespace) -> int:
    from bnsweep.sweep.driver import format_overrides

    sweep = _load_sweep(args)
    total = 0
    print(f"sweep {sweep.name!r} ({args.sweep}): {len(sweep.stages)} stage(s)"
          + (f"; --set in every stage: {format_overrides(sweep.overrides)}" if sweep.overrides else ""))
    for stage in sweep.stages:
        total += stage.num_trials
        dims = ", ".join(f"{k} x{len(v)}" for k, v in stage.grid.items()) or "-"
        searched = ", ".join(f"{k} ~ {next(iter(v))}" for k, v in stage.search.items())
        source = f", starts from stage {stage.from_stage!r} (match {', '.join(stage.match)})" if stage.from_stage else ""
        res = stage.resources
        print(f"  stage {stage.name!r}: {stage.num_trials} trial(s); grid: {dims}"
              + (f"; search ({stage.search_alg}): {searched}" if searched else "")
              + f"; {stage.base['epochs']} epoch(s); resources per trial: cpu {res['cpu']:g}, gpu {res['gpu']:g}"
              + ("; scheduler: asha" if isinstance(stage.scheduler, dict) else "") + source)
    print(f"{total} trial(s) in all")
    return 0


def _summary(root: str, stage: str) -> str:
    from bnsweep import results
    from bnsweep.results import tables

    df = results.load(root)
    df = df[(df["stage"] == stage) & (df["status"] == "terminated")]
    if df.empty:
        return f"(no finished trials in stage {stage!r})"
    metrics = [m for m in ("final_clean_acc", "final_robust_acc") if m in df and df[m].notna().any()]
    return tables.to_markdown(tables.summarize(df, metrics or ("clean_acc", "robust_acc")))


def _run(sweep, root: str, *, resume: bool, address: str | None) -> int:
    import time

    from bnsweep.sweep.driver import SweepFailed, execute

    start = time.perf_counter()
    try:
        execute(sweep, root, resume=resume, address=address)
    except SweepFailed as err:
        print(f"bnsweep: {err}", file=sys.stderr)
        return 1
    last = sweep.stages[-1].name
    print(f"\nsweep {sweep.name!r} finished in {time.perf_counter() - start:.0f} s; results in {root}")
    print(f"stage {last!r}, mean over seeds (accuracies in %):\n{_summary(root, last)}")
    print(f"\ntensorboard --logdir {root}    |    bnsweep results {root}    |    bnsweep report {root} -o report/")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bnsweep.sweep.storage import sweep_dir

    sweep = _load_sweep(args)
    root = sweep_dir(args.storage, args.name or sweep.name)
    return _run(sweep, root, resume=args.resume, address=args.address)


def cmd_resume(args: argparse.Namespace) -> int:
    from bnsweep.sweep.driver import resume_sweep

    root = args.dir if "://" in args.dir else os.path.abspath(args.dir)
    return _run(resume_sweep(root), root, resume=True, address=args.address)


# -- results -----------------------------------------------------------------------------------

def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def cmd_results(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results.formats import SUFFIX_FORMAT

    fmt = args.format or SUFFIX_FORMAT.get(os.path.splitext(args.output or "")[1], "table")
    df = (results.history if args.history else results.load)(args.paths)
    df = results.select(df, args.where, _split(args.columns), _split(args.sort), args.desc)
    results.write_frame(df, fmt, args.output)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bnsweep.results.report import write_report

    print(write_report(args.paths, args.output, args.metric, args.mode))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results import tables

    df = results.select(results.load(args.paths), where=args.where)
    statuses = sorted(set(df["status"])) if args.all_statuses else ("terminated",)
    table = tables.summarize(df, statuses=statuses)
    parts = []
    if args.format in ("markdown", "both"):
        parts.append(tables.to_markdown(table))
    if args.format in ("latex", "both"):
        parts.append(tables.to_latex(table))
    text = "\n".join(parts)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


PLOTS = ("robustness", "training")


def cmd_plot(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results import figures

    per_epoch = args.kind == "training"
    frame = (results.history if per_epoch else results.load)(args.paths)
    draw = figures.training_curves if per_epoch else figures.robustness_curves
    try:
        fig = draw(results.select(frame, where=args.where))
    except ValueError as err:  # nothing to plot
        raise UsageError(f"{args.kind}: {err}") from None
    print("\n".join(map(str, figures.save_figure(fig, args.output or f"{args.kind}.png"))))
    return 0


# -- parser ------------------------------------------------------------------------------------

SET_HELP = ("override trial keys in every stage, e.g. data_dir=/data/cifar10-jpeg.tar.gz epochs=2 (keys a "
            "stage's grid: or search: varies are refused)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run one trial without Ray (debugging one configuration)",
                       description="Train one trial; writes config.json, metrics.jsonl, final.json and "
                                   "checkpoint.pt into --out.")
    p.add_argument("--config", help="YAML file of trial keys (see the README's table of trial keys)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override trial keys, e.g. trainable=bn epochs=3")
    p.add_argument("--out", default="runs/train", help="output directory (default: runs/train)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: clean and robust accuracy",
                       description="Evaluate a bnsweep checkpoint on the test split of its data set.")
    p.add_argument("checkpoint", help="checkpoint.pt, or a directory holding one")
    p.add_argument("--attack", choices=("pgd", "autoattack"), default="pgd")
    p.add_argument("--eps-255", type=float, nargs="+", default=[8.0], help="radii in 1/255 (default: 8)")
    p.add_argument("--n", type=int, default=1000, help="number of test examples (default: 1000)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default: 20)")
    p.add_argument("--restarts", type=int, default=1, help="PGD restarts (default: 1)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("validate", help="check a sweep file; print its stages, trials and resources",
                       description="Validate every trial of a sweep file without starting Ray.")
    p.add_argument("sweep", help="sweep file (YAML)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help=SET_HELP)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a sweep with Ray Tune",
                       description="Run a sweep's stages in order with Ray Tune. Results go to "
                                   "STORAGE/NAME/ (one Ray Tune experiment per stage).")
    p.add_argument("sweep", help="sweep file (YAML)")
    p.add_argument("--storage", default="results",
                   help="where experiments go: a local path, a shared path or a URI such as s3://bucket/x "
                        "(default: ./results; on a cluster it must be reachable from every node)")
    p.add_argument("--name", help="experiment name (default: the sweep file's name:)")
    p.add_argument("--address", help="Ray cluster to join, e.g. ray://head:10001 or head:6379 "
                                     "(default: RAY_ADDRESS, else a local Ray on this machine)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help=SET_HELP + "; stored with the experiment, "
                   "so bnsweep resume runs the same")
    p.add_argument("--resume", action="store_true", help="continue the experiment if it exists already")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="finish an interrupted sweep",
                       description="Resume STORAGE/NAME: finished stages and trials are kept, unfinished "
                                   "and failed trials continue from their last checkpoints.")
    p.add_argument("dir", help="the experiment directory, e.g. results/demo")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.set_defaults(func=cmd_resume)

    paths_help = "sweep or experiment directories (or URIs)"
    p = sub.add_parser("results", help="query sweep results as a table (one row per trial)",
                       description="Load Ray Tune experiments (a sweep directory, a stage directory or a URI) "
                                   "into one row per trial, filter, select columns, sort, and print or save.")
    p.add_argument("paths", nargs="+", help=paths_help)
    p.add_argument("--where", help="filter, e.g. \"stage == 'adv' and trainable == 'bn'\"")
    p.add_argument("--columns", help="comma-separated columns to show, e.g. trainable,seed,robust_acc")
    p.add_argument("--sort", help="comma-separated columns to sort by")
    p.add_argument("--desc", action="store_true", help="sort in descending order")
    p.add_argument("--history", action="store_true", help="one row per trial and epoch")
    p.add_argument("--format", choices=("table", "csv", "parquet", "json", "markdown"),
                   help="output format (default: from the -o suffix, else table)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("report", help="write a Markdown report with the comparison table and figures",
                       description="Summarise sweep results: trials by status, best trial per stage, the "
                                   "comparison table, robustness and training curves, failed trials and "
                                   "sanity checks of the evaluation.")
    p.add_argument("paths", nargs="+", help=paths_help)
    p.add_argument("-o", "--output", default="report", help="output directory (default: report)")
    p.add_argument("--metric", help="metric for 'best trial' (default: the sweep file's, else robust_acc)")
    p.add_argument("--mode", choices=("max", "min"), help="max or min (default: the sweep file's)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("table", help="the comparison table: mean ± std over seeds per setting",
                       description="Trials grouped by setting (every trial key except the seed and per-trial "
                                   "plumbing), clean and robust accuracy as mean ± std over seeds.")
    p.add_argument("paths", nargs="+", help=paths_help)
    p.add_argument("--format", choices=("markdown", "latex", "both"), default="markdown")
    p.add_argument("--where", help="filter the trials first")
    p.add_argument("--all-statuses", action="store_true", help="also count running, failed and diverged trials")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="draw robustness or training curves (PNG and PDF)",
                       description="robustness: robust accuracy against epsilon per setting (error bars: std "
                                   "over seeds); training: clean and robust accuracy per epoch per setting.")
    p.add_argument("kind", choices=PLOTS)
    p.add_argument("paths", nargs="+", help=paths_help)
    p.add_argument("--where", help="filter the trials (or per-epoch rows) first")
    p.add_argument("-o", "--output", help="output PNG; the PDF goes beside it (default: KIND.png)")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BadInput as err:
        print(f"bnsweep: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bnsweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
