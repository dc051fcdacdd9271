"""Fault injection for the fault tests: a driver interrupted at the one moment that matters.

``BNSWEEP_FAULT_AFTER_RESULT=EPOCH:SIGNAL:TARGET`` (e.g. ``2:SIGKILL:group``) makes the driver send
SIGNAL to itself (TARGET ``driver``) or to its whole process group (``group``, as a terminal or SLURM
does) right after a trial's result for EPOCH was written to its result.json and the experiment's
state was saved, but before the checkpoint reported with that result was registered: Ray Tune
registers it one step later, and the driver waits inside this callback, so the step never comes.
That is the race a Ctrl-C or a `kill -9` of the driver can hit by chance; here it is hit every time.
For SIGKILL, run the driver with ``TUNE_GLOBAL_CHECKPOINT_S=0`` so that the state is saved in that
step; the callback then syncs it to the storage, as Ray would a moment later, and waits for that.
Unset, this module adds nothing.
"""

from __future__ import annotations

import os
import signal

from ray.tune import Callback

ENV = "BNSWEEP_FAULT_AFTER_RESULT"


def callbacks() -> list:
    """The Ray Tune callbacks for the fault named in the environment (none without one)."""
    spec = os.environ.get(ENV)
    return [SignalAfterResult(spec)] if spec else []


def _parse(spec: str) -> tuple[int, signal.Signals, str]:
    epoch, name, target = spec.split(":")
    if target not in ("driver", "group"):
        raise ValueError(f"{ENV}: target {target!r}; allowed: driver, group")
    return int(epoch), signal.Signals[name], target


class SignalAfterResult(Callback):
    """Sends the signal once, in the controller step that processed the result of the epoch."""

    def __init__(self, spec: str):
        self.spec = spec
        self.epoch, self.signum, self.target = _parse(spec)
        self.trial = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Remember the first trial that reports the epoch to fault in."""
        if self.trial is None and result.get("epoch") == self.epoch:
            self.trial = trial

    def on_step_end(self, iteration, trials, **info):
        """Inject the fault once that trial's epoch was reported (only in the run it was made for)."""
        # Tuner.restore brings this callback back from the experiment: only the run it was made for fires
        if self.trial is None or os.environ.get(ENV) != self.spec:
            return
        trial, self.trial, self.spec = self.trial, None, ""
        if self.signum == signal.SIGKILL:  # the state saved in this step reaches the storage first, as
            storage = trial.storage       # Ray's next sync would take it there (a sync still running skips one)
            storage.syncer.wait()
            storage.syncer.sync_up(storage.experiment_driver_staging_path, storage.experiment_fs_path)
            storage.syncer.wait()
        if self.target == "group":
            os.killpg(os.getpgrp(), self.signum)
        else:
            os.kill(os.getpid(), self.signum)
