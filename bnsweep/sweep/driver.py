"""Run a validated sweep with Ray Tune: one Tuner per stage, in order, resumable.

Layout under `<storage>/<name>/`: `sweep.yaml` (the sweep file as run), `overrides.yaml` (its
`--set` trial keys, if any), `bnsweep_state.json` (finished stages and the checkpoints later stages
start from) and one Ray Tune experiment directory per stage. A stage is finished when every trial
ended (last epoch, diverged, or stopped by its scheduler); a finished stage is never run again, an
unfinished one (failed trials, or stopped by Ctrl-C) is restored with `Tuner.restore` (unfinished
and errored trials resume from their last checkpoints).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any, Callable

import pyarrow.fs as pafs
import yaml

from bnsweep.core.config import STAGE_INIT_PREFIX
from bnsweep.core.yamlfile import parse_yaml
from bnsweep.errors import ConfigError, DataError
from bnsweep.files import is_uri
from bnsweep.layout.paths import (
    OVERRIDES_FILE,
    STATE_FILE,
    SWEEP_FILE,
    filesystem,
    read_text,
    write_text,
)
from bnsweep.layout.state import load_state, new_state, sweep_digest, write_state
from bnsweep.layout.tune import newest_snapshot, read_snapshot
from bnsweep.sweep.lock import driver_lock
from bnsweep.sweep.signals import StopSignals
from bnsweep.sweep.spec import (
    Stage,
    Sweep,
    checkpoint_key,
    consumer_matches,
    parse_sweep,
)
from bnsweep.sweep.trial import run_trial
from bnsweep.sweep.trust import check_trusted


class SweepFailed(RuntimeError):
    """A stage ended with failed trials; `bnsweep resume` retries them."""


class SweepInterrupted(RuntimeError):
    """A stage stopped before all its trials ended (Ctrl-C, SIGTERM, SIGHUP: `signum`); `bnsweep
    resume` continues them."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


# -- Ray ---------------------------------------------------------------------------------------

def connect(address: str | None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray without the dashboard
    (its ports are guarded by Ray's token authentication, on by default for new local clusters)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if not address:
        ray.init(address="local", include_dashboard=False)
        return
    try:
        ray.init(address=address, log_to_driver=True)
    except (ValueError, ConnectionError) as err:  # a malformed address, or no cluster answering there
        raise ConfigError("--address", address, f"the address of a running Ray cluster "
                          f"({str(err).strip().splitlines()[0]})") from None


ADDRESS_RE = re.compile(r"(ray://)?(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])(:(?P<port>\d{1,5}))?")


def check_address(address: str | None, key: str = "--address") -> None:
    """Refuse a malformed cluster address before anything is written (Ray would only refuse it
    after the experiment directory exists): auto, local, HOST:PORT or ray://HOST[:PORT]."""
    if address is None or address in ("auto", "local"):
        return
    match = ADDRESS_RE.fullmatch(address)
    port = match and match["port"]
    if not match or (port is None and not address.startswith("ray://")) or (port and not 0 < int(port) < 65536):
        raise ConfigError(key, address, "auto, local, HOST:PORT (e.g. head:6379) or ray://HOST[:PORT] "
                          "(e.g. ray://head:10001)")


def trial_resources(stage: Stage) -> dict[str, float]:
    """Per-trial resources as Ray gets them: a GPU request is dropped when the cluster has no GPU at
    all, so that a GPU sweep still runs (on CPU) on a machine without one; `check_resources` warns."""
    import ray

    resources = dict(stage.resources)
    if resources["gpu"] and not ray.cluster_resources().get("GPU", 0):
        resources["gpu"] = 0
    return resources


def check_resources(sweep: Sweep, stages: list[Stage]) -> None:
    """Once connected, before anything is written: warn for each stage whose GPU request falls back
    to CPU, and refuse a stage whose trial fits on no node of the cluster (Ray would leave such a
    trial pending for ever, silently). Nodes are those alive now: on an autoscaling cluster, start
    the nodes a trial needs first."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for stage in stages:
        where = f"{sweep.path}: stage {stage.name!r}"
        need = trial_resources(stage)
        if need["gpu"] != stage.resources["gpu"]:
            print(f"bnsweep: warning: {where} asks for gpu {stage.resources['gpu']:g} per trial but the Ray "
                  "cluster has no GPU; running on CPU", file=sys.stderr)
        if not any(node.get("CPU", 0) >= need["cpu"] and node.get("GPU", 0) >= need["gpu"] for node in nodes):
            shapes = sorted({(node.get("CPU", 0), node.get("GPU", 0)) for node in nodes}, reverse=True)
            held = "; ".join(f"cpu {cpu:g}, gpu {gpu:g}" for cpu, gpu in shapes[:4]) or "no node"
            raise ConfigError("resources", stage.resources, "cpu and gpu per trial that one node of the Ray "
                              f"cluster holds (its nodes: {held}), or a trial would wait for ever", where)


class _StageCheckpoint:
    """Resolves `init_checkpoint` for a trial from its `init` and match keys (a Tune `sample_from`)."""

    def __init__(self, lookup: dict[str, str], match: tuple[str, ...]):
        self.lookup, self.match = lookup, match

    def __call__(self, config: dict[str, Any]) -> str:
        if not str(config["init"]).startswith(STAGE_INIT_PREFIX):
            return ""
        return self.lookup.get(checkpoint_key(config["init"], self.match, config), "")


def param_space(stage: Stage, lookup: dict[str, str]) -> dict[str, Any]:
    """The stage's trials as Ray Tune's param_space: grids, samplers, and each trial's starting checkpoint."""
    from ray import tune

    space: dict[str, Any] = {**stage.base, "stage": stage.name}
    for key, values in stage.grid.items():
        space[key] = tune.grid_search(values)
    samplers: dict[str, Callable[..., Any]] = {
        "loguniform": tune.loguniform, "uniform": tune.uniform, "choice": tune.choice,
        "randint": lambda low, high: tune.randint(low, high + 1)}
    for key, spec in stage.search.items():
        (kind, args), = spec.items()
        space[key] = samplers[kind](args) if kind == "choice" else samplers[kind](*args)
    if stage.from_stage:
        resolve = _StageCheckpoint(lookup, stage.match)
        targets = {resolve(cell) for cell in stage.combinations(["init", *stage.match])}
        space["init_checkpoint"] = targets.pop() if len(targets) == 1 else tune.sample_from(resolve)
    return space


def _tuner(stage: Stage, root: str, lookup: dict[str, str], trainable: Callable, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from bnsweep.sweep import faults
    from bnsweep.sweep.searchers import SnapshotSearch, SnapshotVariants

    search_alg: Any
    if stage.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=stage.seed)
        if stage.max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=stage.max_concurrent)
        search_alg = SnapshotSearch(search_alg)
    else:
        search_alg = SnapshotVariants(random_state=stage.seed, max_concurrent=stage.max_concurrent or 0)
    scheduler = None
    if isinstance(stage.scheduler, dict):
        args = {"max_t": stage.base["epochs"], **stage.scheduler["asha"]}
        scheduler = ASHAScheduler(time_attr="training_iteration", **args)
    return tune.Tuner(
        _wrap(trainable, stage, root),
        param_space=param_space(stage, lookup),
        # reuse_actors: a new trial reuses a finished trial's process (same resources) instead of
        # starting Python, torch and the trainable again (measured: sweep overhead 0.87 -> 0.94)
        tune_config=tune.TuneConfig(metric=stage.metric, mode=stage.mode, num_samples=stage.num_samples,
                                    search_alg=search_alg, scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(
            name=stage.name, storage_path=root, verbose=1, callbacks=[*callbacks, *faults.callbacks()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=stage.checkpoints_to_keep),
            failure_config=tune.FailureConfig(max_failures=stage.max_failures)),
    )


def _wrap(trainable: Callable, stage: Stage, root: str):
    from ray import tune

    return tune.with_resources(tune.with_parameters(trainable, storage_root=root), trial_resources(stage))


def _checkpoint_uri(path: str, root: str) -> str:
    if not is_uri(root):
        return path
    return f"{root.split('://', 1)[0]}://{path}"


def _last_checkpoint(result) -> str:
    """The path of a trial's newest checkpoint directory: that of its last reported epoch. Usually
    the one Ray registered last; but a trial resumed after an interruption between a report and its
    checkpoint's registration does not report that epoch again (sweep/trial.py), so there Ray's is
    one epoch older than the one on the storage."""
    newest = [i.path for i in result.filesystem.get_file_info(pafs.FileSelector(result.path, allow_not_found=True))
              if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]
    return max(newest, key=os.path.basename, default=result.checkpoint.path)


def run_stage(sweep: Sweep, stage: Stage, root: str, lookup: dict[str, str], trainable: Callable = run_trial):
    """Run (or restore and finish) one stage of `sweep`; return its ResultGrid. A restored stage
    keeps the callbacks it started with (TensorBoard's, see sweep/tensorboard.py)."""
    from ray import tune

    from bnsweep.sweep.tensorboard import SweepBoard

    path = f"{root}/{stage.name}"
    if tune.Tuner.can_restore(path):
        print(f"bnsweep: resuming stage {stage.name!r} from {path}", file=sys.stderr)
        tuner = tune.Tuner.restore(path, trainable=_wrap(trainable, stage, root),
                                   resume_unfinished=True, resume_errored=True)
    else:
        print(f"bnsweep: stage {stage.name!r}: {stage.num_trials} trial(s) -> {path}", file=sys.stderr)
        tuner = _tuner(stage, root, lookup, trainable, [SweepBoard(sweep, stage.name)])
    return tuner.fit()


def unfinished_trials(stage_path: str) -> list[str]:
    """Trials the stage's newest Ray Tune snapshot lists as not ended (pending, running, paused).

    Ray Tune catches Ctrl-C (SIGINT) and returns from `fit` normally, marking the running trials
    TERMINATED in memory only after it wrote the snapshot one last time, so the snapshot is what
    tells an interrupted stage from a finished one; it lists exactly the trials `Tuner.restore`
    continues. A trial that reached its last epoch, diverged or was stopped early by the stage's
    scheduler (ASHA) ended as TERMINATED, one that failed as ERROR."""
    fs, path, prefix = filesystem(stage_path)
    name = newest_snapshot(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))
    if name is None:
        return []
    snapshot = f"{path}/{name}"
    listed = read_snapshot(fs, snapshot, prefix + snapshot)
    return [t.trial_id or t.logdir for t in listed if t.unfinished]


def stage_checkpoints(stage: Stage, results, root: str, matches: set[tuple[str, ...]]) -> dict[str, str]:
    """Newest checkpoint of every finished trial, keyed for the `from_stage` lookups of the later
    stages, each on its own `match:` keys (`matches`)."""
    out = {}
    for result in results:
        if result.error is None and result.checkpoint is not None and not result.metrics.get("diverged"):
            for match in matches:
                key = checkpoint_key(STAGE_INIT_PREFIX + stage.name, match, result.config)
                out[key] = _checkpoint_uri(_last_checkpoint(result), root)
    return out


def execute(sweep: Sweep, root: str, *, resume: bool, address: str | None = None,
            trainable: Callable = run_trial, command: str | None = None) -> list:
    """Run every stage not yet finished; return the ResultGrids of the stages run now. `command`
    (the command line that started the experiment) is kept in the state file for run records."""
    existing = read_text(f"{root}/{SWEEP_FILE}")
    if existing is not None and not resume:
        raise ConfigError("--name", os.path.basename(root), f"a new experiment name ({root} exists; "
                          "continue it with: bnsweep resume " + root + ")")
    if existing is not None and sweep.overrides != stored_overrides(root):
        raise ConfigError("--set", format_overrides(sweep.overrides), "the --set the experiment started with: "
                          f"{format_overrides(stored_overrides(root))} (bnsweep resume {root} uses it)")
    with driver_lock(root), StopSignals() as signals:
        check_trusted(root)  # before Ray could unpickle anything of it
        state = load_state(root)
        if existing is not None:
            _check_unchanged(root, existing, sweep, state)
            if all(state["stages"].get(stage.name, {}).get("finished") for stage in sweep.stages):
                print(f"bnsweep: every stage of {root} has finished; nothing to run", file=sys.stderr)
                return []
        with signals.starting_ray():
            connect(address)  # before anything is written: a cluster that cannot be reached leaves no trace
        check_resources(sweep, [s for s in sweep.stages if not state["stages"].get(s.name, {}).get("finished")])
        if existing is None:
            overrides = yaml.safe_dump(sweep.overrides, sort_keys=False) if sweep.overrides else ""
            if overrides:  # first: an experiment exists once its sweep.yaml does
                write_text(f"{root}/{OVERRIDES_FILE}", overrides)
            write_text(f"{root}/{SWEEP_FILE}", sweep.text)
            state = new_state(sweep.text, overrides, command)
            write_state(root, state)
        grids = []
        lookup: dict[str, str] = {}
        for stage in sweep.stages:
            done = state["stages"].get(stage.name)
            if done and done.get("finished"):
                lookup.update(done["checkpoints"])
                continue
            if signals.received:  # stopped while the stage before finished
                raise SweepInterrupted(f"stopped before stage {stage.name!r}; continue with: bnsweep resume {root}",
                                       signals.received)
            results = run_stage(sweep, stage, root, lookup, trainable)
            signals.after_fit()
            grids.append(results)
            failed = [r for r in results if r.error is not None]
            if failed:
                raise SweepFailed(f"stage {stage.name!r}: {len(failed)} of {len(results)} trial(s) failed "
                                  f"(first error: {str(failed[0].error).strip().splitlines()[-1]}); "
                                  f"fix the cause and run: bnsweep resume {root}")
            unfinished = unfinished_trials(f"{root}/{stage.name}")
            if unfinished:
                raise SweepInterrupted(f"stage {stage.name!r}: {len(unfinished)} of {len(results)} trial(s) "
                                       f"stopped before their last epoch; continue with: bnsweep resume {root}",
                                       signals.received or signal.SIGINT)
            found = stage_checkpoints(stage, results, root, consumer_matches(sweep, stage.name))
            lookup.update(found)
            state["stages"][stage.name] = {"finished": True, "trials": len(results), "checkpoints": found}
            write_state(root, state)
        return grids


def _check_unchanged(root: str, stored: str, sweep: Sweep, state: dict[str, Any]) -> None:
    """A started experiment continues the sweep it started with: its trials' settings are already
    in Ray's experiments, so an edited sweep.yaml or overrides.yaml (or another file given to run
    --resume) is refused."""
    recorded = {SWEEP_FILE: state.get("sweep_sha256"), OVERRIDES_FILE: state.get("overrides_sha256")}
    for name, text in ((SWEEP_FILE, stored), (OVERRIDES_FILE, read_text(f"{root}/{OVERRIDES_FILE}") or "")):
        if recorded[name] is not None and recorded[name] != sweep_digest(text):
            raise DataError(f"{root}/{name}: edited after the experiment started; allowed: the file as run "
                            f"(its sha256 is in {STATE_FILE}), or a new experiment for the edited sweep")
    if sweep.text != stored:
        raise ConfigError("sweep", sweep.path, f"the sweep file this experiment started with ({root}/{SWEEP_FILE}); "
                          f"continue it with: bnsweep resume {root}, or run the edited sweep under a new --name")


def format_overrides(overrides: dict[str, Any]) -> str:
    """`KEY=VALUE ...` as given on the command line, or "none"."""
    return " ".join(f"{k}={v}" for k, v in overrides.items()) or "none"


def stored_overrides(root: str) -> dict[str, Any]:
    """The `--set` trial keys an experiment was started with."""
    text = read_text(f"{root}/{OVERRIDES_FILE}")
    return dict(parse_yaml(text, f"{root}/{OVERRIDES_FILE}") or {}) if text else {}


def resume_sweep(root: str) -> Sweep:
    """The sweep stored in an experiment directory, with the `--set` keys it was started with."""
    text = read_text(f"{root}/{SWEEP_FILE}")
    if text is None:
        raise ConfigError("resume", root, "an experiment directory written by bnsweep run")
    return parse_sweep(text, f"{root}/{SWEEP_FILE}", stored_overrides(root))
