"""TensorBoard for a sweep: one HPARAMS view over every stage, scalars named for people.

Layout: each trial writes one run, `<sweep>/<stage>/<setting>/events.out.tfevents.*`, beside Ray's
trial directories, so `tensorboard --logdir <sweep>` shows runs like `adv/bn, pre-trained, seed 0`
and `--logdir <sweep>/<stage>` the same without the stage. A run's name is the values of the keys
its stage varies (`seed` last); a stage whose names could repeat (sampled keys, `num_samples` > 1,
values that print alike) adds the trial id to each.

HPARAMS: TensorBoard's hparams plugin takes the experiment (which keys and metrics to show) from the
first run it finds holding an experiment summary (`backend_context.Context._find_experiment_tag`).
Ray's logger wrote one into each trial's directory, with the keys of that trial's stage only, so the
sweep's view showed whichever came first (the pre-training stage's: `seed` alone). Here every run
holds the same summary, the whole sweep's, computed from the parsed sweep before Ray Tune starts the
stage: whichever run TensorBoard picks, under the sweep's directory, a stage's or a single run's,
the view is the same, and complete from the first trial on. Its hyperparameters are `stage` and
every key any stage varies, with the values they take in all stages (`init` as the comparison table
labels it); its metrics come in the study's order: final robust accuracy, robust accuracy by
radius, clean accuracy, then training (TensorBoard ticks the first five).

Scalars: the metrics a trial reports each epoch, tagged by meaning (TAGS, `tag`), the epoch as the
step. Bookkeeping (epoch, n_params, strings, Ray's own keys) is not written. A session (run) ends as
a success when its trial ended, a failure when it diverged; an error leaves it open, since
`bnsweep resume` retries the trial and TensorBoard keeps the first status a run records.

Why a subclass of Ray's TBXLoggerCallback: Ray Tune adds its own TensorBoard logger to every
experiment unless one is passed (writing each number as `ray/tune/<metric>` into the trial
directories, which would show every trial twice), and keeps adding its CSV and JSON loggers, whose
files `results.load` reads. Passing this callback in `RunConfig(callbacks=...)` replaces Ray's logger
for this experiment only, and is stored with it (`tuner.pkl`), so `bnsweep resume` keeps it, while an
experiment started before it resumes with Ray's logger, as it began. (Ray's alternative,
TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1, is process-wide and drops the CSV and JSON loggers of such an
experiment too.)

Where it writes: the callback runs in the driver and writes into Ray's local copy of the experiment
directory (`trial.local_experiment_path`), which Ray uploads to the storage (a path or a URI) with
its own files. After `bnsweep resume` (or a trial restarted after a failure) a run gets a new event
file that starts with a restart marker at the first step it writes, so TensorBoard drops any older
points from that step on: each step appears once.
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any

from ray.tune.logger import TBXLoggerCallback
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from bnsweep.core.choices import AutoAttackVersion, FinalAttack
from bnsweep.core.config import TrialConfig
from bnsweep.core.keys import MEANING
from bnsweep.layout.labels import EPS_COLUMN, format_value, init_label
from bnsweep.sweep.spec import Stage, Sweep

# Reported metric -> tag, for metrics whose tag does not depend on a radius.
TAGS = {
    "clean_acc": "accuracy/clean",
    "train_acc": "accuracy/train",
    "train_loss": "loss/train",
    "lr": "optimizer/lr",
    "images_per_s": "speed/images_per_s",
    "epoch_s": "speed/epoch_s",
    "n_trainable_params": "params/trainable",
}
FINAL_ACC = re.compile(r"^final_(\w+)_acc$")  # final_robust_acc, and any final attack added later
STAGE_MEANING = "the sweep's stage (one Ray Tune experiment)"
MAX_RUN_NAME = 150  # characters of the setting in a directory name (file systems allow 255 bytes)


def tag(metric: str, radius: float) -> str | None:
    """The TensorBoard tag of a reported metric (None: not written). `radius` is the trial's robust
    radius (1/255), at which `robust_acc` is measured, so it joins `robust_acc_eps{radius}`."""
    if metric in TAGS:
        return TAGS[metric]
    if metric == "robust_acc":
        return f"accuracy/robust@{radius:g}"
    if m := EPS_COLUMN.match(metric):
        return f"accuracy/robust@{m.group(1)}"
    if m := FINAL_ACC.match(metric):
        return f"accuracy/final_{m.group(1)}"
    return None


_LATER = ("accuracy/clean", "accuracy/final_clean", "accuracy/train", "loss/train", "optimizer/lr",
          "speed/images_per_s", "speed/epoch_s", "params/trainable")


def metric_order(name: str) -> tuple:
    """Sort key of tags in the study's order: final robust accuracies (`accuracy/final_robust`
    first, then other final attacks), robust accuracy by increasing radius, clean, training."""
    if name in _LATER:
        return (3 + _LATER.index(name),)
    if name == "accuracy/final_robust":
        return (0,)
    if name.startswith("accuracy/final_"):
        return (1, name)
    if name.startswith("accuracy/robust@"):
        return (2, float(name.split("@", 1)[1]))
    return (3 + len(_LATER), name)


# -- what the sweep varies ------------------------------------------------------------------------

def varied_keys(stage: Stage) -> list[str]:
    """The keys a stage varies: grid dimensions of more than one value, then sampled keys."""
    return [k for k, v in stage.grid.items() if len(v) > 1] + list(stage.search)


def hparam_value(key: str, value: Any) -> str | float | bool:
    """A trial key's value as the HPARAMS view shows it: `init` labelled as in the comparison
    table, lists as text, numbers as floats."""
    if key == "init":
        return init_label(str(value))
    if isinstance(value, (list, tuple)):
        return format_value(tuple(value))
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def _domain(sweep: Sweep, key: str) -> tuple[list[Any], tuple[float, float] | None]:
    """(values, interval) a key takes over all stages: listed values, and the range of sampled
    `uniform`, `loguniform` or `randint` ones (None if none is sampled)."""
    values: list[Any] = []
    bounds: list[float] = []
    for stage in sweep.stages:
        spec = stage.search.get(key)
        if spec is None:
            values += stage.values(key)
        elif "choice" in spec:
            values += spec["choice"]
        else:
            bounds += [float(b) for b in next(iter(spec.values()))]
    shown = list(dict.fromkeys(hparam_value(key, v) for v in values))
    return shown, ((min(bounds), max(bounds)) if bounds else None)


def _hparam_info(sweep: Sweep, key: str) -> api_pb2.HParamInfo:
    info = api_pb2.HParamInfo(name=key, description=MEANING.get(key, STAGE_MEANING))
    values, interval = (([s.name for s in sweep.stages], None) if key == "stage" else _domain(sweep, key))
    if interval or all(isinstance(v, float) for v in values):
        info.type = api_pb2.DATA_TYPE_FLOAT64
        if interval:  # a sampled number: a range to filter by, holding the listed values too
            low, high = min([interval[0], *values]), max([interval[1], *values])
            info.domain_interval.min_value, info.domain_interval.max_value = low, high
            info.differs = low < high
            return info
    elif all(isinstance(v, bool) for v in values):
        info.type = api_pb2.DATA_TYPE_BOOL
    else:
        info.type = api_pb2.DATA_TYPE_STRING
        values = [str(v) for v in values]
    info.domain_discrete.extend(values)
    info.differs = len(values) > 1
    return info


def _radii(stage: Stage) -> set[float]:
    """Radii at which the stage's trials report robust accuracy: every `eval_eps_255`, and each
    trial's robust radius (TrialConfig.robust_eps_255) where the grid fixes it."""
    keys = ["train_attack", "train_eps_255", "eval_eps_255"]
    out = set()
    for cell in stage.combinations(k for k in keys if k not in stage.search):
        eval_eps = tuple(cell.get("eval_eps_255", ()))
        out |= set(eval_eps)
        if {"train_attack", "train_eps_255"} <= cell.keys() and eval_eps:
            cfg = TrialConfig(train_attack=cell["train_attack"], train_eps_255=cell["train_eps_255"],
                              eval_eps_255=eval_eps)
            out.add(cfg.robust_eps_255)
    return {float(r) for r in out}


def study_metrics(sweep: Sweep) -> list[str]:
    """The tags the sweep's trials report, in the study's order (metric_order)."""
    tags = {"accuracy/clean", "accuracy/train", "loss/train", "optimizer/lr", "speed/images_per_s",
            "speed/epoch_s", "params/trainable"}
    for stage in sweep.stages:
        tags |= {f"accuracy/robust@{r:g}" for r in _radii(stage)}
        if any(a != FinalAttack.NONE for a in stage.values("final_attack")) or "final_attack" in stage.search:
            tags.add("accuracy/final_robust")
        if any(v != AutoAttackVersion.NONE for v in stage.values("final_autoattack")):
            tags.add("accuracy/final_autoattack")  # AutoAttack beside the final PGD
    return sorted(tags, key=metric_order)


def hparam_keys(sweep: Sweep) -> list[str]:
    """`stage`, then every key any stage varies."""
    return ["stage", *dict.fromkeys(k for stage in sweep.stages for k in varied_keys(stage))]


def experiment_summary(sweep: Sweep) -> summary_pb2.Summary:
    """The HPARAMS configuration of the whole sweep (see the module's docstring)."""
    experiment = api_pb2.Experiment(
        name=sweep.name, description=sweep.description,
        hparam_infos=[_hparam_info(sweep, key) for key in hparam_keys(sweep)],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in study_metrics(sweep)])
    return _hparams_summary(metadata.EXPERIMENT_TAG, experiment=experiment)


def _hparams_summary(tag_name: str, **data: Any) -> summary_pb2.Summary:
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag_name, metadata=content,
                                                                tensor=metadata.NULL_TENSOR)])


# -- run names ------------------------------------------------------------------------------------

class RunNames:
    """Run names of one stage's trials: the values of the keys the stage varies, `seed` last
    (`bn, pre-trained, seed 0`), plus the trial id where two trials could get the same name."""

    def __init__(self, stage: Stage):
        keys = varied_keys(stage)
        self.stage = stage.name
        self.keys = [k for k in keys if k != "seed"] + [k for k in keys if k == "seed"]
        # `pre-trained` alone says it when the stage starts from one checkpoint or stage at most
        self.short_init = sum(v != "random" for v in stage.values("init")) <= 1 and "init" not in stage.search
        printed_alike = any(len({self.part(key, v) for v in stage.grid[key]}) < len(stage.grid[key])
                            for key in self.keys if key in stage.grid)
        self.add_id = bool(stage.search) or stage.num_samples > 1 or printed_alike

    def part(self, key: str, value: Any) -> str:
        """One key's part of a run name (`seed 1`, `bn+fc`, `lr=0.1`, an init label)."""
        if key == "seed":
            return f"seed {value}"
        if key == "init":
            label = init_label(str(value))
            return label.split(" (")[0] if self.short_init else label
        if key == "trainable":
            return str(value)
        return f"{key}={format_value(tuple(value) if isinstance(value, list) else value, key)}"

    def __call__(self, config: dict[str, Any], trial_id: str) -> str:
        """The run name of a trial: its varying keys, plus its ID where names could clash."""
        name = ", ".join(self.part(k, config[k]) for k in self.keys) or self.stage
        name = name.replace("/", "_").replace("\\", "_")
        if self.add_id or len(name) > MAX_RUN_NAME:
            name = f"{name[:MAX_RUN_NAME]} ({trial_id})"
        return name


# -- the logger -----------------------------------------------------------------------------------

class SweepBoard(TBXLoggerCallback):
    """Ray Tune logger callback writing one stage's TensorBoard runs (see the module's docstring)."""

    def __init__(self, sweep: Sweep, stage: str):  # Ray's TBX logger's own state is never used
        self.names = RunNames(next(s for s in sweep.stages if s.name == stage))
        self.keys = hparam_keys(sweep)
        self.experiment = experiment_summary(sweep)
        self._writers: dict[Any, _Run] = {}

    def __getstate__(self) -> dict[str, Any]:  # stored in tuner.pkl: without open files
        return {**self.__dict__, "_writers": {}}

    def log_trial_start(self, trial) -> None:
        """Open the trial's event file and write its hparams."""
        if trial in self._writers:  # restarted after a failure: a new event file
            self._writers.pop(trial).close(ended=False)
        config = trial.config
        hparams = {k: hparam_value(k, config[k]) for k in self.keys if k in config}
        path = os.path.join(trial.local_experiment_path, self.names(config, trial.trial_id))
        self._writers[trial] = _Run(path, self.experiment, hparams, _robust_radius(config))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        """Write one epoch's scalars."""
        if trial not in self._writers:
            self.log_trial_start(trial)
        self._writers[trial].write(result)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        """Write the session end (status) and close the trial's event file."""
        if trial in self._writers:
            self._writers.pop(trial).close(ended=not failed)

    def on_experiment_end(self, trials, **info) -> None:
        """Ctrl-C: the trials still running stay open sessions; `bnsweep resume` continues their runs."""
        for run in self._writers.values():
            run.close(ended=False)
        self._writers.clear()


def _robust_radius(config: dict[str, Any]) -> float:
    keys: dict[str, Any] = {k: config[k] for k in ("train_attack", "train_eps_255") if k in config}
    if "eval_eps_255" in config:
        keys["eval_eps_255"] = tuple(config["eval_eps_255"])
    return TrialConfig(**keys).robust_eps_255


class _Run:
    """One trial's event file: the experiment and session summaries, then a step per epoch."""

    def __init__(self, path: str, experiment: summary_pb2.Summary, hparams: dict[str, Any], radius: float):
        self.writer = EventFileWriter(path, filename_suffix=".bnsweep")
        self.radius = radius
        self.stepped = False  # a step written yet
        self.diverged = False
        start = plugin_data_pb2.SessionStartInfo(group_name=os.path.basename(path), start_time_secs=time.time())
        for key, value in hparams.items():
            if isinstance(value, bool):
                start.hparams[key].bool_value = value
            elif isinstance(value, float):
                start.hparams[key].number_value = value
            else:
                start.hparams[key].string_value = value
        self._add(0, summary=experiment)
        self._add(0, summary=_hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start))
        self.writer.flush()

    def _add(self, step: int, **event: Any) -> None:
        self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, **event))

    def write(self, result: dict[str, Any]) -> None:
        step = int(result.get("epoch") or result["training_iteration"])
        if not self.stepped:  # a resumed trial starts over here: TensorBoard drops older points from this step on
            self.stepped = True
            self._add(step, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
        self.diverged = bool(result.get("diverged"))
        values = {}
        for metric, value in result.items():
            name = tag(metric, self.radius)
            if name and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values[name] = float(value)
        if values.get("accuracy/final_clean") == values.get("accuracy/clean"):
            values.pop("accuracy/final_clean", None)  # the last epoch's, measured again
        self._add(step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values.items()]))
        self.writer.flush()

    def close(self, ended: bool) -> None:
        """`ended`: the trial will not train again (its last epoch, diverged, or stopped by the
        scheduler), so its session gets its status. An error does not end it: `bnsweep resume`
        retries it, and TensorBoard keeps the first status a run records."""
        if ended:
            status = api_pb2.STATUS_FAILURE if self.diverged else api_pb2.STATUS_SUCCESS
            end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
            self._add(0, summary=_hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))
        self.writer.close()
