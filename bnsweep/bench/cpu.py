"""Part cpu: what pays on this CPU, one thread as one trial of a CPU sweep gets: fp32 or bf16,
eager or torch.compile, for the laptop study's steps (resnet8 width 1, batch 128, PGD-3 with step
3/255 at 8/255).

Three steps are timed for each of the four variants (and, eager, in the NCHW layout trials ran in
before they ran channels_last on CPUs), interleaved, median of `--reps`: a clean
training step (`Trial.train_step` without attack), a PGD-k training step (k input-gradient passes
plus the training step) and one step of the evaluation's PGD (eval-mode BN, input gradient only, on
a batch). bnsweep evaluates in fp32 whatever `precision` says; the bf16 evaluation figures show what
that choice leaves on the table.

Compile time is measured apart, in fresh processes, because it depends on what the compile cache
holds: a first compile with an empty cache (what the first trial on a machine pays) and a second
process's with the cache the first one filled (what every later trial pays). Each process builds
the trial, runs the first PGD-k training step and the first evaluation step, then a second of each;
compile time = first - second. The timed compiled variants then load what those processes compiled
(a private cache, never bnsweep's own), so their warm-up does not compile a third time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F

from bnsweep.bench.common import LR, Bench, Row, cpu_name, median_times, with_config
from bnsweep.core import hardware
from bnsweep.core.choices import Precision
from bnsweep.core.config import TrialConfig, make_config
from bnsweep.core.data import Dataset, batches, load_dataset
from bnsweep.core.train import Trial
from bnsweep.core.trainable import frozen

STEPS = ("clean", "pgd", "eval")
STEP_NAMES = {"clean": "clean step", "pgd": "PGD-{k} step", "eval": "eval PGD step"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cpu part (defaults: the laptop study's adversarial step)")
    g.add_argument("--cpu-model", default="resnet8")
    g.add_argument("--cpu-width", type=float, default=1.0)
    g.add_argument("--cpu-batch-size", type=int, default=128)
    g.add_argument("--cpu-k", type=int, default=3, help="PGD steps of the training step (step 3/255)")
    g.add_argument("--cpu-precisions", nargs="+", choices=(Precision.FP32.value, Precision.BF16.value),
                   default=[Precision.FP32.value, Precision.BF16.value])
    g.add_argument("--cpu-compile", action=argparse.BooleanOptionalAction, default=True,
                   help="time the compiled variants and the compile (--no-cpu-compile: eager only)")
    g.add_argument("--cpu-nchw", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the eager variants in NCHW, against the channels_last trials run in")


QUICK = dict(cpu_width=0.25, cpu_batch_size=16, cpu_k=2, cpu_compile=False)


# -- the machine -------------------------------------------------------------------------------

def bf16_line() -> str:
    """Whether this CPU computes bf16 natively, from its flags (as lscpu shows them)."""
    flags = hardware.cpu_flags()
    found = [f for f in hardware.CPU_BF16_FLAGS if f in flags]
    if found:
        return f"native bf16: yes ({', '.join(found)})"
    avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"native bf16: no (no {' / '.join(hardware.CPU_BF16_FLAGS)} flag; {avx}: bf16 convolutions are emulated)"


# -- one variant -------------------------------------------------------------------------------

def _config(args: argparse.Namespace, precision: str, compiled: bool) -> TrialConfig:
    return make_config({"dataset": "planted", "model": args.cpu_model, "width": args.cpu_width,
                        "batch_size": args.cpu_batch_size, "device": "cpu", "precision": precision,
                        "compile": compiled, "train_attack": "pgd", "train_eps_255": 8, "train_steps": args.cpu_k,
                        "train_step_255": 3, "trainable": "all", "epochs": 1})


def eval_step(trial: Trial, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of the evaluation's PGD on a batch: eval-mode BN, parameters frozen, gradient to
    the input only, in the trial's precision and compile mode (bnsweep evaluates in fp32 eager)."""
    was_training = trial.model.training
    trial.model.eval()
    try:
        with frozen(trial.params):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad(), trial.autocast():
                loss = F.cross_entropy(trial.forward(x).float(), y, reduction="sum")
            return torch.autograd.grad(loss, [x])[0]
    finally:
        trial.model.train(was_training)


def nchw(trial: Trial) -> Trial:
    """The trial with its model in the NCHW layout (trials run channels_last)."""
    trial.model.to(memory_format=torch.contiguous_format)
    return trial


def step_functions(trial: Trial, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], Any]]:
    clean = make_config({"train_attack": "none"}, base=trial.cfg)
    return {"clean": lambda: with_config(trial, clean, x, y),
            "pgd": lambda: trial.train_step(x, y, LR),
            "eval": lambda: eval_step(trial, x, y)}


def _data(args: argparse.Namespace) -> Dataset:
    return load_dataset("planted", data_dir="data", download=False, n_train=args.cpu_batch_size, n_test=16,
                        data_seed=0, device=torch.device("cpu"))


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- compile time, in fresh processes ------------------------------------------------------------

def compile_probe(spec: dict[str, Any]) -> dict[str, float]:
    """In this (fresh) process: first and second PGD-k training step and evaluation step of a
    compiled trial; what the first calls cost beyond the second is the compile."""
    args = argparse.Namespace(**spec)
    torch.set_num_threads(1)
    start = time.perf_counter()
    trial = Trial(_config(args, spec["precision"], True), data=_data(args))
    x, y = next(batches(trial.data.train_x, trial.data.train_y, args.cpu_batch_size, shuffle=False, augment=False))
    built = time.perf_counter() - start
    fns = step_functions(trial, x, y)
    out = {"build_s": built}
    for name in ("pgd", "eval"):
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            fns[name]()
            times.append(time.perf_counter() - t0)
        out[f"{name}_compile_s"] = max(0.0, times[0] - times[1])
    return out


def _probe_in_process(spec: dict[str, Any], cache: str) -> dict[str, float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    code = ("import json, sys; from bnsweep.bench.cpu import compile_probe; "
            "print(json.dumps(compile_probe(json.loads(sys.argv[1]))))")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the compile probe failed:\n{done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - start}


def compile_times(args: argparse.Namespace, caches: str) -> list[Row]:
    """Per precision: a first compile with an empty cache (`caches`/PRECISION), then a second process
    with the cache it filled; then every precision's artefacts are merged into `caches`/all."""
    rows = []
    keys = ("cpu_model", "cpu_width", "cpu_batch_size", "cpu_k")
    for precision in args.cpu_precisions:
        cache = os.path.join(caches, precision)
        spec = {**{k: getattr(args, k) for k in keys}, "precision": precision}
        for run in ("first (empty cache)", "second (warm cache)"):
            rows.append({"precision": precision, "run": run, **_probe_in_process(spec, cache)})
        shutil.copytree(cache, os.path.join(caches, "all"), dirs_exist_ok=True)  # files are named by content hash
    return rows


# -- the part ----------------------------------------------------------------------------------

def cpu(b: Bench) -> list[Row]:
    """fp32/bf16 x eager/compiled for the clean, PGD-k and evaluation steps on one CPU thread."""
    a = b.args
    print(f"\n== cpu: {a.cpu_model} width {a.cpu_width:g}, batch {a.cpu_batch_size}, PGD-{a.cpu_k} at 8/255, "
          f"trainable all, 1 thread ==")
    print(f"cpu {cpu_name()}; {bf16_line()}; torch {torch.__version__}")
    if a.cpu_compile and not hardware.can_compile("cpu"):
        print("compiled variants skipped: torch.compile finds no C++ compiler here")
    compiles = (False, True) if a.cpu_compile and hardware.can_compile("cpu") else (False,)
    data = _data(a)
    x, y = next(batches(data.train_x, data.train_y, a.cpu_batch_size, shuffle=False, augment=False))
    with tempfile.TemporaryDirectory(prefix="bnsweep-bench-inductor-") as caches:
        compile_rows = compile_times(a, caches) if True in compiles else []
        # the warm-up's compiles load the probes' artefacts (Trial leaves a set TORCHINDUCTOR_CACHE_DIR alone)
        with one_thread(), mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": os.path.join(caches, "all")}):
            # NCHW first: fp32 eager NCHW, what every trial ran before, is the rows' yardstick
            trials = {(p, False, "NCHW"): nchw(Trial(_config(a, p, False), data=data))
                      for p in (a.cpu_precisions if a.cpu_nchw else ())}
            trials.update({(p, c, "NHWC"): Trial(_config(a, p, c), data=data) for p in a.cpu_precisions
                           for c in compiles})
            layouts = {"NHWC": x.contiguous(memory_format=torch.channels_last), "NCHW": x}
            variants = {(key, step): fn for key, trial in trials.items()
                        for step, fn in step_functions(trial, layouts[key[2]], y).items()}
            seconds = median_times(variants, a.reps, max(1, a.warmup), torch.device("cpu"))
    rows = []
    base = {step: seconds[next(iter(trials)), step] for step in STEPS}  # fp32 eager, NCHW if timed
    print(f"{'variant':<18}" + "".join(f"{STEP_NAMES[s].format(k=a.cpu_k):>22}" for s in STEPS))
    for (precision, compiled, layout) in trials:
        label = f"{precision} {'compiled' if compiled else 'eager'}{', NCHW' if layout == 'NCHW' else ''}"
        row: Row = {"kind": "throughput", "precision": precision, "compile": compiled, "layout": layout}
        cells = []
        for step in STEPS:
            s = seconds[(precision, compiled, layout), step]
            row[f"{step}_images_per_s"] = a.cpu_batch_size / s
            row[f"{step}_ratio"] = base[step] / s
            cells.append(f"{a.cpu_batch_size / s:>10.0f} img/s {base[step] / s:>5.2f}x")
        rows.append(row)
        print(f"{label:<18}" + "".join(f"{c:>22}" for c in cells))
    print("img/s: images per second of one thread; x: speed against the first row. Layout channels_last "
          "(as trials run) unless the row says NCHW. bnsweep's evaluation runs fp32.")
    if compile_rows:
        print(f"compile (fresh processes, 1 thread): {'precision':<10}{'run':<22}{'PGD step s':>11}{'eval step s':>12}"
              f"{'process s':>11}")
        for r in compile_rows:
            print(f"{'':<37}{r['precision']:<10}{r['run']:<22}{r['pgd_compile_s']:>11.1f}{r['eval_compile_s']:>12.1f}"
                  f"{r['process_s']:>11.1f}")
        print("compile s: first call - second call; process s: the whole probe (start, imports, build, "
              "2 calls of each step)")
    return rows + [{"kind": "compile", **r} for r in compile_rows]
