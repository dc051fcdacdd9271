"""Experiment directories for the results and analysis tests.

`ray_sweep` runs a real (tiny) Ray Tune sweep once per test session; `two_stage_sweep` a real tiny
bnsweep sweep of two stages; `mixed_sweep` writes, without Ray, a two-stage sweep whose trials ended
every way a trial can end.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

from bnsweep.testing import (
    FakeTrial,
    realistic_config,
    realistic_rows,
    write_experiment,
)

EPOCHS = 3
EVAL_EPS = [2, 4, 8]
# The metrics a trial reports that measure time: two runs of the same trial differ only in these.
TIMING = ("epoch_s", "images_per_s", "train_s")
# Trial keys of a sweep's real trials that train in about a second each.
TINY_TRIAL = dict(dataset="planted", n_train=96, n_test=48, model="resnet8", width=0.25, batch_size=48,
                  epochs=2, eval_n=24, eval_steps=2, eval_eps_255=[8], final_steps=2, train_steps=1,
                  train_step_255=8, device="cpu")


def tiny_trainable(config: dict) -> None:
    """Reports the contract's metrics per epoch with a checkpoint; (bn, seed 1) fails."""
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        if config["trainable"] == "bn" and config["seed"] == 1 and epoch == 2:
            raise RuntimeError("simulated failure in epoch 2")
        base = 0.5 + 0.1 * epoch + 0.01 * config["seed"] + (0.05 if config["trainable"] == "all" else 0)
        metrics = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": base, "clean_acc": base,
                   **{f"robust_acc_eps{e:g}": base / (1 + e / 4) for e in EVAL_EPS},
                   "lr": 0.1 / epoch, "images_per_s": 1000.0, "epoch_s": 0.1,
                   "n_trainable_params": 10, "n_params": 100}
        metrics["robust_acc"] = metrics["robust_acc_eps8"]
        if epoch == EPOCHS:
            metrics.update(final_clean_acc=base, final_robust_acc=metrics["robust_acc"] - 0.002,
                           final_attack="pgd")
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.txt").write_text(str(epoch))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def ray_sweep(base: Path) -> Path:
    """A sweep directory `base/ray_sweep` holding one Ray Tune experiment (stage `main`): 4 trials,
    trainable x seed, one of which errors. Built once; later calls reuse it."""
    sweep_dir = base / "ray_sweep"
    if (sweep_dir / "main").is_dir():
        return sweep_dir
    import ray
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file
    started = not ray.is_initialized()  # reuse a cluster another fixture started
    if started:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     [str(Path(__file__).parent.parent), str(Path(__file__).parent)])}})
    try:
        tune.Tuner(
            tiny_trainable,
            param_space={"trainable": tune.grid_search(["all", "bn"]),
                         "seed": tune.grid_search([0, 1]), "init": "random", "stage": "main",
                         "eval_eps_255": EVAL_EPS, "lr": 0.1, "final_attack": "pgd"},
            tune_config=tune.TuneConfig(metric="robust_acc", mode="max"),
            run_config=tune.RunConfig(storage_path=str(sweep_dir), name="main", verbose=0),
        ).fit()
    finally:
        if started:
            ray.shutdown()
    (sweep_dir / "sweep.yaml").write_text("metric: robust_acc\nmode: max\n")
    return sweep_dir


def two_stage_sweep(base: Path) -> str:
    """The study in miniature, run by bnsweep on the local Ray: pre-training (seeds 0, 1), then
    adversarial training of `trainable` bn or fc from its checkpoints or from random weights (gpu
    asked for, so run on the CPU with a warning): 10 trials of 2 epochs. Returns the sweep directory."""
    import yaml

    from bnsweep.layout.paths import sweep_dir
    from bnsweep.sweep.driver import execute
    from bnsweep.sweep.spec import load_sweep

    doc = {"name": "two", "trial": TINY_TRIAL, "grid": {"seed": [0, 1]}, "resources": {"cpu": 1, "gpu": 0.5},
           "stages": [{"name": "pre", "trial": {"train_attack": "none"}},
                      {"name": "adv", "grid": {"trainable": ["bn", "fc"],
                                               "init": [{"from_stage": "pre"}, "random"]}}]}
    path = base / "two.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))  # keys in the order written: run names follow it
    sweep = load_sweep(str(path))
    root = sweep_dir(str(base / "results"), sweep.name)
    execute(sweep, root, resume=False)
    return root


def _rows(rng: random.Random, epochs: int = EPOCHS, final: bool = True) -> list[dict]:
    return realistic_rows(epochs, rng, final=final)


def mixed_sweep(base: Path) -> Path:
    """A sweep directory with stages `pre` (2 terminated trials) and `adv` (terminated,
    error, running, pending, diverged, and a trial started after the last state snapshot)."""
    rng = random.Random(0)
    sweep_dir = base / "mixed"
    (sweep_dir).mkdir(parents=True)
    (sweep_dir / "sweep.yaml").write_text(
        "metric: robust_acc\nmode: max\nstages:\n  - name: pre\n    metric: clean_acc\n"
        "  - name: adv\n    mode: max\n")

    def cfg(seed: int, stage: str, trainable: str = "bn") -> dict:
        config = realistic_config(seed, trainable, "random" if stage == "pre" else "from_stage:pre",
                                  stage)
        config["epochs"] = EPOCHS
        return config

    write_experiment(sweep_dir / "pre", [FakeTrial(cfg(s, "pre", "all"), _rows(rng))
                                         for s in (0, 1)], prefix="pre01")
    diverged = _rows(rng, epochs=2, final=False)
    diverged[-1].update(train_loss=float("nan"), diverged=True,
                        diverged_reason="train_loss is nan in epoch 2")
    write_experiment(sweep_dir / "adv", [
        FakeTrial(cfg(0, "adv"), _rows(rng)),
        FakeTrial(cfg(1, "adv"), _rows(rng)),
        FakeTrial(cfg(2, "adv"), _rows(rng, final=False)[:1], status="ERROR",
                  error="RuntimeError: CUDA out of memory"),
        FakeTrial(cfg(3, "adv"), _rows(rng, final=False)[:2], status="RUNNING"),
        FakeTrial(cfg(4, "adv"), status="PENDING"),
        FakeTrial(cfg(5, "adv"), diverged),
        FakeTrial(cfg(6, "adv"), _rows(rng, final=False)[:1], status="RUNNING", in_state=False),
    ], prefix="adv02")
    return sweep_dir
