"""The Ray Tune function trainable: `train.fit` with `tune.report` once per epoch and resume from
`tune.get_checkpoint()`, the same path from config to reports as `bnsweep train`.

Every epoch is reported once. Ray Tune writes a result's line to result.json one step before it
registers the checkpoint reported with it, so a driver stopped in between (Ctrl-C, SIGTERM, kill -9)
leaves a line whose checkpoint Ray does not know: the resumed trial restarts from the checkpoint
before it and would report that epoch again. So a trial restored from a checkpoint first reads its
own result.json on the storage: epochs whose lines are there are trained again (from the older
checkpoint, the same computation) but not reported again; a trial whose lines reach its last epoch
(or its divergence) has nothing left to do. A trial Ray starts without a checkpoint (none was
registered yet) reports every epoch: Ray then writes a new result.json of its own, which replaces
the storage's, so a skipped line would be lost. Each report names its epoch as Ray's
`training_iteration`, which a skipped report would otherwise shift. What a trial cannot see is a
line of the driver not yet synced to the storage when its worker died within a running sweep (Ray
syncs every few seconds); and a worker that died so in its first epoch restarts without a
checkpoint, so it reports that epoch again. Either way a trial can repeat one epoch in Ray's own
files, and `results` keeps one row of it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from bnsweep.core.config import KEYS, TrialConfig, make_config
from bnsweep.errors import ConfigError
from bnsweep.files import is_uri
from bnsweep.provenance import load_average, machine
from bnsweep.sweep.space import check_free_space

if TYPE_CHECKING:
    import torch


def run_trial(config: dict[str, Any], storage_root: str | None = None) -> None:
    """Run one trial of a sweep. `storage_root` (local storage) is checked for room before each
    checkpoint, so a full disk stops the trial before it can leave a half-written one."""
    import ray
    import torch
    from ray import tune

    from bnsweep.core.train import fit, resolve_device

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    cfg = make_config({k: v for k, v in config.items() if k in KEYS}, check_paths=False)
    node_id = ray.get_runtime_context().get_node_id()
    device = device_used(resolve_device(cfg.device))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")  # Ray sets it for trials that ask for GPUs
    if ray.get_gpu_ids() and not torch.cuda.is_available():
        print(f"bnsweep: warning: Ray gave this trial GPU {visible} but torch sees no CUDA device "
              f"(torch {torch.__version__}); device {cfg.device!r} trains on the CPU", file=sys.stderr)

    checkpoint = tune.get_checkpoint()
    # Ray copies a trial's result.json from the storage only when it restores the trial from a
    # checkpoint; without one it starts an empty file that replaces the storage's: report every epoch
    last = _last_reported(storage_root, config) if checkpoint else None
    done = last.get("epoch", 0) if last else 0
    if last and (done >= cfg.epochs or last.get("diverged")):
        return  # ended before the driver was stopped: every line is there (see the module's docstring)

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if metrics["epoch"] <= done:  # its line is in result.json already
            return
        if checkpoint_dir and storage_root:
            check_free_space(storage_root, checkpoint_dir)
        # which node and device ran it (clusters mix hosts and IPs, and GPU nodes with CPU-only torch), on
        # what machine and code, how busy it was: a record made later or elsewhere names the machine
        # that ran the trial, not its own; the epoch as Ray's iteration count
        metrics = {**metrics, "node_id": node_id, "device_used": device, "cuda_visible_devices": visible,
                   "provenance": dict(machine()), "load_avg": load_average(),
                   "training_iteration": metrics["epoch"]}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    with _local_init_checkpoint(cfg) as cfg, \
            (checkpoint.as_directory() if checkpoint else contextlib.nullcontext()) as resume:
        fit(cfg, report, resume=resume)


def device_used(device: torch.device) -> str:
    """`cpu`, `mps`, or the CUDA device with its name (`cuda:0 (NVIDIA H200)`); the index counts
    within the trial's CUDA_VISIBLE_DEVICES."""
    import torch

    if device.type != "cuda":
        return device.type
    index = torch.cuda.current_device() if device.index is None else device.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _last_reported(storage_root: str | None, config: dict[str, Any]) -> dict[str, Any] | None:
    """The last row of this trial's result.json on the storage (None: none yet, or unreadable)."""
    from ray import tune

    from bnsweep.errors import DataError
    from bnsweep.layout.tune import last_row

    if not storage_root or "stage" not in config:
        return None
    name = os.path.basename(tune.get_context().get_trial_dir().rstrip("/"))  # the trial's directory name
    try:
        return last_row(f"{storage_root}/{config['stage']}/{name}")
    except DataError:
        return None


@contextlib.contextmanager
def _local_init_checkpoint(cfg: TrialConfig):
    """A `from_stage` checkpoint on remote storage (a URI) is fetched to a local directory first."""
    from ray import tune

    if cfg.stage_init and not cfg.init_checkpoint:
        raise ConfigError("init", cfg.init, "a stage whose matching trial finished with a checkpoint")
    if cfg.stage_init and is_uri(cfg.init_checkpoint):
        with tune.Checkpoint(cfg.init_checkpoint).as_directory() as directory:
            yield dataclasses.replace(cfg, init_checkpoint=directory)
    else:
        yield cfg
