"""One trial without Ray: `bnsweep train` (a run directory), `eval` (a checkpoint under an attack) and
`layers` (a model's parameter groups and what a trainable expression selects)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bnsweep.cli.base import number, trial_keys
from bnsweep.core.choices import AutoAttackVersion, FinalAttack
from bnsweep.errors import UsageError

# -- train -------------------------------------------------------------------------------------

def add_train(sub) -> None:
    p = sub.add_parser("train", help="run one trial without Ray (debugging one configuration)",
                       description="Train one trial; writes config.json, metrics.jsonl, final.json and "
                                   "checkpoint.pt into --out.")
    p.add_argument("--config", help="YAML file of trial keys (listed by: bnsweep validate --keys)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override trial keys, e.g. trainable=bn epochs=3")
    p.add_argument("--out", default="runs/train", help="output directory (default: runs/train)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=cmd_train)


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
    from bnsweep.core.rundir import train

    def progress(batches, total, desc):
        return tqdm(batches, total=total, desc=desc, leave=False, file=sys.stderr)

    final = train(trial_keys(args), args.out, resume=args.resume, where=args.config or "",
                  on_report=lambda metrics: tqdm.write(_format_metrics(metrics)), progress=progress)
    if final.get("diverged"):
        print(f"bnsweep: trial diverged: {final['diverged_reason']}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.out)}/{{config.json, metrics.jsonl, final.json, {checkpoints.FILENAME}}}")
    return 0


# -- eval --------------------------------------------------------------------------------------

def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: clean and robust accuracy",
                       description="Evaluate a bnsweep checkpoint on the test split of its data set.")
    p.add_argument("checkpoint", help="checkpoint.pt, or a directory holding one")
    p.add_argument("--attack", choices=[a.value for a in FinalAttack if a != FinalAttack.NONE],
                   default=FinalAttack.PGD.value)
    # bounded by the trial keys they set (eval_eps_255, eval_n, eval_steps, eval_restarts)
    p.add_argument("--eps-255", type=float, nargs="+", default=[8.0], help="radii in 1/255 (default: 8)")
    p.add_argument("--n", type=int, default=1000, help="number of test examples (default: 1000)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default: 20)")
    p.add_argument("--restarts", type=int, default=1, help="PGD restarts (default: 1)")
    p.add_argument("--autoattack-version", choices=[v.value for v in AutoAttackVersion if v != AutoAttackVersion.NONE],
                   help="with --attack autoattack: standard (default; APGD-CE, APGD-T, FAB-T, Square) or "
                        "apgd-ce+apgd-t (its gradient attacks only, a quicker check)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from bnsweep.core import checkpoints
    from bnsweep.core.config import make_config
    from bnsweep.core.evaluate import eps_metric
    from bnsweep.core.train import Trial

    if args.autoattack_version and args.attack != FinalAttack.AUTOATTACK:
        raise UsageError("--autoattack-version: only with --attack autoattack")
    version = args.autoattack_version or AutoAttackVersion.STANDARD.value
    state = checkpoints.load(args.checkpoint, key="checkpoint")
    saved = {k: v for k, v in state["config"].items() if k not in ("init", "init_checkpoint")}
    cfg = make_config({**saved, "device": args.device, "eval_n": args.n, "eval_eps_255": args.eps_255,
                       "eval_steps": args.steps, "eval_restarts": args.restarts})
    trial = Trial(dataclasses.replace(cfg, init="random"))
    checkpoints.load_weights(trial.model, state, cfg.to_dict(), args.checkpoint, key="checkpoint")
    out = trial.attack_accuracy(args.attack, cfg.eval_eps_255, cfg.eval_steps, cfg.eval_restarts, version)
    n = len(trial.eval_split()[1])
    print(f"{args.checkpoint}: {cfg.model} on {cfg.dataset}, trainable={cfg.trainable}, n={n}, "
          f"attack={args.attack}"
          + (f" (steps {args.steps}, restarts {args.restarts})" if args.attack == FinalAttack.PGD else "")
          + (f" ({version})" if args.attack == FinalAttack.AUTOATTACK else ""))
    print(f"{'eps_255':>8}  {'clean_acc':>9}  {'robust_acc':>10}")
    for eps in sorted(cfg.eval_eps_255):
        print(f"{eps:>8g}  {out['clean_acc']:>9.4f}  {out[eps_metric(eps)]:>10.4f}")
    return 0


# -- layers ------------------------------------------------------------------------------------

def add_layers(sub) -> None:
    p = sub.add_parser("layers", help="a model's groups with parameter counts; what a trainable expression selects",
                       description="Print the groups `trainable` expressions can name (places: stem, stage1.., "
                                   "head; kinds: bn, conv, fc) with parameter counts, and with --trainable the "
                                   "parameters an expression selects. The model is built on the meta device "
                                   "(no memory, instant).")
    p.add_argument("model", help="e.g. resnet8, resnet20, preact_resnet18, wrn-28-10")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (default: 1)")
    p.add_argument("--num-classes", type=number(int, 1, 100_000, "classifier outputs"), default=10,
                   help="classifier outputs (default: 10)")
    p.add_argument("--trainable", help="an expression to resolve, e.g. bn@stage3+fc, all-stem, glob:layer3.*.bn*")
    p.set_defaults(func=cmd_layers)


def cmd_layers(args: argparse.Namespace) -> int:
    from bnsweep.core.config import make_config
    from bnsweep.core.models import skeleton
    from bnsweep.core.trainable import KINDS, describe, group_list, groups, places, trainable_names

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


COMMANDS = (add_train, add_eval, add_layers)
