"""The Ray Tune function trainable: `train.fit` with `tune.report` once per epoch and resume from
`tune.get_checkpoint()`, the same path from config to reports as `bnsweep train`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

from bnsweep.core.config import KEYS, TrialConfig, make_config
from bnsweep.errors import ConfigError
from bnsweep.sweep.storage import check_free_space


def run_trial(config: dict[str, Any], storage_root: str | None = None) -> None:
    """Run one trial of a sweep. `storage_root` (local storage) is checked for room before each
    checkpoint, so a full disk stops the trial before it can leave a half-written one."""
    import ray
    import torch
    from ray import tune

    from bnsweep.core.train import fit

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    cfg = make_config({k: v for k, v in config.items() if k in KEYS}, check_paths=False)
    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir and storage_root:
            check_free_space(storage_root, checkpoint_dir)
        metrics = {**metrics, "node_id": node_id}  # which node ran it: clusters mix hosts and IPs
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    checkpoint = tune.get_checkpoint()
    with _local_init_checkpoint(cfg) as cfg, \
            (checkpoint.as_directory() if checkpoint else contextlib.nullcontext()) as resume:
        fit(cfg, report, resume=resume)


@contextlib.contextmanager
def _local_init_checkpoint(cfg: TrialConfig):
    """A `from_stage` checkpoint on remote storage (a URI) is fetched to a local directory first."""
    from ray import tune

    if cfg.stage_init and not cfg.init_checkpoint:
        raise ConfigError("init", cfg.init, "a stage whose matching trial finished with a checkpoint")
    if cfg.stage_init and "://" in cfg.init_checkpoint:
        with tune.Checkpoint(cfg.init_checkpoint).as_directory() as directory:
            yield dataclasses.replace(cfg, init_checkpoint=directory)
    else:
        yield cfg
