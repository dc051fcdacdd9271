"""`bnsweep status DIR`: where a sweep stands, read while it runs (from any machine) or after it ended.

It reads what `results.load` reads (the newest experiment-state snapshot, each trial's params.json
and the last row of its result.json), plus the stored sweep file (trials and epochs planned per
stage, the metric) and bnsweep's state file (finished stages). It writes nothing and takes no lock,
so it never disturbs the driver; a snapshot being rewritten is read from the trial directories.
"""

from __future__ import annotations

import math
import posixpath
import time
from dataclasses import dataclass

import pandas as pd

from bnsweep import results
from bnsweep.core.choices import ENDED, TrialStatus
from bnsweep.errors import NoExperimentError
from bnsweep.layout.labels import duration, format_value
from bnsweep.layout.paths import SWEEP_FILE, locate_sweep, read_text
from bnsweep.layout.plans import StagePlan, stage_plans
from bnsweep.layout.state import load_state
from bnsweep.results import tables
from bnsweep.results.columns import DEFAULT_METRIC, DEFAULT_MODE

# the columns of the table, in this order (then any other Ray status)
STATUSES = tuple(s.value for s in (TrialStatus.PENDING, TrialStatus.RUNNING, TrialStatus.TERMINATED,
                                   TrialStatus.ERROR, TrialStatus.DIVERGED))


@dataclass
class StageStatus:
    name: str
    counts: dict[str, int]  # trials by status (STATUSES, then any other Ray status such as paused)
    epochs_done: int
    epochs_total: float
    metric: str
    mode: str
    best: str | None  # "value, trial ID (setting)"
    newest: pd.Timestamp | None  # the newest report
    eta_s: float | None
    finished: bool  # recorded as finished in bnsweep's state file

    @property
    def trials(self) -> int:
        return sum(self.counts.values())


def sweep_status(path: str) -> tuple[str, list[StageStatus]]:
    """(sweep directory, one StageStatus per stage, in run order) for a sweep or a stage directory."""
    root, only = locate_sweep(path)
    text = read_text(f"{root}/{SWEEP_FILE}")
    plans = stage_plans(text, f"{root}/{SWEEP_FILE}") if text else {}
    finished = {k for k, v in load_state(root)["stages"].items() if v.get("finished")}
    try:
        df = results.load(path)
    except NoExperimentError:
        if not plans:  # neither trials nor a sweep file: nothing to report
            raise
        df = pd.DataFrame(columns=["stage", "status"])  # started, no trial written yet
    names = [s for s in plans if only in (None, s)]
    names += [s for s in dict.fromkeys(df["stage"]) if s not in names]
    return root, [_stage(name, df[df["stage"] == name], plans.get(name), name in finished) for name in names]


def _stage(name: str, df: pd.DataFrame, plan: StagePlan | None, finished: bool) -> StageStatus:
    counts = dict.fromkeys(STATUSES, 0) | df["status"].value_counts().to_dict()
    unknown = max(0, plan.trials - len(df)) if plan else 0  # not created by Ray yet
    counts[TrialStatus.PENDING] += unknown
    done = _column(df, "training_iteration").fillna(0)
    planned = _column(df, "epochs").fillna(0)
    ended = df["status"].isin(ENDED)
    # trials that ended (ASHA, divergence) count the epochs they ran; the rest what they plan
    total = done.where(ended, planned).sum()
    if unknown and plan:
        total += max(0.0, plan.epochs - planned.sum())
    metric, mode = (plan.metric, plan.mode) if plan else (DEFAULT_METRIC, DEFAULT_MODE)
    newest = df["timestamp"].max() if "timestamp" in df and df["timestamp"].notna().any() else None
    return StageStatus(name, {k: int(v) for k, v in counts.items()}, int(done.sum()), float(total), metric,
                       mode, _best(df, metric, mode), newest,
                       _eta(df, total - done.sum(), counts[TrialStatus.RUNNING]), finished)


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(0.0, index=df.index)


def _eta(df: pd.DataFrame, remaining: float, running: int) -> float | None:
    """Remaining epochs x mean seconds per epoch so far / trials running now (None: nothing runs)."""
    seconds, epochs = _column(df, "time_total_s").sum(), _column(df, "training_iteration").sum()
    if remaining <= 0:
        return 0.0
    if not running or not epochs:
        return None
    return remaining * (seconds / epochs) / running


def _best(df: pd.DataFrame, metric: str, mode: str) -> str | None:
    """The best finished trial by the stage's metric (else the best running one), with its setting."""
    best = tables.best_trial(df, metric, mode)
    if best is None:
        return None
    parts = [tables.best_setting(df, best), *([f"seed={format_value(best['seed'])}"] if "seed" in df else [])]
    setting = ", ".join(p for p in parts if p)
    running = "" if best["status"] == TrialStatus.TERMINATED else f", {best['status']}"
    return f"{best[metric]:.4g}, trial {best['trial_id']} ({setting}{running})"


def format_status(root: str, stages: list[StageStatus], now: float | None = None) -> str:
    """The status as a table (one row per stage) and one line per stage with its best trial."""
    now_ts = pd.Timestamp(now if now is not None else time.time(), unit="s", tz="UTC")
    extra = sorted({k for s in stages for k in s.counts if k not in STATUSES})
    columns = ["stage", "trials", *STATUSES, *extra, "epochs", "last report", "ETA"]
    rows = []
    for s in stages:
        age = "-" if s.newest is None else duration((now_ts - s.newest).total_seconds()) + " ago"
        eta = "done" if s.finished or s.eta_s == 0 else ("-" if s.eta_s is None else duration(s.eta_s))
        epochs = f"{s.epochs_done}/{math.ceil(s.epochs_total)}"
        rows.append([s.name, s.trials, *(s.counts.get(k, 0) for k in (*STATUSES, *extra)), epochs, age, eta])
    widths = [max([len(str(c)), *(len(str(r[i])) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: list) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    trials = sum(s.trials for s in stages)
    ended = sum(s.counts.get(k, 0) for s in stages for k in ENDED)
    head = (f"sweep {posixpath.basename(root)} ({root}): {ended} of {trials} trial(s) ended, "
            f"{sum(s.finished for s in stages)} of {len(stages)} stage(s) finished")
    out = [head, "", line(columns)]
    out += [line(r) for r in rows]
    out.append("")
    for s in stages:
        out.append(f"best of {s.name} by {s.metric} ({s.mode}): {s.best or 'nothing reported yet'}")
    out.append("ETA: remaining epochs x mean epoch time so far / trials running now ('-': none running)")
    return "\n".join(out)


def all_finished(stages: list[StageStatus]) -> bool:
    return bool(stages) and all(s.finished for s in stages)
