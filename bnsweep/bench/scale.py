"""Part scale: bnsweep's sweep layer against bare Ray Tune, on many short trials, side by side.

The same trials (default 200, each 1 epoch of PGD-2 training on 64 planted images) run twice at the
same time on one local Ray, each run with half its CPUs: once as `bnsweep run --address` (the sweep
file parsed and validated, `run_trial` around `train.fit`, bnsweep's state file and summary), once
as a bare `tune.Tuner` over the few lines a Ray Tune user writes around `train.fit` (report each
epoch with its checkpoint), with the same resources, storage and Tune settings (search,
reuse_actors, checkpoints kept, failures allowed). Running both at once makes the ratio fair on a
machine shared with other work. Each driver is a process of its own; printed for each: wall time
(the process, Ray's start-up excluded), time to the first report, the median trial time, the
driver's peak memory and the bytes the experiment wrote, checkpoints apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

Row = dict[str, Any]
QUICK = dict(scale_trials=4, scale_warmup=0, scale_width=0.25)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale-trials", type=int, default=200, help="trials of each run (scale)")
    p.add_argument("--scale-n-train", type=int, default=64, help="planted training images per trial (scale)")
    p.add_argument("--scale-model", default="resnet8", help="model of the scale trials (short on purpose)")
    p.add_argument("--scale-width", type=float, default=0.5)
    p.add_argument("--scale-warmup", type=int, default=2,
                   help="trials of an untimed bare run first, so both timed runs find the OS caches warm (scale)")


def bare_trial(config: dict[str, Any]) -> None:
    """What a Ray Tune user writes around bnsweep's training loop: fit, reporting each epoch."""
    from ray import tune

    from bnsweep.core.config import TrialConfig
    from bnsweep.core.train import fit

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    fit(TrialConfig(**{k: v for k, v in config.items() if k != "stage"}), report)


def bare_tune(address: str | None, storage: str, config: dict[str, Any], trials: int, at_once: int) -> None:
    """The bare run: a Tuner over `bare_trial` with the Tune settings bnsweep uses."""
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if address:
        ray.init(address=address)
    tune.Tuner(
        tune.with_resources(bare_trial, {"cpu": 1}),
        param_space={**config, "stage": "main", "seed": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(metric="robust_acc", mode="max", reuse_actors=True,
                                    search_alg=BasicVariantGenerator(random_state=0, max_concurrent=at_once)),
        run_config=tune.RunConfig(name="main", storage_path=storage, verbose=1,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  failure_config=tune.FailureConfig(max_failures=2))).fit()


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(bytes in all, bytes in checkpoint directories, checkpoint directories)."""
    total = checkpoint = 0
    dirs = set()
    for path in root.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            if any(p.startswith("checkpoint_") for p in path.relative_to(root).parts):
                checkpoint += size
                dirs.add(path.parent)
    return total, checkpoint, len(dirs)


def _side_by_side(runs: dict[str, tuple[list[str], Path]], logs: Path) -> dict[str, Row]:
    """Start every driver at once; note each one's first result, wall time and peak memory."""
    start = time.perf_counter()
    procs = {}
    for name, (argv, _) in runs.items():
        with open(logs / f"{name.replace(' ', '_')}.log", "w") as log:
            procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    out: dict[str, Row] = {name: {"run": name, "first_report_s": None} for name in runs}
    while len([r for r in out.values() if "wall_s" in r]) < len(runs):
        for name, proc in procs.items():
            row, experiment = out[name], runs[name][1]
            if row["first_report_s"] is None and any(p.stat().st_size for p in experiment.glob("*/result.json")):
                row["first_report_s"] = time.perf_counter() - start
            if "wall_s" not in row:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    if proc.returncode:
                        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {logs}")
                    row.update(wall_s=time.perf_counter() - start, peak_rss_mb=usage.ru_maxrss / 2**10)
        time.sleep(0.05)
    return out


def scale(b) -> list[Row]:
    import ray

    from bnsweep import results
    from bnsweep.bench.common import ray_session, target
    from bnsweep.sweep.spec import load_sweep

    a = b.args
    at_once = max(1, (os.cpu_count() or 2) // 2)
    trial = {"dataset": "planted", "model": a.scale_model, "width": a.scale_width, "n_train": a.scale_n_train,
             "n_test": 64, "eval_n": 64, "eval_steps": 2, "epochs": 1, "train_steps": 2, "batch_size": 64,
             "final_attack": "none", "device": "cpu"}
    doc = {"name": "scale", "resources": {"cpu": 1}, "max_concurrent": at_once, "trial": trial,
           "grid": {"seed": list(range(a.scale_trials))}}
    print(f"\n== scale: {a.scale_trials} trials of 1 epoch (PGD-2, {a.scale_n_train} planted images, {a.scale_model} "
          f"width {a.scale_width:g}), cpu 1 per trial, {at_once} at once per run, bnsweep run and bare Ray Tune "
          "side by side on one Ray ==")
    with tempfile.TemporaryDirectory(prefix="bnsweep-scale-") as tmp:
        sweep_file = Path(tmp, "scale.yaml")
        sweep_file.write_text(yaml.safe_dump(doc))
        config = Path(tmp, "bare.json")
        config.write_text(json.dumps(load_sweep(str(sweep_file)).stages[0].base))
        with ray_session():
            if a.scale_warmup:
                bare_tune(None, f"{tmp}/warmup", json.loads(config.read_text()), a.scale_warmup, at_once)
            address = ray.get_runtime_context().gcs_address
            runs = {
                "bnsweep run": ([sys.executable, "-m", "bnsweep", "run", str(sweep_file), "--storage", f"{tmp}/ours",
                                 "--address", address], Path(tmp, "ours", "scale", "main")),
                "bare Ray Tune": ([sys.executable, "-m", "bnsweep.bench.scale", address, f"{tmp}/bare", str(config),
                                   str(a.scale_trials), str(at_once)], Path(tmp, "bare", "main")),
            }
            rows = _side_by_side(runs, Path(tmp))
        for name, row in rows.items():
            experiment = runs[name][1]
            total, checkpoints, n = disk_usage(experiment.parent if name == "bnsweep run" else experiment)
            row.update(trial_s=float(results.load(experiment)["time_total_s"].median()), disk_mb=total / 2**20,
                       checkpoint_mb=checkpoints / 2**20, checkpoints=n)
    ours, bare = rows["bnsweep run"], rows["bare Ray Tune"]
    print(f"{'':15}{'wall s':>8}{'first report s':>16}{'median trial s':>16}{'driver peak RSS MB':>20}"
          f"{'written MB':>12}{'of which checkpoints':>22}")
    for r in (ours, bare):
        first = "-" if r["first_report_s"] is None else f"{r['first_report_s']:.1f}"
        print(f"{r['run']:15}{r['wall_s']:>8.1f}{first:>16}{r['trial_s']:>16.2f}{r['peak_rss_mb']:>20.0f}"
              f"{r['disk_mb']:>12.1f}{r['checkpoint_mb']:>14.1f} ({r['checkpoints']})")
    ours["ratio"] = ours["wall_s"] / bare["wall_s"]
    print(f"wall time bnsweep / bare Ray Tune: {ours['ratio']:.3f} {target(ours['ratio'], '<= 1.10')}; "
          f"bnsweep wrote per trial "
          f"{ours['disk_mb'] / a.scale_trials:.2f} MB, of which checkpoints "
          f"{ours['checkpoint_mb'] / a.scale_trials:.2f} MB")
    return [ours, bare]


if __name__ == "__main__":  # the bare run's driver: ADDRESS STORAGE CONFIG_JSON TRIALS AT_ONCE
    address, storage, config_file, trials, at_once = sys.argv[1:]
    with open(config_file) as fh:
        bare_tune(address, storage, json.load(fh), int(trials), int(at_once))
