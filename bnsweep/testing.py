"""Synthetic Ray Tune experiment directories, for tests and the loading benchmark.

Writing Ray's on-disk layout directly (no Ray run) makes a 1,000-trial experiment in seconds, so the
speed of `results.load` / `results.history` can be measured at sweep scale, and tests can build
experiments with failed, running and pending trials exactly as Ray 2.60 leaves them on disk.

Their accuracies are made up, so every row `realistic_rows` makes reports the metric `synthetic`
(true): tables, figures and reports made from them say SYNTHETIC in their titles.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SESSION = "2026-01-01_00-00-00"


@dataclass
class FakeTrial:
    """One trial as Ray would leave it: its config, the rows it reported and its final state."""

    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "TERMINATED"  # Ray's spelling: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    error: str | None = None  # last line of error.txt for an ERROR trial
    in_state: bool = True  # False: started after the last experiment_state snapshot
    checkpoint_every: int = 1


def _ray_row(row: dict[str, Any], i: int, trial_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """A reported row with the keys Ray adds (config included, as Ray's JSON logger writes it)."""
    return {
        **row,
        "timestamp": 1_767_225_600 + 60 * i,
        "checkpoint_dir_name": None,
        "should_checkpoint": False,
        "done": False,
        "training_iteration": i,
        "trial_id": trial_id,
        "date": SESSION,
        "time_this_iter_s": 60.0,
        "time_total_s": 60.0 * i,
        "pid": 1234,
        "hostname": "node",
        "node_ip": "10.0.0.1",
        "config": config,
        "time_since_restore": 60.0 * i,
        "iterations_since_restore": i,
    }


def _write_trial_dir(trial_dir: Path, trial: FakeTrial, trial_id: str) -> list[dict[str, Any]]:
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps(trial.config, indent=2, sort_keys=True))
    rows = [_ray_row(r, i, trial_id, trial.config) for i, r in enumerate(trial.rows, start=1)]
    checkpoints = 0
    for i, row in enumerate(rows, start=1):
        if i % trial.checkpoint_every == 0:
            name, checkpoints = f"checkpoint_{checkpoints:06d}", checkpoints + 1
            row["checkpoint_dir_name"], row["should_checkpoint"] = name, True
            (trial_dir / name).mkdir()
            (trial_dir / name / "state.pt").write_bytes(b"0")
    with open(trial_dir / "result.json", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    _write_progress_csv(trial_dir / "progress.csv", rows)
    if trial.status == "ERROR":
        message = trial.error or "RuntimeError: trial failed"
        (trial_dir / "error.txt").write_text(
            f"Failure # 1 (occurred at {SESSION})\nTraceback (most recent call last):\n"
            f'  File "train.py", line 1, in fit\n{message}\n'
        )
    return rows


def _write_progress_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Like Ray's CSV logger: the header comes from the first row, later new keys are dropped."""
    if not rows:
        path.write_text("")
        return
    fields = [k for k in rows[0] if k != "config"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _state_entry(trial: FakeTrial, trial_id: str, logdir: str, rows: list[dict]) -> list[str]:
    """The pair of JSON strings Ray keeps per trial in experiment_state-*.json."""
    blob = "80" * (600 * sum(1 for r in rows if r["checkpoint_dir_name"]))  # pickled checkpoints
    trial_json = {
        "stub": False,
        "trainable_name": "train_fn",
        "trial_id": trial_id,
        "config": trial.config,
        "status": trial.status,
        "relative_logdir": logdir,
        "experiment_tag": trial_id,
    }
    runtime = {
        "start_time": 1_767_225_600.0,
        "num_failures": int(trial.status == "ERROR"),
        "error_filename": "error.txt" if trial.status == "ERROR" else None,
        "pickled_error_filename": "error.pkl" if trial.status == "ERROR" else None,
        "last_result": {**rows[-1], "done": trial.status == "TERMINATED"} if rows else {},
        "checkpoint_manager": {"_type": "CLOUDPICKLE_FALLBACK", "value": blob},
    }
    return [json.dumps(trial_json, indent=2), json.dumps(runtime, indent=2)]


def write_experiment(exp_dir: str | Path, trials: list[FakeTrial], prefix: str = "a0b1c") -> Path:
    """Write a Ray Tune 2.60 experiment directory holding `trials`; returns `exp_dir`."""
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    trial_data = []
    for i, trial in enumerate(trials):
        trial_id = f"{prefix}_{i:05d}"
        logdir = f"train_fn_{trial_id}_{i}_seed={trial.config.get('seed')}_{SESSION}"
        rows = [] if trial.status == "PENDING" else _write_trial_dir(exp_dir / logdir, trial, trial_id)
        if trial.in_state:
            trial_data.append(_state_entry(trial, trial_id, logdir, rows))
    state = {
        "trial_data": trial_data,
        "runner_data": {"_start_time": 1_767_225_600.0, "_session_str": SESSION},
        "stats": {"start_time": 1_767_225_600.0},
    }
    (exp_dir / f"experiment_state-{SESSION}.json").write_text(json.dumps(state, indent=2))
    (exp_dir / "tuner.pkl").write_bytes(b"\x80\x05N.")  # never read: loading must not unpickle
    return exp_dir


EVAL_EPS = [0.5, 1, 2, 4, 8, 16]


def realistic_config(seed: int, trainable: str, init: str, stage: str = "main") -> dict[str, Any]:
    """A trial config with every key of `TrialConfig`, as the sweep layer writes params.json."""
    from bnsweep.core.config import TrialConfig

    return {**TrialConfig().to_dict(),
            "dataset": "cifar10", "model": "resnet20", "trainable": trainable, "init": init,
            "epochs": 50, "eval_eps_255": EVAL_EPS, "final_attack": "autoattack", "seed": seed,
            "data_dir": "/data/cifar10", "n_train": 50000, "n_test": 10000, "init_checkpoint": "",
            "stage": stage}


def realistic_rows(epochs: int, rng: random.Random, final: bool = True, *, clean: float = 0.8,
                   robust: float = 0.8 * math.exp(-8 / 6), robust_eps: float = 8.0,
                   eval_eps: list[float] = EVAL_EPS, final_attack: str = "autoattack") -> list[dict[str, Any]]:
    """Per-epoch metrics with the contract's names, ending near `clean` clean and `robust` robust
    accuracy at 8/255 (falling geometrically with the radius); `robust_acc` is at `robust_eps`, as
    a trial reports it. The last row carries the final metrics. Every row says `synthetic`: the
    numbers are made up."""
    rows = []
    for epoch in range(1, epochs + 1):
        progress = epoch / epochs
        scale = (0.375 + 0.625 * progress) + rng.uniform(-0.01, 0.01) / clean
        acc = clean * scale
        row: dict[str, Any] = {"epoch": epoch, "train_loss": 2.0 - 1.5 * progress, "train_acc": acc + 0.05,
               "clean_acc": acc}
        for eps in eval_eps:
            row[f"robust_acc_eps{eps:g}"] = acc * (robust / clean) ** (eps / 8)
        row["robust_acc"] = acc * (robust / clean) ** (robust_eps / 8)
        row.update(lr=0.1 * (1 - progress), images_per_s=2500.0, epoch_s=20.0,
                   n_trainable_params=272474, n_params=272474, synthetic=True)
        rows.append(row)
    if final and rows:
        rows[-1].update(final_clean_acc=rows[-1]["clean_acc"],
                        final_robust_acc=max(0.0, rows[-1]["robust_acc"] - 0.005),
                        final_attack=final_attack)
    return rows


def write_benchmark_experiment(exp_dir: Path, n_trials: int, epochs: int, seed: int = 0) -> Path:
    """A sweep-scale experiment: settings x seeds, every trial terminated with `epochs` rows."""
    rng = random.Random(seed)
    settings = [(t, i) for t in ("all", "bn", "bn+fc", "fc", "none") for i in ("random", "pretrained")]
    trials = []
    for k in range(n_trials):
        trainable, init = settings[k % len(settings)]
        trials.append(FakeTrial(realistic_config(k // len(settings), trainable, init),
                                realistic_rows(epochs, rng), checkpoint_every=max(1, epochs // 2)))
    return write_experiment(exp_dir, trials)


# Made-up end points (clean, robust at 8/255) per (trainable, pre-trained?) for the example sweep:
# shaped like the study's claim (BN-only training robustifies pre-trained features, not random
# ones), not measured.
EXAMPLE_ACCURACY = {("all", True): (0.80, 0.45), ("all", False): (0.78, 0.43),
                    ("bn", True): (0.70, 0.25), ("bn", False): (0.35, 0.08),
                    ("bn+fc", True): (0.74, 0.30), ("bn+fc", False): (0.40, 0.12),
                    ("fc", True): (0.60, 0.10), ("fc", False): (0.25, 0.05)}


def write_example_sweep(root: Path, epochs: int = 3, seeds: int = 3) -> Path:
    """A finished two-stage sweep directory like sweeps/demo.yaml's (`pretrain`: clean training,
    then `adv`: PGD at 8/255 with trainable x init from it), with made-up accuracies, for the
    analysis scripts' `--smoke-test` and for trying the results API without a GPU."""
    root = Path(root)
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.yaml").write_text("name: example\nstages:\n  - name: pretrain\n  - name: adv\n")
    eval_eps = [2.0, 4.0, 8.0]

    def config(seed: int, stage: str, trainable: str, init: str, **keys: Any) -> dict[str, Any]:
        return {**realistic_config(seed, trainable, init, stage), "epochs": epochs,
                "eval_eps_255": eval_eps, **keys}

    pretrain = [FakeTrial(config(s, "pretrain", "all", "random", train_attack="none", final_attack="pgd"),
                          realistic_rows(epochs, rng, clean=0.85 + rng.uniform(-0.01, 0.01), robust=0.004,
                                         robust_eps=2.0, eval_eps=eval_eps, final_attack="pgd"))
                for s in range(seeds)]
    write_experiment(root / "pretrain", pretrain, "pre00")
    adv = []
    for trainable in ("all", "bn", "bn+fc", "fc"):
        for init in ("from_stage:pretrain", "random"):
            clean, robust = EXAMPLE_ACCURACY[trainable, init != "random"]
            adv += [FakeTrial(config(s, "adv", trainable, init),
                              realistic_rows(epochs, rng, clean=clean + rng.uniform(-0.02, 0.02),
                                             robust=robust + rng.uniform(-0.02, 0.02), eval_eps=eval_eps))
                    for s in range(seeds)]
    write_experiment(root / "adv", adv, "adv00")
    return root
