"""Part scale: bnsweep's sweep layer against bare Ray Tune, on many short trials.

The same trials (default 200, each 1 epoch of PGD training on 64 planted images) run twice on one
local Ray, in one process: once as `bnsweep run` runs them (`sweep.driver.execute`: the sweep file
parsed and validated, `run_trial` around `train.fit`, bnsweep's state file) and once through a bare
`tune.Tuner` over the few lines a Ray Tune user writes around `train.fit` (report each epoch with its
checkpoint). Both get the same resources, storage, and Tune settings (search, reuse_actors,
checkpoints kept, failures allowed), so the difference is bnsweep's layer. Printed for each: wall
time (Ray's start-up excluded: one Ray serves both), time to the first report, the driver's peak
memory, and the bytes the experiment wrote, checkpoints apart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml

Row = dict[str, Any]
QUICK = dict(scale_trials=4, scale_warmup=0, scale_width=0.25)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale-trials", type=int, default=200, help="trials of each run (scale)")
    p.add_argument("--scale-n-train", type=int, default=64, help="planted training images per trial (scale)")
    p.add_argument("--scale-model", default="resnet8", help="model of the scale trials (short on purpose)")
    p.add_argument("--scale-width", type=float, default=0.5)
    p.add_argument("--scale-warmup", type=int, default=2,
                   help="trials of an untimed bare run first, so both timed runs find Ray's workers warm (scale)")


def bare_trial(config: dict[str, Any]) -> None:
    """What a Ray Tune user writes around bnsweep's training loop: fit, reporting each epoch."""
    from ray import tune

    from bnsweep.core.config import TrialConfig
    from bnsweep.core.train import fit

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    fit(TrialConfig(**{k: v for k, v in config.items() if k != "stage"}), report)


class Watch:
    """Samples the driver's resident memory and notes when the first trial result appears."""

    def __init__(self, experiment: Path):
        self.experiment, self.start = experiment, time.perf_counter()
        self.first_report: float | None = None
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.05):
            with open("/proc/self/statm") as fh:
                self.peak_rss = max(self.peak_rss, int(fh.read().split()[1]) * page)
            if self.first_report is None and any(p.stat().st_size for p in self.experiment.glob("*/result.json")):
                self.first_report = time.perf_counter() - self.start

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self.start


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(bytes in all, bytes in checkpoint directories, checkpoint directories)."""
    total = checkpoint = 0
    dirs = set()
    for path in root.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            parts = [p for p in path.relative_to(root).parts if p.startswith("checkpoint_")]
            if parts:
                checkpoint += size
                dirs.add(path.parent)
    return total, checkpoint, len(dirs)


def _timed(name: str, experiment: Path, run: Callable[[], Any], size_of: Path) -> Row:
    with Watch(experiment) as watch:
        run()
    total, checkpoints, n = disk_usage(size_of)
    return {"run": name, "wall_s": watch.seconds, "first_report_s": watch.first_report,
            "peak_rss_mb": watch.peak_rss / 2**20, "disk_mb": total / 2**20,
            "checkpoint_mb": checkpoints / 2**20, "checkpoints": n}


def scale(b) -> list[Row]:
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from bnsweep.sweep.driver import connect, execute
    from bnsweep.sweep.spec import load_sweep

    a = b.args
    trial = {"dataset": "planted", "model": a.scale_model, "width": a.scale_width, "n_train": a.scale_n_train, "n_test": 64,
             "eval_n": 64, "eval_steps": 2, "epochs": 1, "train_steps": 2, "batch_size": 64,
             "final_attack": "none", "device": "cpu"}
    doc = {"name": "scale", "resources": {"cpu": 1}, "trial": trial, "grid": {"seed": list(range(a.scale_trials))}}
    slots = int(os.cpu_count() or 1)
    print(f"\n== scale: {a.scale_trials} trials of 1 epoch (PGD-2, {a.scale_n_train} planted images, {a.scale_model} "
          f"width {a.scale_width:g}), cpu 1 per trial, up to {slots} at once: bnsweep run vs bare Ray Tune ==")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bnsweep-scale-") as tmp:
        sweep_file = Path(tmp, "scale.yaml")
        sweep_file.write_text(yaml.safe_dump(doc))
        stage = load_sweep(str(sweep_file)).stages[0]

        def bare(name: str, seeds: int) -> Callable[[], Any]:
            space = {**stage.base, "stage": "main", "seed": tune.grid_search(list(range(seeds)))}
            return lambda: tune.Tuner(
                tune.with_resources(bare_trial, {"cpu": 1}), param_space=space,
                tune_config=tune.TuneConfig(metric=stage.metric, mode=stage.mode, reuse_actors=True,
                                            search_alg=BasicVariantGenerator(random_state=stage.seed)),
                run_config=tune.RunConfig(
                    name="main", storage_path=f"{tmp}/{name}", verbose=1,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=stage.checkpoints_to_keep),
                    failure_config=tune.FailureConfig(max_failures=stage.max_failures))).fit()

        root = f"{tmp}/results/scale"
        connect(None)
        try:
            if a.scale_warmup:
                bare("warmup", a.scale_warmup)()
            rows.append(_timed("bnsweep run", Path(root, "main"),
                               lambda: execute(load_sweep(str(sweep_file)), root, resume=False), Path(root)))
            rows.append(_timed("bare Ray Tune", Path(tmp, "bare", "main"), bare("bare", a.scale_trials),
                               Path(tmp, "bare")))
        finally:
            ray.shutdown()
    print(f"{'':15}{'wall s':>8}{'first report s':>16}{'driver peak RSS MB':>20}{'written MB':>12}"
          f"{'of which checkpoints':>22}")
    for r in rows:
        first = "-" if r["first_report_s"] is None else f"{r['first_report_s']:.1f}"
        print(f"{r['run']:15}{r['wall_s']:>8.1f}{first:>16}{r['peak_rss_mb']:>20.0f}{r['disk_mb']:>12.1f}"
              f"{r['checkpoint_mb']:>14.1f} ({r['checkpoints']})")
    ratio = rows[0]["wall_s"] / rows[1]["wall_s"]
    per_trial = {k: rows[0][k] / a.scale_trials for k in ("disk_mb", "checkpoint_mb")}
    print(f"wall time bnsweep / bare Ray Tune: {ratio:.3f} (goal <= 1.10); bnsweep wrote per trial "
          f"{per_trial['disk_mb']:.2f} MB, of which checkpoints {per_trial['checkpoint_mb']:.2f} MB")
    rows[0]["ratio"] = ratio
    return rows
