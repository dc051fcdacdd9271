"""Run a sweep file through bnsweep's driver (`execute`, as `bnsweep run` does) on the Ray cluster at
ADDRESS, each trial wrapped so that it records when it ran and what Ray gave it: how tests watch Ray
pack trials onto GPUs without looking at Ray's scheduler.

    python _marked_sweep.py SWEEP STORAGE ADDRESS MARKS EXPECTED

Each trial (the real `run_trial`) first holds until EXPECTED trials run at once, or until every trial
not yet ended runs (so trials that can run together surely overlap; a trial that could run beside
them but is held back by Ray shows as a timeout in the test), then trains, then writes a JSON file
to MARKS/done/: trial id, start and end time, CUDA_VISIBLE_DEVICES and Ray's GPU ids. This file is
run as a script, so the wrapper is pickled by value and the cluster's workers need only bnsweep.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from bnsweep.layout.paths import sweep_dir
from bnsweep.sweep.driver import execute
from bnsweep.sweep.spec import load_sweep
from bnsweep.sweep.trial import run_trial

HOLD_S = 60  # longest wait for the trials that should run beside this one (reached only on failure)


def marked(marks: Path, expected: int, total: int):
    def trial(config, storage_root=None):
        import ray
        from ray import tune

        running, done = marks / "running", marks / "done"
        mine = running / uuid.uuid4().hex
        start = time.time()
        mine.touch()
        while time.time() < start + HOLD_S:
            if len(list(running.iterdir())) >= min(expected, total - len(list(done.iterdir()))):
                break
            time.sleep(0.05)
        try:
            run_trial(config, storage_root)
        finally:
            end = time.time()
            mine.unlink()
            record = {"trial_id": tune.get_context().get_trial_id(), "start": start, "end": end,
                      "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
                      "gpu_ids": [str(i) for i in ray.get_gpu_ids()]}
            (done / mine.name).write_text(json.dumps(record))

    return trial


def main(sweep_file: str, storage: str, address: str, marks: str, expected: str) -> None:
    sweep = load_sweep(sweep_file)
    (Path(marks) / "running").mkdir(parents=True)
    (Path(marks) / "done").mkdir()
    total = sum(stage.num_trials for stage in sweep.stages)
    execute(sweep, sweep_dir(storage, sweep.name), resume=False, address=address,
            trainable=marked(Path(marks), int(expected), total))


if __name__ == "__main__":
    main(*sys.argv[1:])
