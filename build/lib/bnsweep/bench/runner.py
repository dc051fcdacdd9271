"""`python -m bnsweep.bench`: the parts, their options and the header line of every run."""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from typing import Callable, Sequence

import torch

from bnsweep import code_version
from bnsweep.bench import data, evaluation, loading, scale, training
from bnsweep.bench import sweep as bench_sweep
from bnsweep.bench.common import Bench, Row, describe, setup
from bnsweep.core.choices import Precision
from bnsweep.core.config import make_config
from bnsweep.errors import ConfigError

PARTS: dict[str, Callable[[Bench], list[Row]]] = {
    "efficiency": training.efficiency, "peers": training.peers, "gpu": training.gpu,
    "eval": evaluation.evaluation, "packing": bench_sweep.packing, "overhead": bench_sweep.overhead,
    "loading": loading.loading, "scale": scale.scale, "data": data.data}
QUICK = dict(**bench_sweep.QUICK, **loading.QUICK, **scale.QUICK, **data.QUICK, model="resnet8", width=0.25,
             batch_size=32, steps=[1, 2], peer_steps=2, reps=2, warmup=0, n_train=64, eval_n=32, eval_steps=2,
             eval_epochs=1, gpu_batches=2, gpu_batch_size=32)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bnsweep.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", choices=list(PARTS), default=list(PARTS), help="sections to run")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=Precision.values(), default=Precision.FP32.value,
                   help="efficiency/peers/eval trials")
    p.add_argument("--compile", action="store_true", help="efficiency/peers/eval trials use torch.compile")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 3, 7, 10], help="PGD steps k (efficiency)")
    p.add_argument("--trainable", nargs="+", default=["all", "bn", "fc"],
                   help="trainable expressions of the efficiency and peers parts, e.g. bn bn@stage3 all-stem")
    p.add_argument("--peer-steps", type=int, default=7, help="PGD steps k of the peer comparison")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (the median is shown)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant first")
    p.add_argument("--n-train", type=int, default=2048, help="planted training images (eval part's model)")
    p.add_argument("--eval-n", type=int, default=256, help="test examples of the eval part")
    p.add_argument("--eval-eps", type=float, nargs="+", default=[2, 4, 8], help="radii in 1/255")
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-epochs", type=int, default=2, help="clean epochs that train the eval part's model")
    p.add_argument("--gpu-models", nargs="+", default=["resnet20", "preact_resnet18"])
    p.add_argument("--gpu-batch-size", type=int, default=512)
    p.add_argument("--gpu-batches", type=int, default=20, help="batches per timed epoch (gpu part)")
    p.add_argument("--gpu-eager-only", action="store_true", help="gpu part: skip torch.compile")
    bench_sweep.add_arguments(p)
    loading.add_arguments(p)
    scale.add_arguments(p)
    data.add_arguments(p)
    p.add_argument("--quick", "--smoke-test", action="store_true",
                   help="tiny defaults: checks that every part runs (tests)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # flags given explicitly still win
    args = p.parse_args(argv)
    try:  # before any part runs: each expression against the benchmarked model
        for trainable in args.trainable:
            make_config({"model": args.model, "width": args.width, "trainable": trainable})
    except ConfigError as err:
        print(f"{p.prog}: error: --trainable: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, list[Row]]:
    args = parse_args(argv)
    b = setup(args)
    print(f"bnsweep {code_version()} bench | {datetime.date.today()} | device {describe(b.device)} | "
          f"torch {torch.__version__} | python {platform.python_version()}")
    print(f"model {args.model} width {args.width:g}, batch {args.batch_size}, {args.precision}"
          f"{', compiled' if args.compile else ''}, planted CIFAR-shaped data; "
          f"median of {args.reps} reps after {args.warmup} warm-up, variants interleaved")
    return {part: PARTS[part](b) for part in args.part}
