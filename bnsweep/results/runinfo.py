"""What ran a sweep and how long it took, read back from what its trials and Ray wrote: the machines
and code that ran the trials (the `provenance/...` columns every trial reports, see
`bnsweep.provenance`), the machine's load while they ran (`load_avg`), and wall times.

Wall times come from each trial's result rows: a trial starts at its first report's `timestamp`
minus that epoch's `time_this_iter_s` (Ray's clock of the trial, set-up and data loading included)
and ends at its last report's `timestamp`; a stage lasts from its first trial's start to its last
report, the sweep from the first start to the last report of all; a trial's time is Ray's
`time_total_s`. These are in every `result.json` row (and so in a record's epochs.csv), unlike
the experiment state's `start_time`, which misses trials started after its last snapshot.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bnsweep.core.choices import TrialStatus
from bnsweep.layout.labels import duration
from bnsweep.provenance import describe_machine
from bnsweep.results.columns import synthetic

PREFIX = "provenance/"
MACHINE_KEYS = ("host", "cpu", "cpu_features", "cpus", "memory_gib", "gpu", "gpus", "gpu_driver", "python", "torch",
                "ray")
CODE_KEYS = ("bnsweep", "commit", "dirty")


def _plain(value: Any) -> Any:
    """A cell as JSON has it: NaN and NA become None, numpy scalars Python ones."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def _facts(df: pd.DataFrame, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The distinct values of `provenance/<key>` over the trials that reported them, each with the
    number of trials (most first)."""
    columns = [PREFIX + k for k in keys if PREFIX + k in df.columns]
    if not columns or df.empty:
        return []
    reported = df[df[columns].notna().any(axis=1)]
    groups = reported[columns].astype(object).map(_plain).astype(str).groupby(columns, sort=False, dropna=False)
    out = []
    for _, g in groups:
        first = reported.loc[g.index[0], columns]
        out.append({**{c[len(PREFIX):]: _plain(first[c]) for c in columns}, "trials": len(g)})
    return sorted(out, key=lambda m: -m["trials"])


def machines(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The machines that ran the trials of `results.load`'s frame, as the trials reported them."""
    return _facts(df, MACHINE_KEYS)


def code(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The bnsweep versions and commits that ran the trials."""
    return _facts(df, CODE_KEYS)


def load_average(hist: pd.DataFrame) -> dict[str, Any] | None:
    """The 1-minute load average the trials saw at their reports: mean, max and how many reports."""
    if "load_avg" not in hist.columns or hist["load_avg"].isna().all():
        return None
    values = hist["load_avg"].astype(float).dropna()
    return {"mean": round(float(values.mean()), 2), "max": round(float(values.max()), 2), "reports": len(values)}


def _spans(hist: pd.DataFrame) -> pd.DataFrame:
    """Per trial that reported: stage, start, end (timestamps) and Ray's time_total_s."""
    need = {"timestamp", "time_this_iter_s", "time_total_s", "stage", "trial_id"}
    if hist.empty or not need <= set(hist.columns) or not pd.api.types.is_datetime64_any_dtype(hist["timestamp"]):
        return pd.DataFrame(columns=["stage", "status", "start", "end", "time_s"])
    order = "training_iteration" if "training_iteration" in hist.columns else "timestamp"
    rows = hist.dropna(subset=["timestamp"]).sort_values(order, kind="stable")
    g = rows.groupby(["stage", "trial_id"], sort=False)
    first, last = g.head(1).set_index(["stage", "trial_id"]), g.tail(1).set_index(["stage", "trial_id"])
    start = first["timestamp"] - pd.to_timedelta(first["time_this_iter_s"].astype(float).fillna(0), unit="s")
    return pd.DataFrame({"status": last["status"], "start": start, "end": g["timestamp"].max(),
                         "time_s": last["time_total_s"].astype(float)}).reset_index()


def wall_times(hist: pd.DataFrame) -> dict[str, Any]:
    """{"sweep_s", "start", "end", "stages": {stage: {"trials", "wall_s", "mean_trial_s"}}} from
    `results.history`'s frame (seconds; None where no trial reported). `mean_trial_s` is over the
    stage's terminated trials (all trials that reported when none terminated)."""
    spans = _spans(hist)
    if spans.empty:
        return {"sweep_s": None, "start": None, "end": None, "stages": {}}
    stages = {}
    for stage, s in spans.groupby("stage", sort=False):
        done = s[s["status"] == TrialStatus.TERMINATED]
        stages[str(stage)] = {"trials": len(s), "wall_s": _seconds(s["end"].max() - s["start"].min()),
                              "mean_trial_s": round(float((done if len(done) else s)["time_s"].mean()), 1)}
    start, end = spans["start"].min(), spans["end"].max()
    return {"sweep_s": _seconds(end - start), "start": start.isoformat(timespec="seconds"),
            "end": end.isoformat(timespec="seconds"), "stages": stages}


def time_split(hist: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Where a stage's trial time went, mean seconds per trial: `training` (the epochs' training
    passes: each epoch's `train_s`; in records made before trials reported it, the trial's `n_train`
    images at the epoch's `images_per_s`), `evaluation` (the rest of each epoch: the per-epoch
    evaluation, and in the last epoch the final attack), `other` (Ray's `time_total_s` outside the
    epochs: start, data, checkpoints, reports). Epochs without a training time (an older record's
    stage that trained on every image, `n_train: 0`) are left out, and so are stages without any."""
    need = {"stage", "trial_id", "epoch_s", "time_total_s"}
    if hist.empty or not need <= set(hist.columns):
        return {}
    training = pd.Series(float("nan"), index=hist.index)
    if "train_s" in hist.columns:
        training = hist["train_s"].astype(float)
    if {"n_train", "images_per_s"} <= set(hist.columns):
        n_train = hist["n_train"].astype(float).where(lambda n: n > 0)
        training = training.fillna(n_train / hist["images_per_s"].astype(float))
    rows = hist.assign(training=training).dropna(subset=["training", "epoch_s", "time_total_s"])
    training = rows["training"]
    per_trial = pd.DataFrame({"stage": rows["stage"], "trial_id": rows["trial_id"], "training": training,
                              "evaluation": rows["epoch_s"].astype(float) - training,
                              "epochs": rows["epoch_s"].astype(float), "total": rows["time_total_s"].astype(float)})
    per_trial = per_trial.groupby(["stage", "trial_id"], sort=False).agg(
        training=("training", "sum"), evaluation=("evaluation", "sum"), epochs=("epochs", "sum"),
        total=("total", "max"))
    per_trial["other"] = per_trial["total"] - per_trial["epochs"]
    means = per_trial.groupby(level="stage", sort=False)[["training", "evaluation", "other"]].mean()
    return {str(stage): {k: round(float(v), 1) for k, v in row.items()} for stage, row in means.iterrows()}


def _seconds(delta: pd.Timedelta) -> float:
    return round(delta.total_seconds(), 1)


def summary(df: pd.DataFrame, hist: pd.DataFrame) -> dict[str, Any]:
    """What ran the sweep and for how long, as a record keeps it (record.json)."""
    ran = code(df)
    return {"machines": machines(df), "code": ran, "load_avg": load_average(hist),
            "wall_times": wall_times(hist), "dirty": any(c.get("dirty") for c in ran),
            "synthetic": synthetic(df)}


def machine_line(m: dict[str, Any]) -> str:
    """`vm: AMD EPYC, 2 CPUs, ...` for one entry of `machines`."""
    return f"{m.get('host') or 'unknown host'}: {describe_machine(m)}"


def code_line(c: dict[str, Any]) -> str:
    commit = c.get("commit")
    text = f"bnsweep {c.get('bnsweep') or '?'}" + (f", git commit `{commit}`" if commit else ", no git commit")
    return text + (" **with uncommitted changes (dirty)**" if c.get("dirty") else "")


def lines(run: dict[str, Any]) -> list[str]:
    """Markdown list items of `summary`'s dict: machines, code, load, wall time."""
    out = []
    trials = sum(m["trials"] for m in run["machines"])
    if run["machines"]:
        out += [f"- Ran on {machine_line(m)} ({m['trials']} trial(s))." for m in run["machines"]]
    else:
        out.append("- The trials did not report their machine (made before bnsweep reported it).")
    out += [f"- Trials ran {code_line(c)} ({c['trials']} trial(s))." for c in run["code"] if trials]
    if run["load_avg"]:
        la = run["load_avg"]
        out.append(f"- Load average (1 min) at the trials' reports: mean {la['mean']:g}, max {la['max']:g} "
                   f"({la['reports']} reports).")
    times = run["wall_times"]
    if times["sweep_s"] is not None:
        out.append(f"- Wall time {duration(times['sweep_s'], exact=True)} (first trial start to last report), "
                   f"{times['start']} to {times['end']}.")
    return out
