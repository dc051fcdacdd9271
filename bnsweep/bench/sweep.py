"""The Ray parts of `python -m bnsweep.bench`: packing trials on one device, and sweep overhead.

packing   aggregate training images/s of 1, 2, 4, 8 concurrent resnet20 trials sharing one GPU
          through Ray Tune's fractional `gpu` resources, against one trial alone (on a machine
          without a GPU: 1, 2, ... concurrent one-CPU trials, up to the CPU count)
overhead  a sweep of short trials run with `bnsweep.sweep.execute`, as `bnsweep run` does:
          sum of trial compute time / (wall time x concurrent slots), with and without Ray's start-up
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import yaml

Row = dict[str, Any]


def _packed_trial(config: dict[str, Any]) -> None:
    """Train `epochs` epochs of PGD-k on device-resident synthetic data; report images and times."""
    import torch
    from ray import tune

    from bnsweep.bench.common import synthetic_cifar
    from bnsweep.core.config import make_config
    from bnsweep.core.train import Trial

    torch.set_num_threads(max(1, int(config["threads"])))
    cfg = make_config({"dataset": "planted", "model": config["model"], "width": config["width"],
                       "train_steps": config["steps"], "batch_size": config["batch_size"], "epochs": 1,
                       "device": config["device"], "eval_n": 64})
    trial = Trial(cfg, data=synthetic_cifar(config["batch_size"] * config["batches"], torch.device(config["device"])))
    trial.train_epoch()  # warm-up: CUDA context, cuDNN autotuning
    if config["device"].startswith("cuda"):
        torch.cuda.synchronize()
    _all_warm(config["ready"], config["i"], config["n"])
    start = time.time()
    for _ in range(config["epochs"]):
        trial.train_epoch()
    if config["device"].startswith("cuda"):
        torch.cuda.synchronize()
    tune.report({"images": config["epochs"] * len(trial.data.train_y), "start": start, "end": time.time()})


def _all_warm(ready: str, i: int, n: int, timeout: float = 300) -> None:
    """Wait until all `n` packed trials are warm, so that their timed epochs overlap: trials start
    seconds apart (process, CUDA context), and a trial timed alone meanwhile would flatter packing."""
    open(os.path.join(ready, str(i)), "w").close()
    deadline = time.time() + timeout
    while len(os.listdir(ready)) < n and time.time() < deadline:
        time.sleep(0.05)


def packing(b) -> list[Row]:
    """Aggregate images/s of n concurrent trials on one device vs one trial alone."""
    import torch
    from ray import tune

    from bnsweep.bench.common import ray_session

    a = b.args
    cuda = torch.cuda.is_available()
    counts = a.pack_counts if cuda else [n for n in a.pack_counts if n <= (os.cpu_count() or 1)]
    device = "cuda" if cuda else "cpu"
    print(f"\n== packing: {a.pack_model} PGD-{a.pack_steps} trials sharing one {'GPU' if cuda else 'CPU'} "
          f"through Ray Tune ({'gpu 1/n' if cuda else 'cpu 1'} per trial), batch {a.pack_batch_size} ==")
    rows = []
    with ray_session():
        for n in counts:
            resources: dict[str, float] = {"cpu": 1, "gpu": 1 / n} if cuda else {"cpu": 1}
            with tempfile.TemporaryDirectory() as storage:
                ready = os.path.join(storage, "ready")
                os.mkdir(ready)
                space = {"i": tune.grid_search(list(range(n))), "n": n, "ready": ready, "model": a.pack_model,
                         "width": a.width, "steps": a.pack_steps, "batch_size": a.pack_batch_size,
                         "batches": a.pack_batches, "epochs": a.pack_epochs, "device": device, "threads": 1}
                grid = tune.Tuner(tune.with_resources(_packed_trial, resources), param_space=space,
                                  run_config=tune.RunConfig(storage_path=storage, name="packing", verbose=0)).fit()
                metrics = [grid[i].metrics or {} for i in range(len(grid))]
            if not all("end" in m for m in metrics):  # stopped (Ctrl-C, a time limit) before all reported
                print(f"packing: {n} trials: stopped before every trial reported; not timed, none after it")
                break
            seconds = max(m["end"] for m in metrics) - min(m["start"] for m in metrics)
            rows.append({"trials": n, "images_per_s": sum(m["images"] for m in metrics) / seconds})
    if not rows:
        return rows
    alone = rows[0]["images_per_s"]
    print(f"{'trials':>6}{'aggregate img/s':>17}{'vs one alone':>14}")
    for r in rows:
        r["ratio"] = r["images_per_s"] / alone
        print(f"{r['trials']:>6}{r['images_per_s']:>17.0f}{r['ratio']:>13.2f}x")
    return rows


def overhead(b) -> list[Row]:
    """Share of a sweep's wall time spent in trial computation, through the real sweep path."""
    from bnsweep import results
    from bnsweep.bench.common import ray_session, target
    from bnsweep.layout.paths import sweep_dir
    from bnsweep.sweep.driver import execute
    from bnsweep.sweep.spec import load_sweep

    a = b.args
    slots = min(a.overhead_trials, os.cpu_count() or 1)
    doc = {"name": "overhead", "resources": {"cpu": 1},
           "trial": {"dataset": "planted", "model": a.model, "width": a.width, "n_train": a.overhead_n_train,
                     "n_test": 256, "eval_n": 128, "epochs": a.overhead_epochs, "train_steps": 3,
                     "batch_size": a.batch_size, "final_attack": "none", "device": "cpu"},
           "grid": {"seed": list(range(a.overhead_trials))}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "overhead.yaml")
        with open(path, "w") as fh:
            yaml.safe_dump(doc, fh)
        start = time.perf_counter()
        with ray_session():  # a Ray running already (the tests') starts in no time
            started = time.perf_counter()
            root = sweep_dir(os.path.join(tmp, "results"), "overhead")
            execute(load_sweep(path), root, resume=False)
            end = time.perf_counter()
        hist = results.history(root)
    compute = hist["epoch_s"].sum()
    per_trial = compute / a.overhead_trials
    total = compute / ((end - start) * slots)
    after_start = compute / ((end - started) * slots)
    print(f"\n== overhead: {a.overhead_trials} trials of {per_trial:.1f} s compute each, {slots} concurrent slots, "
          f"through bnsweep's sweep path ==")
    print(f"compute share of wall x slots: {total:.3f} with Ray's start-up ({started - start:.1f} s), "
          f"{after_start:.3f} without {target(after_start, '>= 0.9', 'for trials of 30 s or more')}")
    return [{"trials": a.overhead_trials, "trial_s": per_trial, "share": total, "share_after_start": after_start}]


def add_arguments(p) -> None:
    p.add_argument("--pack-counts", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrent trials (packing)")
    p.add_argument("--pack-model", default="resnet20")
    p.add_argument("--pack-steps", type=int, default=10, help="PGD steps of the packed trials")
    p.add_argument("--pack-batch-size", type=int, default=128)
    p.add_argument("--pack-batches", type=int, default=8, help="batches per epoch of a packed trial")
    p.add_argument("--pack-epochs", type=int, default=3, help="timed epochs per packed trial")
    p.add_argument("--overhead-trials", type=int, default=4)
    p.add_argument("--overhead-epochs", type=int, default=3)
    p.add_argument("--overhead-n-train", type=int, default=1024, help="sized so that a trial computes ~30 s here")


QUICK = dict(pack_counts=[1, 2], pack_model="resnet8", pack_steps=1, pack_batch_size=16, pack_batches=2,
             pack_epochs=1, overhead_trials=2, overhead_epochs=1, overhead_n_train=32)
