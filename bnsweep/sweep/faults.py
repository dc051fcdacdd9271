"""Fault injection for the fault tests: a driver interrupted at the one moment that matters.

``BNSWEEP_FAULT_AFTER_RESULT=EPOCH:SIGNAL:TARGET`` (e.g. ``2:SIGKILL:group``) makes the driver send
SIGNAL to itself (TARGET ``driver``) or to its whole process group (``group``, as a terminal or SLURM
does) right after a trial's result for EPOCH was written to its result.json and the experiment's
state was saved, but before the checkpoint reported with that result was registered: Ray Tune
registers it one step later, and the driver waits inside this callback, so the step never comes.
That is the race a Ctrl-C or a `kill -9` of the driver can hit by chance; here it is hit every time.
For SIGKILL the callback first saves the experiment's state and waits until it is on the storage, as
Ray would a moment later: Ray uploads by rewriting the files in place from a background thread, so a
kill during an upload leaves them empty (the test would then see a different fault, one that
`bnsweep resume` refuses with a line naming the damaged file). Unset, this module adds nothing.
"""

from __future__ import annotations

import inspect
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
        self.due = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """The fault is due once a trial reports the epoch to fault in."""
        self.due = self.due or result.get("epoch") == self.epoch

    def on_step_end(self, iteration, trials, **info):
        """Inject the fault in the step that processed the epoch's result (only in the run it was made for)."""
        # Tuner.restore brings this callback back from the experiment: only the run it was made for fires
        if not self.due or os.environ.get(ENV) != self.spec:
            return
        self.due, self.spec = False, ""
        if self.signum == signal.SIGKILL:
            # force: wait for an upload still running, save, upload, wait (a trial's storage has its
            # own syncer, a copy: waiting on it would not wait for the experiment's upload)
            _controller().checkpoint(force=True, wait=True)
        if self.target == "group":
            os.killpg(os.getpgrp(), self.signum)
        else:
            os.kill(os.getpid(), self.signum)


def _controller():
    """The TuneController whose step called this callback: Ray passes callbacks no reference to it."""
    from ray.tune.execution.tune_controller import TuneController

    frame = inspect.currentframe()
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), TuneController):
            return frame.f_locals["self"]
        frame = frame.f_back
    raise RuntimeError("fault injection: no TuneController calls this callback")
