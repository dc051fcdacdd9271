"""Sweeps with Ray Tune: `bnsweep validate` (check and size a sweep file without Ray), `run`, `resume`,
`status` (where a sweep stands, from its files) and `prune` (delete checkpoints nothing needs)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

from bnsweep.cli.base import SET_HELP, number, say
from bnsweep.core.choices import TrialStatus
from bnsweep.errors import UsageError
from bnsweep.files import is_uri, output_path


def _load_sweep(args: argparse.Namespace):
    from bnsweep.core.yamlfile import parse_overrides
    from bnsweep.sweep.spec import load_sweep

    return load_sweep(args.sweep, parse_overrides(args.set or []))


# -- validate ----------------------------------------------------------------------------------

def add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a sweep file; print its stages, trials, resources and work",
                       description="Validate every trial of a sweep file without starting Ray, and size it: "
                                   "trials per stage and in all, and the training work in image passes (one "
                                   "forward and backward pass of one training image; PGD-k costs k + 1).")
    p.add_argument("sweep", nargs="?", help="sweep file (YAML)")
    p.add_argument("--keys", action="store_true", help="print the table of trial keys (default, allowed, meaning)")
    p.add_argument("--rate", type=number(float, 1e-3, 1e9, "image passes per second of one trial"),
                   metavar="IMAGES_PER_S",
                   help="image passes per second of ONE trial (its images_per_s without an attack, or a "
                        "PGD-k trial's x (k + 1)): prints the projected wall time")
    p.add_argument("--slots", type=number(int, 1, 1_000_000, "trials at once"), default=1, metavar="N",
                   help="trials running at once for the projection (default: 1; capped per stage by its "
                        "trials and max_concurrent)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help=SET_HELP)
    p.set_defaults(func=cmd_validate)


def _stage_line(stage, work: float) -> str:
    from bnsweep.sweep import sizing

    dims = ", ".join(f"{k} x{len(v)}" for k, v in stage.grid.items()) or "-"
    searched = ", ".join(f"{k} ~ {next(iter(v))}" for k, v in stage.search.items())
    source = f", starts from stage {stage.from_stage!r} (match {', '.join(stage.match)})" if stage.from_stage else ""
    res = stage.resources
    return (f"  stage {stage.name!r}: {stage.num_trials:,} trial(s); grid: {dims}"
            + (f"; search ({stage.search_alg}): {searched}" if searched else "")
            + f"; {stage.base['epochs']} epoch(s); resources per trial: cpu {res['cpu']:g}, gpu {res['gpu']:g}"
            + ("; scheduler: asha (work: at most)" if isinstance(stage.scheduler, dict) else "") + source
            + f"; work: {sizing.si(work)} image passes")


def cmd_validate(args: argparse.Namespace) -> int:
    from bnsweep.layout.labels import duration
    from bnsweep.sweep import sizing
    from bnsweep.sweep.driver import format_overrides

    if args.keys:
        from bnsweep.core.keys import key_table

        print(key_table(), end="")
        return 0
    if not args.sweep:
        raise UsageError("validate: a sweep file is needed (or --keys for the table of trial keys)")
    sweep = _load_sweep(args)
    works = [sizing.stage_work(stage) for stage in sweep.stages]
    print(f"sweep {sweep.name!r} ({args.sweep}): {len(sweep.stages)} stage(s)"
          + (f"; --set in every stage: {format_overrides(sweep.overrides)}" if sweep.overrides else ""))
    for stage, work in zip(sweep.stages, works):
        print(_stage_line(stage, work))
    print(f"{sum(s.num_trials for s in sweep.stages):,} trial(s) in all; work: {sizing.si(sum(works))} image "
          "passes (image passes = training images x epochs x (attack steps + 1); evaluation not counted)")
    if args.rate is None:
        print("projected wall time: pass --rate IMAGES_PER_S (image passes/s of one trial) and --slots N")
        return 0
    times = [sizing.stage_seconds(s, w, args.rate, args.slots) for s, w in zip(sweep.stages, works)]
    each = ", ".join(f"{s.name} {duration(t)}" for s, t in zip(sweep.stages, times))
    print(f"projected wall time at {args.rate:g} image passes/s per trial, {args.slots} trial(s) at a time: "
          f"{duration(sum(times))} ({each})")
    return 0


# -- run and resume ----------------------------------------------------------------------------

def add_run(sub) -> None:
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


def add_resume(sub) -> None:
    p = sub.add_parser("resume", help="finish an interrupted sweep",
                       description="Resume STORAGE/NAME: finished stages and trials are kept, unfinished "
                                   "and failed trials continue from their last checkpoints.")
    p.add_argument("dir", help="the experiment directory, e.g. results/demo")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.set_defaults(func=cmd_resume)


def summary(root: str, stage: str) -> str:
    """The table `run` ends with: the last stage's finished trials, mean ± std over seeds."""
    from bnsweep import results
    from bnsweep.results import tables

    df = results.load(root)
    df = df[(df["stage"] == stage) & (df["status"] == TrialStatus.TERMINATED)]
    if df.empty:
        return f"(no finished trials in stage {stage!r})"
    metrics = [m for m in ("final_clean_acc", "final_robust_acc", "final_autoattack_acc")
               if m in df and df[m].notna().any()]
    return tables.to_markdown(tables.summarize(df, metrics or ("clean_acc", "robust_acc")))


def _run(sweep, root: str, *, resume: bool, address: str | None, command: str | None = None) -> int:
    import time

    from bnsweep.api import SweepFailed, SweepInterrupted, run_experiment

    start = time.perf_counter()
    try:
        run_experiment(sweep, root, resume=resume, address=address, command=command)
    except SweepFailed as err:
        say(str(err))
        return 1
    except SweepInterrupted as err:  # Ctrl-C, SIGTERM or SIGHUP: Ray saved the experiment
        say(f"interrupted ({signal.Signals(err.signum).name}): {err}")
        return 128 + err.signum
    except KeyboardInterrupt as err:  # a second one, or one outside a stage: Ray's graceful stop skipped
        signum = getattr(err, "signum", signal.SIGINT)
        say(f"interrupted ({signal.Signals(signum).name}); continue with: bnsweep resume {root}")
        return 128 + signum
    last = sweep.stages[-1].name
    print(f"\nsweep {sweep.name!r} finished in {time.perf_counter() - start:.0f} s; results in {root}")
    print(f"stage {last!r}, mean over seeds (accuracies in %):\n{summary(root, last)}")
    print(f"\ntensorboard --logdir {root}    |    bnsweep results {root}    |    bnsweep report {root} -o report/")
    return 0


def _address(args: argparse.Namespace) -> str | None:
    from bnsweep.sweep.driver import check_address

    check_address(args.address)
    if args.address is None:
        check_address(os.environ.get("RAY_ADDRESS"), key="RAY_ADDRESS")
    return args.address


def cmd_run(args: argparse.Namespace) -> int:
    from bnsweep.layout.paths import location, sweep_dir
    from bnsweep.sweep.spec import check_name

    sweep = _load_sweep(args)
    address = _address(args)
    root = sweep_dir(args.storage, check_name("--name", args.name) if args.name is not None else sweep.name)
    if not is_uri(root):  # a local path, or a file:// URI of one
        output_path(location(args.storage), "--storage", directory=True)
        output_path(root, "--storage", directory=True)
    return _run(sweep, root, resume=args.resume, address=address, command=shlex.join(["bnsweep", *args.argv]))


def cmd_resume(args: argparse.Namespace) -> int:
    from bnsweep.layout.paths import location
    from bnsweep.sweep.driver import resume_sweep

    address = _address(args)
    root = location(args.dir)
    return _run(resume_sweep(root), root, resume=True, address=address)


# -- status ------------------------------------------------------------------------------------

def add_status(sub) -> None:
    p = sub.add_parser("status", help="where a sweep stands: trials by status, epochs, best trial, ETA",
                       description="Per stage: trials by status, epochs done out of planned, the best trial so "
                                   "far by the sweep's metric, the newest report's age and an ETA. Reads the "
                                   "storage only (no lock), so it can run beside the driver, on any machine "
                                   "that reaches the storage, during and after the sweep.")
    p.add_argument("dir", help="the experiment directory (or a stage directory, or a URI), e.g. results/demo")
    p.add_argument("--watch", type=number(float, 0.1, 86_400, "seconds between refreshes"), nargs="?", const=10.0,
                   metavar="SECONDS",
                   help="refresh every SECONDS (default 10) until every stage finished; Ctrl-C stops")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from bnsweep.results.status import all_finished, format_status, sweep_status

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


# -- prune -------------------------------------------------------------------------------------

def add_prune(sub) -> None:
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


def _confirmed(question: str) -> bool:
    stdin = sys.stdin
    if stdin is None or stdin.closed or not stdin.isatty():
        raise UsageError("prune: nothing deleted: no terminal to confirm on; allowed: --yes to delete "
                         "without asking")
    try:
        answer = input(question)
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def cmd_prune(args: argparse.Namespace) -> int:
    from bnsweep import prune

    plan = prune.plan(args.dir)
    print(f"prune {args.dir} (keep {args.keep}): would delete {prune.describe(plan)}")
    if not plan.delete:
        print("nothing to delete")
        return 0
    if not args.yes and not _confirmed(f"delete {len(plan.delete)} checkpoint(s)? [y/N] "):
        print("nothing deleted")
        return 0
    prune.delete(plan)
    print(f"deleted {len(plan.delete)} checkpoint(s), freed {plan.bytes / 2**20:.1f} MiB")
    return 0


COMMANDS = (add_validate, add_run, add_resume, add_status, add_prune)
