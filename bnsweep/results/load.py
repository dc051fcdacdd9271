"""Ray Tune experiment directories -> tidy pandas DataFrames (one row per trial, or per epoch).

Only JSON and text files are read (`experiment_state-*.json`, `params.json`, `result.json`,
`error.txt`), never pickles, so results of a running, interrupted or partly failed sweep load
safely, from a local path or from any URI `pyarrow.fs` understands (`s3://`, `gs://`, `file://`).
A run record (`bnsweep record`, see `results.record`) reads as the experiment it was made from.

    from bnsweep import results
    df = results.load("results/demo")        # one row per trial
    hist = results.history("results/demo")   # one row per trial and epoch
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from bnsweep import files
from bnsweep.core.choices import TrialStatus
from bnsweep.errors import ConfigError, DamagedWarning, DataError, NoExperimentError
from bnsweep.layout.paths import SWEEP_FILE, filesystem, open_file, read_file
from bnsweep.layout.state import load_state
from bnsweep.layout.tune import (
    STATE_PATTERN,
    SnapshotUnreadable,
    all_rows,
    last_rows,
    newest_snapshot,
    read_snapshot,
)
from bnsweep.results.columns import COLLISION_SUFFIX, DEFAULT_METRIC, DEFAULT_MODE
from bnsweep.results.record import EPOCHS_FILE, TRIALS_FILE, is_record, read_record

PathLike = str | os.PathLike
Paths = PathLike | Sequence[PathLike]

IDENTITY_COLUMNS = ["experiment", "stage", "trial_id", "status", "error"]
LOCATION_COLUMNS = ["checkpoint", "trial_dir", "start_time", "num_failures"]
# Ray's bookkeeping keys that say nothing about the trial (or are replaced by a better column).
DROPPED_RAY_KEYS = frozenset({
    "config", "checkpoint_dir_name", "should_checkpoint", "done", "experiment_tag", "pid", "date",
    "node_ip", "time_since_restore", "iterations_since_restore", "trial_id",
})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Bounds on what is read of a file (Ray's files: layout.tune):
MAX_TEXT_BYTES = 16 << 20  # params.json, sweep.yaml
ERROR_TAIL_BYTES = 64 << 10  # of error.txt only its last line is shown


@dataclass(eq=False)
class Experiment:
    """One Ray Tune experiment directory: one stage of a sweep."""

    fs: pafs.FileSystem
    path: str  # path inside `fs`
    prefix: str  # "" for local paths, "s3://" etc. for URIs
    name: str  # the experiment (sweep) name
    stage: str
    metric: str = DEFAULT_METRIC
    mode: str = DEFAULT_MODE

    def uri(self, *parts: str) -> str:
        """Where a file of this experiment lives, as the user would spell it."""
        return self.prefix + posixpath.join(self.path, *parts)


@dataclass
class _Trial:
    """What is known about one trial from the experiment state and its directory."""

    logdir: str
    trial_id: str | None = None
    ray_status: str | None = None
    config: dict[str, Any] | None = None
    start_time: float | None = None
    num_failures: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    error_text: str | None = None
    checkpoint: str | None = None
    has_dir: bool = False


# ----------------------------------------------------------------------------- discovery


def _list(fs: pafs.FileSystem, path: str, uri: str | None = None) -> list[pafs.FileInfo]:
    """The entries of a directory. With `uri` (a directory inside an experiment), locally a symbolic
    link or a special file (FIFO, device) is left out with a DamagedWarning: nothing reads through a
    link out of the experiment or blocks on a FIFO."""
    entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    if uri is None or not isinstance(fs, pafs.LocalFileSystem):
        return entries
    kept = []
    for e in entries:
        mode = os.lstat(e.path).st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            kept.append(e)
        else:
            warnings.warn(f"{uri}/{e.base_name}: {files.kind(mode)} in an experiment directory; not followed",
                          DamagedWarning, stacklevel=3)
    return kept


def _is_experiment(entries: Iterable[pafs.FileInfo]) -> bool:
    return any(fnmatch.fnmatch(e.base_name, STATE_PATTERN) or e.base_name == "tuner.pkl"
               for e in entries if e.type == pafs.FileType.File)


def _read_text(fs: pafs.FileSystem, path: str, uri: str, limit: int = MAX_TEXT_BYTES) -> str:
    return read_file(fs, path, uri, limit).decode("utf-8", errors="replace")


def _sweep_objectives(fs: pafs.FileSystem, sweep_dir: str) -> tuple[list[str], dict[str, tuple]]:
    """Stage order and (metric, mode) per stage from the sweep's copied `sweep.yaml`, if any."""
    from bnsweep.layout.plans import stage_objectives

    path = posixpath.join(sweep_dir, SWEEP_FILE)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return [], {}
    try:
        objectives = stage_objectives(_read_text(fs, path, path), path)
    except (ConfigError, DataError) as err:
        warnings.warn(f"{path}: damaged, stage order and objectives not read ({err})", DamagedWarning, stacklevel=2)
        return [], {}
    return list(objectives), objectives


def _experiments_at(path: PathLike) -> list[Experiment]:
    fs, root, prefix = filesystem(path)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise NoExperimentError(f"{os.fspath(path)}: no such directory")
    entries = _list(fs, root)
    # A damaged state file is refused (DataError) here as by every command: restore it or delete it.
    load_state(prefix + (posixpath.dirname(root) if _is_experiment(entries) else root))
    if _is_experiment(entries):
        parent = posixpath.dirname(root)
        order, objectives = _sweep_objectives(fs, parent)
        stage = posixpath.basename(root)
        metric, mode = objectives.get(stage, (DEFAULT_METRIC, DEFAULT_MODE))
        return [Experiment(fs, root, prefix, posixpath.basename(parent), stage, metric, mode)]
    order, objectives = _sweep_objectives(fs, root)
    stages = [e.base_name for e in _list(fs, root, prefix + root)
              if e.type == pafs.FileType.Directory and _is_experiment(_list(fs, e.path))]
    stages.sort(key=lambda s: (order.index(s) if s in order else len(order), s))
    name = posixpath.basename(root)
    return [Experiment(fs, posixpath.join(root, s), prefix, name, s,
                       *objectives.get(s, (DEFAULT_METRIC, DEFAULT_MODE))) for s in stages]


def find_experiments(paths: Paths) -> list[Experiment]:
    """The Ray Tune experiments under each path: a sweep directory (one experiment per stage),
    an experiment directory, or a list of those; raises NoExperimentError for a path with none."""
    found: dict[tuple[str, str], Experiment] = {}
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
        experiments = _experiments_at(path)
        if not experiments:
            raise NoExperimentError(
                f"{os.fspath(path)}: no Ray Tune experiment here (expected {STATE_PATTERN} in it "
                f"or in its stage directories)")
        for exp in experiments:  # `results A A/stage` names a stage twice: its trials count once
            found.setdefault(_identity(exp), exp)
    return list(found.values())


def _identity(exp: Experiment) -> tuple[str, str]:
    """Where an experiment really is: local paths resolved (symlinks, `..`), URIs as written."""
    local = isinstance(exp.fs, pafs.LocalFileSystem)
    return exp.prefix, os.path.realpath(exp.path) if local else exp.path


# ----------------------------------------------------------------------------- reading trials


def _state_trials(exp: Experiment, entries: list[pafs.FileInfo], strict: bool) -> dict[str, _Trial]:
    """Trials from the newest experiment_state-*.json (status, config, error file), by logdir.
    A snapshot that does not read as Ray writes it is passed over (warning), as if not there yet;
    `strict`: DataError instead."""
    name = newest_snapshot(e.base_name for e in entries)
    if name is None:
        return {}
    uri = exp.uri(name)
    try:
        listed = read_snapshot(exp.fs, uri[len(exp.prefix):], uri)
    except DataError as err:
        if strict:
            raise
        if not isinstance(err, SnapshotUnreadable):  # a snapshot being rewritten is not damage
            warnings.warn(f"{uri}: damaged, trial statuses read from the trial directories instead",
                          DamagedWarning, stacklevel=2)
        return {}
    return {t.logdir: _Trial(logdir=t.logdir, trial_id=t.trial_id, ray_status=t.status, config=t.config,
                             start_time=t.start_time, num_failures=t.num_failures) for t in listed}


def _error_message(text: str) -> str:
    """The exception line of Ray's error.txt (its last non-empty line)."""
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    return lines[-1] if lines else "error.txt is empty"


def _tail(fs: pafs.FileSystem, path: str, uri: str) -> str:
    """The last ERROR_TAIL_BYTES of a text file (Ray's error.txt: its last line is the message)."""
    f, size = open_file(fs, path, uri, 1 << 62)
    with f:
        f.seek(max(0, size - ERROR_TAIL_BYTES))
        return f.read(ERROR_TAIL_BYTES).decode("utf-8", errors="replace")


def _params(exp: Experiment, path: str) -> dict[str, Any]:
    text = _read_text(exp.fs, path, exp.prefix + path)
    try:
        params = json.loads(text)
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise DataError(f"{exp.prefix}{path}: damaged (not a JSON object of trial keys)")
    return params


def _fill_from_dir(exp: Experiment, trial: _Trial, full: bool) -> _Trial:
    """Read the trial directory: result rows, newest checkpoint, error text, params.json.
    A file that does not read as Ray writes it (a symbolic link or a FIFO included) raises DataError
    naming it; a linked checkpoint directory is not listed."""
    tdir = posixpath.join(exp.path, trial.logdir)
    local = isinstance(exp.fs, pafs.LocalFileSystem)
    if local and os.path.islink(tdir):
        raise DataError(f"{exp.uri(trial.logdir)}: a symbolic link in an experiment directory; not followed")
    entries = {e.base_name: e for e in _list(exp.fs, tdir)}
    trial.has_dir = bool(entries)
    params = _params(exp, entries["params.json"].path) if "params.json" in entries else None
    if "result.json" in entries:
        path = entries["result.json"].path
        trial.rows = (all_rows if full else last_rows)(exp.fs, path, exp.prefix + path)
    checkpoints = sorted(n for n, e in entries.items() if n.startswith("checkpoint_")
                         and e.type == pafs.FileType.Directory and not (local and os.path.islink(e.path)))
    trial.checkpoint = exp.uri(trial.logdir, checkpoints[-1]) if checkpoints else None
    if "error.txt" in entries and trial.ray_status in (None, "ERROR"):  # Ray's spelling
        error_file = entries["error.txt"].path
        trial.error_text = _error_message(_tail(exp.fs, error_file, exp.prefix + error_file))
    if trial.config is None and trial.rows:
        trial.config = trial.rows[-1].get("config")
    if trial.config is None:
        trial.config = params
    if trial.trial_id is None and trial.rows:
        trial.trial_id = trial.rows[-1].get("trial_id")
    return trial


def _scan(exp: Experiment, full: bool, strict: bool = False) -> list[_Trial]:
    """All trials of one experiment: those in the state snapshot plus directories it lacks yet.
    A damaged trial is skipped with a DamagedWarning naming the file (`strict`: DataError)."""
    entries = _list(exp.fs, exp.path, exp.uri())
    trials = _state_trials(exp, entries, strict)
    for e in entries:
        if e.type == pafs.FileType.Directory and e.base_name not in trials:
            trials[e.base_name] = _Trial(logdir=e.base_name)

    def fill(trial: _Trial) -> _Trial | None:
        try:
            return _fill_from_dir(exp, trial, full)
        except DataError as err:
            if strict:
                raise
            warnings.warn(f"{err}; trial skipped", DamagedWarning, stacklevel=2)
            return None

    workers = 1 if isinstance(exp.fs, pafs.LocalFileSystem) else 16  # remote: hide latency
    with ThreadPoolExecutor(workers) as pool:
        filled = [t for t in pool.map(fill, trials.values()) if t is not None]
    # A directory not in the state and without any Ray file is not a trial. Nor is one the state lacks
    # whose trial id it lists under another directory: a run of that trial that no saved state knew,
    # which the resumed stage made again from its start (sweep/searchers.py). Its id: its rows', or
    # in its name (Ray's TRAINABLE_ID_TAG_DATE) where it reported nothing.
    kept = [t for t in filled if t.ray_status is not None or t.config is not None]
    listed = {t.trial_id for t in kept if t.ray_status is not None and t.trial_id}
    kept = [t for t in kept if t.ray_status is not None
            or (t.trial_id not in listed and not any(f"_{i}_" in t.logdir for i in listed))]
    return sorted(kept, key=lambda t: (t.trial_id or "", t.logdir))  # ids count up: run order


def _status(trial: _Trial) -> tuple[str, str | None]:
    """(status, error): Ray's status, corrected by what the trial directory shows."""
    last = trial.rows[-1] if trial.rows else {}
    status = TrialStatus.from_ray(trial.ray_status)
    if last.get("diverged"):
        return TrialStatus.DIVERGED.value, str(last.get("diverged_reason") or "diverged")
    if status == TrialStatus.ERROR or (trial.ray_status is None and trial.error_text):
        return TrialStatus.ERROR.value, trial.error_text or "error (no error.txt found)"
    if status == TrialStatus.PENDING and trial.rows:
        return TrialStatus.RUNNING.value, None  # the state snapshot is older than the trial's results
    return status, None


# ----------------------------------------------------------------------------- frames


def _flatten_dict_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Nested metric dicts become `a/b` columns, as in Ray's CSV and TensorBoard output."""
    nested = [c for c in df.columns
              if pd.api.types.infer_dtype(df[c], skipna=True).startswith("mixed")
              and df[c].map(lambda v: isinstance(v, dict)).any()]
    for name in nested:
        values = [v if isinstance(v, dict) else {} for v in df[name]]
        flat = pd.json_normalize(values, sep="/").add_prefix(f"{name}/")
        df = pd.concat([df.drop(columns=name), flat.set_index(df.index)], axis=1)
    return df


def _metric_frame(rows: list[dict[str, Any]], trial_keys: set[str]) -> pd.DataFrame:
    """Reported rows -> metric columns: Ray's bookkeeping dropped, clashing names suffixed."""
    for row in rows:  # rows are freshly parsed and private to this module
        row.pop("config", None)
    df = pd.DataFrame(rows, dtype=object, index=range(len(rows)))
    df = _flatten_dict_columns(df.drop(columns=[c for c in df.columns if c in DROPPED_RAY_KEYS]))
    clash = trial_keys | set(IDENTITY_COLUMNS)
    return df.rename(columns={c: c + COLLISION_SUFFIX for c in df.columns if c in clash})


def _ordered_union(dicts: Iterable[dict]) -> list[str]:
    return list(dict.fromkeys(k for d in dicts for k in d))


def _tidy_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Give each column the dtype its values have (integers stay integers despite gaps)."""
    for name in df.columns:
        col = df[name]
        if col.dtype != object:
            continue
        kind = pd.api.types.infer_dtype(col, skipna=True)
        if kind == "integer":
            df[name] = col.astype("Int64" if col.isna().any() else "int64")
        elif kind in ("floating", "mixed-integer-float"):
            df[name] = col.astype("float64")
        elif kind == "boolean":
            df[name] = col.astype("boolean" if col.isna().any() else "bool")
        elif kind == "string":
            df[name] = col.astype("str")
    for name in ("timestamp", "start_time"):
        if name in df.columns and pd.api.types.is_numeric_dtype(df[name]):
            df[name] = pd.to_datetime(df[name].astype("float64"), unit="s", utc=True)
    return df


def _trial_frame(scanned: list[tuple[Experiment, list[_Trial]]],
                 rows: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per trial; `rows` (default: each trial's last row) supplies the metrics."""
    trials = [(exp, t) for exp, ts in scanned for t in ts]
    keys = [k for k in _ordered_union(t.config or {} for _, t in trials)
            if k not in IDENTITY_COLUMNS]
    records = []
    for exp, t in trials:
        status, error = _status(t)
        config = t.config or {}
        records.append({"experiment": exp.name, "stage": str(config.get("stage", exp.stage)),
                        "trial_id": t.trial_id or t.logdir, "status": status, "error": error,
                        **{k: config.get(k) for k in keys if k != "stage"}})
    base = pd.DataFrame(records, columns=IDENTITY_COLUMNS + [k for k in keys if k != "stage"],
                        dtype=object)
    if rows is None:
        rows = [t.rows[-1] if t.rows else {} for _, t in trials]
    metrics = _metric_frame(rows, set(keys) | set(LOCATION_COLUMNS))
    where = pd.DataFrame([(t.checkpoint, exp.uri(t.logdir), t.start_time, t.num_failures)
                          for exp, t in trials], columns=LOCATION_COLUMNS, dtype=object)
    df = _tidy_dtypes(pd.concat([base, metrics, where], axis=1))
    df.attrs.update(trial_keys=["stage", *(k for k in keys if k != "stage")],
                    metric_keys=list(metrics.columns))
    return df


def check_experiment(root: PathLike) -> None:
    """Read every trial file of the experiment at `root` (if any yet) as `history` does, and raise
    DataError naming the first damaged one: what `bnsweep resume` refuses to continue."""
    fs, path, _ = filesystem(root)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return
    for exp in _experiments_at(root):
        try:
            _scan(exp, full=True, strict=True)
        except DataError as err:
            raise DataError(f"{err}; allowed: an experiment whose files read as Ray wrote them "
                            "(restore the file from a copy)") from None


def _frames(paths: Paths, record_file: str, build) -> pd.DataFrame:
    """The frame `build` makes of the experiments under `paths`; a record among them gives its
    `record_file` instead, and several sources are stacked in the order given."""
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not any(is_record(p) for p in given):
        return build(find_experiments(given))
    frames = [read_record(p).frame(record_file) if is_record(p) else build(find_experiments(p)) for p in given]
    if len(frames) == 1:
        return frames[0]
    df = _tidy_dtypes(pd.concat(frames, ignore_index=True))
    df.attrs.update({key: _ordered_union([f.attrs.get(key, []) for f in frames])
                     for key in ("trial_keys", "metric_keys")})
    return df


def load(paths: Paths) -> pd.DataFrame:
    """One row per trial: experiment, stage, trial_id, status, error, the trial keys as plain
    columns, the last reported (and final) metrics, the newest checkpoint and the trial directory.

    `status` is one of pending, running, paused, terminated, error, diverged. A failed trial is a
    row with its status and error message, never a gap. `df.attrs["trial_keys"]` and
    `df.attrs["metric_keys"]` name the two kinds of column. A reported metric named like a trial
    key (e.g. the epoch's `lr`) is renamed with the suffix `_reported`.
    """
    return _frames(paths, TRIALS_FILE,
                   lambda experiments: _trial_frame([(exp, _scan(exp, full=False)) for exp in experiments]))


def history(paths: Paths) -> pd.DataFrame:
    """One row per trial and reported epoch: the trial's identity, status and keys, then the
    metrics of that epoch (the trial keys repeat on every row, ready for groupby)."""
    return _frames(paths, EPOCHS_FILE, _history_frame)


def _history_frame(experiments: list[Experiment]) -> pd.DataFrame:
    scanned = [(exp, _scan(exp, full=True)) for exp in experiments]
    trials = _trial_frame(scanned, rows=[{} for _, ts in scanned for _ in ts])
    keys = trials.attrs["trial_keys"]
    counts = [len(t.rows) for _, ts in scanned for t in ts]
    left = trials[IDENTITY_COLUMNS + keys[1:]].iloc[np.repeat(np.arange(len(trials)), counts)]
    rows = [row for _, ts in scanned for t in ts for row in t.rows]
    right = _tidy_dtypes(_metric_frame(rows, set(keys) | set(LOCATION_COLUMNS)))
    df = pd.concat([left.reset_index(drop=True), right], axis=1)
    df.attrs.update(trial_keys=keys, metric_keys=list(right.columns))
    return df
