"""A Markdown report of a sweep (`bnsweep report DIR -o OUT`), with its table and figures.

The report answers, without code: how many trials ran and how did they end, which trial is best
per stage, how the settings compare (mean ± std over seeds), how robust accuracy falls with
epsilon and evolves per epoch, which trials failed and why, and whether the evaluation looks
broken (the sanity section, after the checks of fra31/auto-attack and RobustBench).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import bnsweep
from bnsweep import results
from bnsweep.core.choices import FinalAttack
from bnsweep.results import figures, tables
from bnsweep.results.columns import COLLISION_SUFFIX, DEFAULT_METRIC, DEFAULT_MODE, robust_radius
from bnsweep.sweep.storage import SWEEP_FILE

TOLERANCE = 0.005  # accuracies are fractions: half a percentage point of evaluation noise
AA_MARGIN = 0.01  # AutoAttack may not beat PGD by more than one point
MAX_LISTED = 10  # findings or failed trials listed per kind before "... and N more"


@dataclass(frozen=True)
class Finding:
    """One sign of a broken evaluation in one trial."""

    check: str
    stage: str
    trial_id: str
    message: str


# ----------------------------------------------------------------------------- sanity checks


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _check_eps_monotone(row: pd.Series, eps: dict[float, str], tol: float) -> list[str]:
    values = [(e, row[c]) for e, c in eps.items() if pd.notna(row[c])]
    return [f"robust accuracy rises from {_pct(a)} at eps={e1:g} to {_pct(b)} at eps={e2:g}"
            for (e1, a), (e2, b) in zip(values, values[1:]) if b > a + tol]


def _check_robust_le_clean(row: pd.Series, eps: dict[float, str], tol: float) -> list[str]:
    pairs = [("clean_acc", c) for c in ["robust_acc", *eps.values()]]
    pairs.append(("final_clean_acc", "final_robust_acc"))
    return [f"{rob} {_pct(row[rob])} is above {clean} {_pct(row[clean])}"
            for clean, rob in pairs if clean in row.index and rob in row.index
            and pd.notna(row[clean]) and pd.notna(row[rob]) and row[rob] > row[clean] + tol]


def _final_attack(row: pd.Series) -> str | None:
    for name in ("final_attack" + COLLISION_SUFFIX, "final_attack"):
        if name in row.index and isinstance(row[name], str):
            return row[name]
    return None


def _check_aa_vs_pgd(row: pd.Series, margin: float) -> list[str]:
    if _final_attack(row) != FinalAttack.AUTOATTACK or not {"final_robust_acc", "robust_acc"} <= set(row.index):
        return []
    aa, pgd = row["final_robust_acc"], row["robust_acc"]
    if pd.notna(aa) and pd.notna(pgd) and aa > pgd + margin:
        return [f"AutoAttack accuracy {_pct(aa)} is above PGD accuracy {_pct(pgd)} by more than "
                f"{100 * margin:g} point(s)"]
    return []


def _check_final_present(row: pd.Series) -> list[str]:
    if row.get("status") != "terminated" or _final_attack(row) == FinalAttack.NONE:  # no final evaluation
        return []
    missing = [m for m in ("final_clean_acc", "final_robust_acc") if pd.isna(row.get(m))]
    return [f"terminated without {', '.join(missing)}"] if missing else []


def sanity_checks(df: pd.DataFrame, tol: float = TOLERANCE,
                  aa_margin: float = AA_MARGIN) -> list[Finding]:
    """Signs of a broken evaluation in `results.load`'s frame: robust accuracy that does not
    fall as epsilon grows, robust above clean accuracy, AutoAttack above PGD by more than
    `aa_margin`, and terminated trials whose final metrics are missing."""
    eps = results.eps_columns(df)
    findings = []
    for _, row in df.iterrows():
        checks = {
            "robust accuracy does not fall as epsilon grows": _check_eps_monotone(row, eps, tol),
            "robust accuracy above clean accuracy": _check_robust_le_clean(row, eps, tol),
            "AutoAttack above PGD": _check_aa_vs_pgd(row, aa_margin),
            "final metrics missing": _check_final_present(row),
        }
        findings += [Finding(check, str(row.get("stage")), str(row.get("trial_id")), message)
                     for check, messages in checks.items() for message in messages]
    return findings


# ----------------------------------------------------------------------------- sections


def _duration(delta: pd.Timedelta | float | None) -> str:
    if delta is None or pd.isna(delta):
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, pd.Timedelta) else float(delta)
    return str(dt.timedelta(seconds=round(seconds)))


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Trials by status per stage, with wall time (first start to last result) and the summed
    time of all trials."""
    counts = pd.crosstab(df["stage"], df["status"]).reindex(
        columns=[s for s in ("terminated", "error", "diverged", "running", "paused", "pending")
                 if s in set(df["status"])], fill_value=0)
    out = counts.copy()
    out.insert(0, "trials", counts.sum(axis=1))
    for stage, g in df.groupby("stage"):
        # start_time is missing where the experiment state is (trials started after its last snapshot)
        timed = all(c in g.columns and pd.api.types.is_datetime64_any_dtype(g[c]) for c in ("timestamp", "start_time"))
        wall = g["timestamp"].max() - g["start_time"].min() if timed else None
        out.loc[stage, "wall time"] = _duration(wall)
        out.loc[stage, "trial time"] = _duration(g["time_total_s"].sum()
                                                 if "time_total_s" in g.columns else None)
    order = list(dict.fromkeys(df["stage"]))
    return out.loc[order].reset_index()


DEVICE_COLUMNS = ("device_used", "cuda_visible_devices")  # reported by every trial of a sweep


def devices_table(df: pd.DataFrame) -> pd.DataFrame:
    """Trials per stage and device they really trained on (`device_used`; `device: auto` falls back to
    the CPU where torch sees no CUDA device) and the CUDA_VISIBLE_DEVICES Ray gave them."""
    columns = [c for c in DEVICE_COLUMNS if c in df.columns]
    if not columns:
        return pd.DataFrame()
    found = df[["stage", *columns]].fillna("-")  # a trial that never reported
    return found.groupby(["stage", *columns], sort=False).size().rename("trials").reset_index()


def devices_markdown(df: pd.DataFrame) -> str:
    table = devices_table(df)
    return results.markdown_table(table) if len(table) else "*Not reported by these trials.*\n"


def best_trials(df: pd.DataFrame, objectives: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """Best terminated trial (else best trial) per stage by the stage's metric and mode (a
    robust metric with the radius the best trial measured it at)."""
    rows = []
    settings, varying = tables.settings_frame(df)
    keys = [k for k in varying if k not in ("stage", "experiment")]
    for stage, g in df.groupby("stage", sort=False):
        metric, mode = objectives.get(stage, (DEFAULT_METRIC, DEFAULT_MODE))
        if metric not in g.columns or g[metric].isna().all():
            rows.append({"stage": stage, "metric": f"{metric} ({mode})", "trial_id": "-",
                         "value": "not reported"})
            continue
        done = g[(g["status"] == "terminated") & g[metric].notna()]
        pool = done if len(done) else g[g[metric].notna()]
        best = pool.loc[pool[metric].idxmax() if mode == "max" else pool[metric].idxmin()]
        name = metric  # a robust metric: with the radius it was measured at
        if metric in ("robust_acc", "final_robust_acc"):
            name += f" @{robust_radius(df.loc[[best.name]]).iloc[0]:g}/255"
        rows.append({"stage": stage, "metric": f"{name} ({mode})", "trial_id": best["trial_id"],
                     "value": f"{best[metric]:.4g}",
                     "setting": tables.setting_label(keys, settings.loc[best.name, keys]),
                     "seed": best.get("seed"), "checkpoint": best.get("checkpoint")})
    return pd.DataFrame(rows)


def _listed(lines: list[str]) -> list[str]:
    extra = len(lines) - MAX_LISTED
    return lines[:MAX_LISTED] + ([f"- ... and {extra} more"] if extra > 0 else [])


def failed_section(df: pd.DataFrame) -> list[str]:
    """Notes for failed, diverged and unfinished trials."""
    failed = df[df["status"].isin(["error", "diverged"])]
    lines = _listed([f"- `{r.trial_id}` ({r.stage}, {r.status}): {r.error}"
                     for r in failed.itertuples()])
    unfinished = df["status"].isin(["running", "pending", "paused"]).sum()
    if unfinished:
        lines.append(f"- {unfinished} trial(s) not finished (running, paused or pending); an "
                     "interrupted sweep leaves its running trials marked as running.")
    return lines or ["No failed trials."]


def sanity_section(findings: list[Finding]) -> list[str]:
    if not findings:
        return ["No signs of a broken evaluation: robust accuracy falls with epsilon and stays "
                "below clean accuracy, AutoAttack is not above PGD, final metrics are present."]
    lines = []
    for check in dict.fromkeys(f.check for f in findings):
        hits = [f for f in findings if f.check == check]
        lines.append(f"- **{check}** ({len(hits)} finding(s)):")
        lines += ["  " + s for s in _listed([f"- `{f.trial_id}` ({f.stage}): {f.message}"
                                             for f in hits])]
    return lines


def _figure_lines(name: str, title: str, draw, out: Path) -> list[str]:
    try:
        figures.save_figure(draw(), out / f"{name}.png")
    except ValueError as exc:  # nothing to plot: say why instead of failing the report
        return [f"*{title}: not drawn ({exc}).*"]
    return [f"![{title}]({name}.png)", "", f"PDF: [{name}.pdf]({name}.pdf)"]


# ----------------------------------------------------------------------------- provenance


def sweep_files(experiments: list[results.Experiment]) -> list[tuple[str, str]]:
    """(URI, SHA-256) of the sweep file copied into each sweep directory, where there is one."""
    found = {}
    for exp in experiments:
        path = posixpath.join(posixpath.dirname(exp.path), SWEEP_FILE)
        if path not in found:
            try:
                with exp.fs.open_input_stream(path) as f:
                    found[path] = (exp.prefix + path, hashlib.sha256(f.readall()).hexdigest())
            except OSError:  # no sweep file: an experiment written by hand or by Ray alone
                found[path] = None
    return [v for v in found.values() if v]


def provenance_lines(experiments: list[results.Experiment]) -> list[str]:
    """What made this report: when, which bnsweep (version, commit), which sweep files."""
    commit = bnsweep.code_commit()
    lines = [f"- Written {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} by bnsweep "
             f"{bnsweep.__version__}" + (f", git commit `{commit}`" if commit else "") + "."]
    lines += [f"- Sweep file `{uri}`, SHA-256 `{digest}`." for uri, digest in sweep_files(experiments)]
    return lines


# ----------------------------------------------------------------------------- the report


def write_report(paths: results.Paths, out: str | os.PathLike,
                 metric: str | None = None, mode: str | None = None) -> Path:
    """Write `report.md`, the figures (PNG and PDF), `table.tex` and `trials.csv` into `out`;
    returns the path of report.md. `metric`/`mode` override the sweep file's objective."""
    experiments = results.find_experiments(paths)
    df, hist = results.load(paths), results.history(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to report
    objectives = {e.stage: (metric or e.metric, mode or e.mode) for e in experiments}
    table = tables.summarize(df)
    (out / "table.tex").write_text(tables.to_latex(table))
    results.write_frame(df, "csv", str(out / "trials.csv"))

    names = ", ".join(dict.fromkeys(e.name for e in experiments))
    sources = ", ".join(f"`{os.fspath(p)}`" for p in
                        ([paths] if isinstance(paths, (str, os.PathLike)) else paths))
    lines = [f"# Sweep report: {names}", "",
             f"From {sources}. Accuracies in the comparison table and figures are percentages; "
             "metric values elsewhere are as reported (fractions).", "",
             *provenance_lines(experiments), "",
             "## Summary", "", results.markdown_table(summary_table(df)),
             "### Best trial per stage", "", results.markdown_table(best_trials(df, objectives)),
             "### Devices", "", devices_markdown(df),
             "## Comparison", "",
             "Terminated trials grouped by setting; mean ± std over seeds (LaTeX: "
             "[table.tex](table.tex); every trial: [trials.csv](trials.csv)). Each robust column "
             "holds one radius: *PGD robust* is the last epoch's PGD evaluation, at the adversarial "
             "trials' training radius for every row (clean-trained rows included); *final robust* is "
             "the final evaluation (`final_attack`), which each trial ran at its own robust radius, "
             "so a row is '-' in the columns of other radii. Keys that do not apply to a row (PGD "
             "settings of a clean-trained one) show as '-'.", "",
             tables.to_markdown(table) if len(table) else "*No terminated trials yet.*", "",
             "## Figures", "",
             *_figure_lines("study", "Clean and robust accuracy per trainable set and init",
                            lambda: figures.study_figure(df), out), "",
             *_figure_lines("robustness_curves", "Robust accuracy against epsilon",
                            lambda: figures.robustness_curves(df), out), "",
             *_figure_lines("training_curves", "Clean and robust accuracy per epoch",
                            lambda: figures.training_curves(hist), out), "",
             "## Failed trials", "", *failed_section(df), "",
             "## Sanity checks", "", *sanity_section(sanity_checks(df)), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
