"""One trial trained into a run directory of plain files, as `bnsweep train --out DIR` does, and
usable from Python (`bnsweep.train`): `config.json` (the trial keys the run began with),
`metrics.jsonl` (one line per epoch), `checkpoint.pt` (the newest epoch, replaced whole),
`final.json` (the last epoch's metrics) and, after each `resume`, a line in `resumes.jsonl` with
the config it continued with. A directory that holds a run is never overwritten: it is resumed.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Mapping

from bnsweep.errors import ConfigError, UsageError
from bnsweep.files import output_path

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
RESUMES_FILE = "resumes.jsonl"  # one line per resume, the config it continued with


def train(keys: Mapping[str, Any], out: str, *, resume: bool = False, where: str = "",
          on_report: Callable[[dict[str, Any]], None] | None = None, progress: Any = None) -> dict[str, Any]:
    """Train one trial with the trial keys `keys` into the run directory `out`; return the last
    epoch's metrics (also in `final.json`).

    `resume`: continue the run in `out` from its checkpoint, with its saved keys updated by `keys`
    (e.g. more epochs). Bad input (keys, a directory that holds a run already, a checkpoint that
    does not fit) is a `bnsweep.errors.BadInput` before anything trains or is written; `where`
    names the keys' source in its message. `on_report(metrics)` is called once per epoch,
    `progress` wraps each epoch's batches (e.g. a tqdm bar; see `Trial.progress`)."""
    from bnsweep.core import checkpoints
    from bnsweep.core.config import make_config
    from bnsweep.core.train import start

    out = output_path(out, "--out", directory=True)
    metrics_file = os.path.join(out, METRICS_FILE)
    checkpoint = os.path.join(out, checkpoints.FILENAME)
    if os.path.exists(metrics_file) and not resume:
        make_config(dict(keys), where=where)  # bad keys are reported first
        raise UsageError(f"--out: {out!r} already holds a run; allowed: a new directory, or --resume to continue it")
    if resume and not os.path.exists(checkpoint):
        raise UsageError(f"--resume: {out!r} holds no {checkpoints.FILENAME}; allowed: a directory of an earlier run")
    # A resumed run keeps its saved config (keys may still change some, e.g. more epochs).
    saved = checkpoints.load(checkpoint, key="resume") if resume else None
    cfg = make_config({**(saved["config"] if saved else {}), **keys}, where=where)
    if saved and cfg.epochs < saved["epoch"]:
        raise ConfigError("epochs", cfg.epochs, f"an integer >= {saved['epoch']} (the checkpoint has trained "
                          f"{saved['epoch']} epochs)", "--resume")
    trial = start(cfg, resume=checkpoint if saved else None)  # data, model and weights: may still refuse
    os.makedirs(out, exist_ok=True)
    if saved:  # config.json stays as the run began; each resume appends the config it continued with
        with open(os.path.join(out, RESUMES_FILE), "a") as fh:
            fh.write(json.dumps({"from_epoch": saved["epoch"], "config": cfg.to_dict()}) + "\n")
    else:
        with open(os.path.join(out, CONFIG_FILE), "w") as fh:
            json.dump(cfg.to_dict(), fh, indent=2)

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if on_report is not None:
            on_report(metrics)
        with open(metrics_file, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if checkpoint_dir:
            shutil.copyfile(os.path.join(checkpoint_dir, checkpoints.FILENAME), checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)

    if progress is not None:
        trial.progress = progress
    final = trial.run(report)
    with open(os.path.join(out, FINAL_FILE), "w") as fh:
        json.dump(final, fh, indent=2)
    return final
