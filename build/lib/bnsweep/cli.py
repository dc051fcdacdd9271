"""The `bnsweep` command: train, eval, layers, validate, run, resume, status, prune, results, report, table, plot.

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
import warnings
from typing import Any

from bnsweep.core.choices import FinalAttack
from bnsweep.errors import BadInput, ConfigError, DamagedWarning, UsageError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by SIGINT
RESUMES_FILE = "resumes.jsonl"  # `train --resume`: one line per resume, the config it continued with


# -- output paths ------------------------------------------------------------------------------

def _output(path: str, option: str, *, directory: bool) -> str:
    """An output path, checked before any work: local, not the wrong kind of thing, under a directory
    one may write to (missing parent directories are created when writing). Returns it absolute."""
    allowed = "a directory, new or existing" if directory else "a file name, not a directory"
    if "://" in path:
        raise ConfigError(option, path, f"a local path: {allowed}")
    path = os.path.abspath(path)
    if os.path.exists(path) and os.path.isdir(path) != directory:
        raise ConfigError(option, path, f"{allowed} (this is a {'file' if directory else 'directory'})")
    existing = path if os.path.exists(path) else os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) and existing != path:
        raise ConfigError(option, path, f"{allowed} ({existing} is a file)")
    if not os.access(existing, os.W_OK):
        raise ConfigError(option, path, f"{allowed} where you may write ({existing} is not writable)")
    return path


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
    return make_config(values, where=args.config or "")


def _format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if key in ("n_trainable_params", "n_params", "trainable_groups"):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bnsweep.core import checkpoints
    from bnsweep.core.train import start

    out = _output(args.out, "--out", directory=True)
    metrics_file = os.path.join(out, "metrics.jsonl")
    checkpoint = os.path.join(out, checkpoints.FILENAME)
    if os.path.exists(metrics_file) and not args.resume:
        _trial_config(args)  # bad keys are reported first
        raise UsageError(f"--out: {out!r} already holds a run; allowed: a new directory, or --resume to continue it")
    if args.resume and not os.path.exists(checkpoint):
        raise UsageError(f"--resume: {out!r} holds no {checkpoints.FILENAME}; allowed: a directory of an earlier run")
    # A resumed run keeps its saved config (--config/--set may still change keys, e.g. more epochs).
    saved = checkpoints.load(checkpoint, key="resume") if args.resume else None
    cfg = _trial_config(args, saved["config"] if saved else None)
    if saved and cfg.epochs < saved["epoch"]:
        raise ConfigError("epochs", cfg.epochs, f"an integer >= {saved['epoch']} (the checkpoint has trained "
                          f"{saved['epoch']} epochs)", "--resume")
    trial = start(cfg, resume=checkpoint if saved else None)  # data, model and weights: may still refuse
    os.makedirs(out, exist_ok=True)
    if saved:  # config.json stays as the run began; each resume appends the config it continued with
        with open(os.path.join(out, RESUMES_FILE), "a") as fh:
            fh.write(json.dumps({"from_epoch": saved["epoch"], "config": cfg.to_dict()}) + "\n")
    else:
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(cfg.to_dict(), fh, indent=2)

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        tqdm.write(_format_metrics(metrics))
        with open(metrics_file, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if checkpoint_dir:
            shutil.copyfile(os.path.join(checkpoint_dir, checkpoints.FILENAME), checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)

    trial.progress = lambda batches, total, desc: tqdm(batches, total=total, desc=desc, leave=False,
                                                       file=sys.stderr)
    final = trial.run(report)
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
    checkpoints.load_weights(trial.model, state, cfg.to_dict(), args.checkpoint, key="checkpoint")
    x, y = trial.eval_split()
    out = robust_accuracy(trial.model, x, y, attack=args.attack, eps_255=cfg.eval_eps_255, steps=cfg.eval_steps,
                          step_255=0, restarts=cfg.eval_restarts, seed=cfg.seed)
    print(f"{args.checkpoint}: {cfg.model} on {cfg.dataset}, trainable={cfg.trainable}, n={len(y)}, "
          f"attack={args.attack}"
          + (f" (steps {args.steps}, restarts {args.restarts})" if args.attack == FinalAttack.PGD else ""))
    print(f"{'eps_255':>8}  {'clean_acc':>9}  {'robust_acc':>10}")
    for eps in sorted(cfg.eval_eps_255):
        print(f"{eps:>8g}  {out['clean_acc']:>9.4f}  {out[eps_metric(eps)]:>10.4f}")
    return 0


# -- layers ------------------------------------------------------------------------------------

def cmd_layers(args: argparse.Namespace) -> int:
    from bnsweep.core.config import make_config
    from bnsweep.core.models import skeleton
    from bnsweep.core.trainable import (
        KINDS,
        describe,
        group_list,
        groups,
        places,
        trainable_names,
    )

    if args.num_classes < 1:
        raise ConfigError("--num-classes", args.num_classes, "an integer >= 1")
    cfg = make_config({"model": args.model, "width": args.width, "trainable": args.trainable or "all"})
    net = skeleton(cfg.model, args.num_classes, width=cfg.width)
    named, shapes = groups(net), {n: tuple(p.shape) for n, p in net.named_parameters()}
    sizes = {n: p.numel() for n, p in net.named_parameters()}

    def count(names: set[str]) -> str:
        return f"{sum(sizes[n] for n in names):,}" if names else "-"

    print(f"{cfg.model} (width {cfg.width:g}, {args.num_classes} classes): parameters per group; "
          "a row is a place, a column a kind, a cell KIND@PLACE")
    print(f"{'':<8}" + "".join(f"{c:>12}" for c in (*KINDS, "all")))
    for place in (*places(net), "all"):
        print(f"{place:<8}" + "".join(f"{count(named[k] & named[place]):>12}" for k in (*KINDS, "all")))
    print(f"groups: {group_list(net)}; terms are joined by +, a - before a term removes it")
    if args.trainable:
        chosen = trainable_names(net, cfg.trainable)
        width = max((len(n) for n in chosen), default=0)
        print(f"\ntrainable {cfg.trainable!r} selects {describe(net, chosen)}:")
        for name in (n for n in shapes if n in chosen):
            print(f"  {name:<{width}}  {list(shapes[name])!s:>16}  {sizes[name]:>10,}")
        print(f"{len(chosen)} tensor(s), {count(chosen) if chosen else 0} of {count(named['all'])} parameters")
    return 0


# -- sweeps ------------------------------------------------------------------------------------

def _load_sweep(args: argparse.Namespace):
    from bnsweep.core.config import parse_overrides
    from bnsweep.sweep.spec import load_sweep

    return load_sweep(args.sweep, parse_overrides(args.set or []))


def cmd_validate(args: argparse.Namespace) -> int:
    from bnsweep.sweep import sizing
    from bnsweep.sweep.driver import format_overrides

    if args.keys:
        from bnsweep.core.keys import key_table

        print(key_table(), end="")
        return 0
    if not args.sweep:
        raise UsageError("validate: a sweep file is needed (or --keys for the table of trial keys)")
    if args.rate is not None and not args.rate > 0:
        raise UsageError(f"--rate: {args.rate:g} is not allowed; allowed: image passes per second of one trial, > 0")
    if args.slots < 1:
        raise UsageError(f"--slots: {args.slots} is not allowed; allowed: trials at once, >= 1")
    sweep = _load_sweep(args)
    works = [sizing.stage_work(stage) for stage in sweep.stages]
    print(f"sweep {sweep.name!r} ({args.sweep}): {len(sweep.stages)} stage(s)"
          + (f"; --set in every stage: {format_overrides(sweep.overrides)}" if sweep.overrides else ""))
    for stage, work in zip(sweep.stages, works):
        dims = ", ".join(f"{k} x{len(v)}" for k, v in stage.grid.items()) or "-"
        searched = ", ".join(f"{k} ~ {next(iter(v))}" for k, v in stage.search.items())
        source = f", starts from stage {stage.from_stage!r} (match {', '.join(stage.match)})" if stage.from_stage else ""
        res = stage.resources
        print(f"  stage {stage.name!r}: {stage.num_trials:,} trial(s); grid: {dims}"
              + (f"; search ({stage.search_alg}): {searched}" if searched else "")
              + f"; {stage.base['epochs']} epoch(s); resources per trial: cpu {res['cpu']:g}, gpu {res['gpu']:g}"
              + ("; scheduler: asha (work: at most)" if isinstance(stage.scheduler, dict) else "") + source
              + f"; work: {sizing.si(work)} image passes")
    print(f"{sum(s.num_trials for s in sweep.stages):,} trial(s) in all; work: {sizing.si(sum(works))} image "
          "passes (image passes = training images x epochs x (attack steps + 1); evaluation not counted)")
    if args.rate is None:
        print("projected wall time: pass --rate IMAGES_PER_S (image passes/s of one trial) and --slots N")
        return 0
    times = [sizing.stage_seconds(s, w, args.rate, args.slots) for s, w in zip(sweep.stages, works)]
    each = ", ".join(f"{s.name} {sizing.duration(t)}" for s, t in zip(sweep.stages, times))
    print(f"projected wall time at {args.rate:g} image passes/s per trial, {args.slots} trial(s) at a time: "
          f"{sizing.duration(sum(times))} ({each})")
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

    from bnsweep.sweep.driver import SweepFailed, SweepInterrupted, execute

    if resume:  # a damaged trial file stops resume before anything runs, not midway
        from bnsweep.results.load import check_experiment

        check_experiment(root)
    start = time.perf_counter()
    try:
        execute(sweep, root, resume=resume, address=address)
    except SweepFailed as err:
        print(f"bnsweep: {err}", file=sys.stderr)
        return 1
    except SweepInterrupted as err:
        print(f"bnsweep: interrupted: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # a second Ctrl-C: Ray's graceful stop skipped
        print(f"bnsweep: interrupted; continue with: bnsweep resume {root}", file=sys.stderr)
        return EXIT_INTERRUPTED
    last = sweep.stages[-1].name
    print(f"\nsweep {sweep.name!r} finished in {time.perf_counter() - start:.0f} s; results in {root}")
    print(f"stage {last!r}, mean over seeds (accuracies in %):\n{_summary(root, last)}")
    print(f"\ntensorboard --logdir {root}    |    bnsweep results {root}    |    bnsweep report {root} -o report/")
    return 0


def _address(args: argparse.Namespace) -> str | None:
    from bnsweep.sweep.driver import check_address

    check_address(args.address)
    if args.address is None:
        check_address(os.environ.get("RAY_ADDRESS"), key="RAY_ADDRESS")
    return args.address


def cmd_run(args: argparse.Namespace) -> int:
    from bnsweep.sweep.spec import check_name
    from bnsweep.sweep.storage import location, sweep_dir

    sweep = _load_sweep(args)
    address = _address(args)
    root = sweep_dir(args.storage, check_name("--name", args.name) if args.name is not None else sweep.name)
    if "://" not in root:  # a local path, or a file:// URI of one
        _output(location(args.storage), "--storage", directory=True)
        _output(root, "--storage", directory=True)
    return _run(sweep, root, resume=args.resume, address=address)


def cmd_resume(args: argparse.Namespace) -> int:
    from bnsweep.sweep.driver import resume_sweep
    from bnsweep.sweep.storage import location

    address = _address(args)
    root = location(args.dir)
    return _run(resume_sweep(root), root, resume=True, address=address)


def cmd_prune(args: argparse.Namespace) -> int:
    from bnsweep.sweep import prune

    plan = prune.plan(args.dir)
    print(f"prune {args.dir} (keep {args.keep}): would delete {prune.describe(plan)}")
    if not plan.delete:
        print("nothing to delete")
        return 0
    if not args.yes:
        stdin = sys.stdin
        if stdin is None or stdin.closed or not stdin.isatty():
            raise UsageError("prune: nothing deleted: no terminal to confirm on; allowed: --yes to delete "
                             "without asking")
        try:
            answer = input(f"delete {len(plan.delete)} checkpoint(s)? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    prune.delete(plan)
    print(f"deleted {len(plan.delete)} checkpoint(s), freed {plan.bytes / 2**20:.1f} MiB")
    return 0


# -- results -----------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    import time

    from bnsweep.results.status import all_finished, format_status, sweep_status

    if args.watch is not None and not args.watch > 0:
        raise UsageError(f"--watch: {args.watch:g} is not allowed; allowed: seconds between refreshes, > 0")
    clear = "\x1b[H\x1b[2J" if args.watch and sys.stdout.isatty() else ""
    try:
        while True:
            root, stages = sweep_status(args.dir)
            print(clear + format_status(root, stages), flush=True)
            if args.watch is None or all_finished(stages):
                return 0
            time.sleep(args.watch)
            if not clear:
                print()
    except KeyboardInterrupt:  # the way to stop --watch
        return 0



def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def cmd_results(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results.formats import SUFFIX_FORMAT

    fmt = args.format or SUFFIX_FORMAT.get(os.path.splitext(args.output or "")[1], "table")
    if args.output:
        _output(args.output, "-o", directory=False)
    df = (results.history if args.history else results.load)(args.paths)
    df = results.select(df, args.where, _split(args.columns), _split(args.sort), args.desc)
    results.write_frame(df, fmt, args.output)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    output = _output(args.output, "-o", directory=True)
    from bnsweep.results.report import write_report  # matplotlib: only for a command worth running

    print(write_report(args.paths, output, args.metric, args.mode))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results import tables

    output = args.output and _output(args.output, "-o", directory=False)
    df = results.select(results.load(args.paths), where=args.where)
    statuses = sorted(set(df["status"])) if args.all_statuses else ("terminated",)
    table = tables.summarize(df, statuses=statuses, radii=args.eps_255)
    parts = []
    if args.format in ("markdown", "both"):
        parts.append(tables.to_markdown(table))
    if args.format in ("latex", "both"):
        parts.append(tables.to_latex(table))
    text = "\n".join(parts)
    if output:
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with open(output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


PLOTS = ("study", "robustness", "training")


def cmd_plot(args: argparse.Namespace) -> int:
    from bnsweep import results
    from bnsweep.results import figures

    output = args.output or f"{args.kind}.png"
    for suffix in (".png", ".pdf"):  # the PDF goes beside the PNG
        _output(os.path.splitext(output)[0] + suffix, "-o", directory=False)
    per_epoch = args.kind == "training"
    frame = (results.history if per_epoch else results.load)(args.paths)
    draw = {"study": figures.study_figure, "robustness": figures.robustness_curves,
            "training": figures.training_curves}[args.kind]
    try:
        fig = draw(results.select(frame, where=args.where))
    except ValueError as err:  # nothing to plot
        raise UsageError(f"{args.kind}: {err}") from None
    print("\n".join(map(str, figures.save_figure(fig, output))))
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
    p.add_argument("--attack", choices=[a.value for a in FinalAttack if a != FinalAttack.NONE],
                   default=FinalAttack.PGD.value)
    p.add_argument("--eps-255", type=float, nargs="+", default=[8.0], help="radii in 1/255 (default: 8)")
    p.add_argument("--n", type=int, default=1000, help="number of test examples (default: 1000)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default: 20)")
    p.add_argument("--restarts", type=int, default=1, help="PGD restarts (default: 1)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("layers", help="a model's groups with parameter counts; what a trainable expression selects",
                       description="Print the groups `trainable` expressions can name (places: stem, stage1.., "
                                   "head; kinds: bn, conv, fc) with parameter counts, and with --trainable the "
                                   "parameters an expression selects. The model is built on the meta device "
                                   "(no memory, instant).")
    p.add_argument("model", help="e.g. resnet8, resnet20, preact_resnet18, wrn-28-10")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (default: 1)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (default: 10)")
    p.add_argument("--trainable", help="an expression to resolve, e.g. bn@stage3+fc, all-stem, glob:layer3.*.bn*")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("validate", help="check a sweep file; print its stages, trials, resources and work",
                       description="Validate every trial of a sweep file without starting Ray, and size it: "
                                   "trials per stage and in all, and the training work in image passes (one "
                                   "forward and backward pass of one training image; PGD-k costs k + 1).")
    p.add_argument("sweep", nargs="?", help="sweep file (YAML)")
    p.add_argument("--keys", action="store_true", help="print the table of trial keys (default, allowed, meaning)")
    p.add_argument("--rate", type=float, metavar="IMAGES_PER_S",
                   help="image passes per second of ONE trial (its images_per_s without an attack, or a "
                        "PGD-k trial's x (k + 1)): prints the projected wall time")
    p.add_argument("--slots", type=int, default=1, metavar="N",
                   help="trials running at once for the projection (default: 1; capped per stage by its "
                        "trials and max_concurrent)")
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
    p.add_argument("--resume", action="store_true", help="continue the experiment if it exists already (else start it)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="finish an interrupted sweep",
                       description="Resume STORAGE/NAME: finished stages and trials are kept, unfinished "
                                   "and failed trials continue from their last checkpoints.")
    p.add_argument("dir", help="the experiment directory, e.g. results/demo")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", help="where a sweep stands: trials by status, epochs, best trial, ETA",
                       description="Per stage: trials by status, epochs done out of planned, the best trial so "
                                   "far by the sweep's metric, the newest report's age and an ETA. Reads the "
                                   "storage only (no lock), so it can run beside the driver, on any machine "
                                   "that reaches the storage, during and after the sweep.")
    p.add_argument("dir", help="the experiment directory (or a stage directory, or a URI), e.g. results/demo")
    p.add_argument("--watch", type=float, nargs="?", const=10.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 10) until every stage finished; Ctrl-C stops")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("prune", help="delete checkpoints no later stage and no resume needs",
                       description="Delete every checkpoint of ended trials (terminated or diverged) but the "
                                   "newest, and any that bnsweep_state.json says a later stage starts from. "
                                   "Trials that may still train keep all theirs; result.json, params.json, "
                                   "progress.csv and event files are never touched. Prints what it would "
                                   "free and asks first.")
    p.add_argument("dir", help="the experiment directory (or a stage directory, or a URI), e.g. results/demo")
    p.add_argument("--keep", choices=("last",), default="last",
                   help="what ended trials keep: last (their newest checkpoint; the default)")
    p.add_argument("--yes", action="store_true", help="delete without asking (needed without a terminal)")
    p.set_defaults(func=cmd_prune)

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
                                   "plumbing), clean and robust accuracy as mean ± std over seeds; each robust "
                                   "column names its radius.")
    p.add_argument("paths", nargs="+", help=paths_help)
    p.add_argument("--format", choices=("markdown", "latex", "both"), default="markdown")
    p.add_argument("--where", help="filter the trials first")
    p.add_argument("--all-statuses", action="store_true", help="also count running, failed and diverged trials")
    p.add_argument("--eps-255", type=float, nargs="+", metavar="E",
                   help="PGD robust accuracy at these radii in 1/255, one column each (default: the "
                        "training radius of the adversarially trained trials)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="draw the study's bars, robustness or training curves (PNG and PDF)",
                       description="study: clean and robust accuracy per trainable set, one panel per init "
                                   "(grouped bars, error bars: std over seeds; adversarially trained trials); "
                                   "robustness: robust accuracy against epsilon per setting; training: clean "
                                   "and robust accuracy per epoch per setting.")
    p.add_argument("kind", choices=PLOTS)
    p.add_argument("paths", nargs="+", help=paths_help)
    p.add_argument("--where", help="filter the trials (or per-epoch rows) first")
    p.add_argument("-o", "--output", help="output PNG; the PDF goes beside it (default: KIND.png)")
    p.set_defaults(func=cmd_plot)
    return parser


def _one_line_warnings(default=warnings.showwarning):
    """A `warnings.showwarning` that shows bnsweep's own warnings (a damaged file skipped) as one
    line, once each (`report` reads an experiment twice); others as Python shows them."""
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, DamagedWarning):
            default(message, category, filename, lineno, file, line)
        elif str(message) not in shown:
            shown.add(str(message))
            print(f"bnsweep: warning: {message}", file=file or sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            return args.func(args)
        except BadInput as err:
            print(f"bnsweep: error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("bnsweep: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
