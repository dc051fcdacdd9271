"""`python -m bnsweep.bench`: the parts, their options, the header line of every run, and `--record FILE`
(the output under a provenance header: a benchmark record that published figures are quoted from)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import shlex
import sys
from typing import Callable, Sequence

import torch

from bnsweep import code_version, provenance
from bnsweep.bench import cpu, data, demo, evaluation, loading, scale, training
from bnsweep.bench import sweep as bench_sweep
from bnsweep.bench.common import Bench, Row, describe, setup
from bnsweep.core.choices import Precision
from bnsweep.core.config import make_config
from bnsweep.errors import ConfigError

PARTS: dict[str, Callable[[Bench], list[Row]]] = {
    "efficiency": training.efficiency, "peers": training.peers, "gpu": training.gpu,
    "eval": evaluation.evaluation, "packing": bench_sweep.packing, "overhead": bench_sweep.overhead,
    "loading": loading.loading, "scale": scale.scale, "data": data.data, "cpu": cpu.cpu, "demo": demo.demo}
DEFAULT_PARTS = [part for part in PARTS if part != "demo"]  # demo compares with a commit you name
QUICK = dict(**bench_sweep.QUICK, **loading.QUICK, **scale.QUICK, **data.QUICK, **cpu.QUICK, **demo.QUICK,
             model="resnet8", width=0.25, batch_size=32, steps=[1, 2], peer_steps=2, reps=2, warmup=0, n_train=64,
             eval_n=32, eval_steps=2, eval_epochs=1, gpu_batches=2, gpu_batch_size=32)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bnsweep.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", choices=list(PARTS), default=DEFAULT_PARTS,
                   help="sections to run (default: all but demo)")
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
    cpu.add_arguments(p)
    demo.add_arguments(p)
    p.add_argument("--quick", "--smoke-test", action="store_true",
                   help="tiny defaults: checks that every part runs (tests)")
    p.add_argument("--record", metavar="FILE",
                   help="also write the output, under a header naming the command, commit, date, machine and "
                        "load, to FILE: a benchmark record to commit (e.g. docs/runs/bench-epyc-2cpu.txt)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="--record even from a checkout with uncommitted changes (the header then says DIRTY)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # flags given explicitly still win
    args = p.parse_args(argv)
    try:  # before any part runs: each expression against the benchmarked model
        for trainable in args.trainable:
            make_config({"model": args.model, "width": args.width, "trainable": trainable})
    except ConfigError as err:
        print(f"{p.prog}: error: --trainable: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if "demo" in args.part:
        problem = demo.check_against(args.demo_against) if args.demo_against else \
            "the demo part needs --demo-against REV, the commit to compare this checkout with"
        if problem:
            print(f"{p.prog}: error: --demo-against: {problem}", file=sys.stderr)
            raise SystemExit(2)
    if args.record:
        problem = record_problem(args.record, args.allow_dirty)
        if problem:
            print(f"{p.prog}: error: --record: {problem}", file=sys.stderr)
            raise SystemExit(2)
    return args


def record_problem(path: str, allow_dirty: bool) -> str | None:
    """Why `--record path` cannot be written (checked before any part runs), or None."""
    if os.path.isdir(path):
        return f"{path} is a directory; allowed: a file name"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        return f"{parent} is not a directory you may write to"
    if provenance.code().dirty and not allow_dirty:
        return ("this bnsweep checkout has uncommitted changes to tracked files, so the numbers cannot be "
                "traced to a commit; allowed: a clean checkout (commit first), or --allow-dirty")
    return None


class _Tee(io.TextIOBase):
    """Writes to the terminal and to the record file alike."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def record_header(argv: Sequence[str]) -> list[str]:
    """The provenance lines (`# ...`) a benchmark record starts with."""
    code = provenance.code()
    machine = provenance.machine()
    lines = [f"# bnsweep benchmark record: python -m bnsweep.bench {shlex.join(argv)}",
             f"# bnsweep {code} | {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"# machine {machine['host']}: {provenance.describe_machine(machine)}",
             f"# load average (1 min) at the start: {provenance.load_average()}"]
    if code.dirty:
        lines.append("# DIRTY: uncommitted changes to tracked files; these numbers cannot be traced to a commit")
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, list[Row]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not args.record:
        return _run(args)
    # Written beside the record and moved over it at the end: while the parts run, the record (often a
    # committed file) is untouched, so the checkout stays clean for the provenance lines and an
    # interrupted run leaves the old record as it was.
    partial = f"{args.record}.partial"
    try:
        with open(partial, "w") as fh:
            fh.write("\n".join(record_header(argv)) + "\n")
            with contextlib.redirect_stdout(_Tee(sys.stdout, fh)):
                rows = _run(args)
            fh.write(f"\n# load average (1 min) at the end: {provenance.load_average()}\n")
        os.replace(partial, args.record)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    print(f"wrote {args.record}")
    return rows


def _run(args: argparse.Namespace) -> dict[str, list[Row]]:
    b = setup(args)
    print(f"bnsweep {code_version()} bench | {datetime.date.today()} | device {describe(b.device)} | "
          f"torch {torch.__version__} | python {platform.python_version()}")
    print(f"model {args.model} width {args.width:g}, batch {args.batch_size}, {args.precision}"
          f"{', compiled' if args.compile else ''}, planted CIFAR-shaped data; "
          f"median of {args.reps} reps after {args.warmup} warm-up, variants interleaved")
    return {part: PARTS[part](b) for part in args.part}
