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
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bnsweep import provenance, results
from bnsweep.core.choices import FAILED, UNFINISHED, FinalAttack, TrialStatus
from bnsweep.errors import ConfigError, DamagedWarning, DataError, UsageError
from bnsweep.layout.labels import duration
from bnsweep.layout.paths import SWEEP_FILE
from bnsweep.layout.plans import stage_objectives
from bnsweep.layout.state import load_state
from bnsweep.results import compare, figures, record, runinfo, tables
from bnsweep.results.columns import (
    COLLISION_SUFFIX,
    DEFAULT_METRIC,
    DEFAULT_MODE,
    SYNTHETIC_TITLE,
    robust_radius,
    synthetic,
)

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
    found = []
    if row.get("final_autoattack_acc", float("nan")) > row.get("final_autoattack_before_acc", float("nan")):
        found.append(f"final_autoattack_acc {_pct(row['final_autoattack_acc'])} is above the final attack's "
                     f"{_pct(row['final_autoattack_before_acc'])} on the same images, which it only attacked further")
    if _final_attack(row) != FinalAttack.AUTOATTACK or not {"final_robust_acc", "robust_acc"} <= set(row.index):
        return found
    aa, pgd = row["final_robust_acc"], row["robust_acc"]
    if pd.notna(aa) and pd.notna(pgd) and aa > pgd + margin:
        found.append(f"AutoAttack accuracy {_pct(aa)} is above PGD accuracy {_pct(pgd)} by more than "
                     f"{100 * margin:g} point(s)")
    return found


def autoattack_gap(df: pd.DataFrame) -> list[str]:
    """How far the final PGD overstates robustness: per stage with a `final_autoattack` column,
    the final attack's and AutoAttack's robust accuracy on the same images (AutoAttack attacks
    what the final attack left robust), on average over trials and the largest gap."""
    if "final_autoattack_acc" not in df.columns:
        return []
    lines = []
    done = df[df["final_autoattack_acc"].notna() & df["final_autoattack_before_acc"].notna()]
    for stage, rows in done.groupby("stage", sort=False) if "stage" in done.columns else [("", done)]:
        gap = rows["final_autoattack_before_acc"] - rows["final_autoattack_acc"]
        worst = rows.loc[gap.idxmax()]
        lines.append(f"- **PGD against AutoAttack** (stage {stage}, {len(rows)} trial(s), "
                     f"{', '.join(sorted(set(rows['final_autoattack'].astype(str))))} on the first "
                     f"{_images(rows)} evaluation images): the final attack leaves "
                     f"{_pct(rows['final_autoattack_before_acc'].mean())} robust on average, AutoAttack after it "
                     f"{_pct(rows['final_autoattack_acc'].mean())}: {100 * gap.mean():.1f} points lower on average, "
                     f"at most {100 * gap.max():.1f} (`{worst.get('trial_id')}`).")
    return lines


def _images(rows: pd.DataFrame) -> str:
    n = rows["final_autoattack_n"].where(rows["final_autoattack_n"] > 0, rows["eval_n"]).astype(int)
    return ", ".join(map(str, sorted(set(n))))


def _check_final_present(row: pd.Series) -> list[str]:
    if row.get("status") != TrialStatus.TERMINATED or _final_attack(row) == FinalAttack.NONE:  # no final evaluation
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


def summary_table(df: pd.DataFrame, hist: pd.DataFrame | None = None) -> pd.DataFrame:
    """Trials by status per stage; with `results.history`'s frame also each stage's wall time
    (first trial start to last report, see `runinfo.wall_times`), the mean time of its terminated
    trials and the summed time of all its trials."""
    counts = pd.crosstab(df["stage"], df["status"]).reindex(
        columns=[s for s in (TrialStatus.TERMINATED, TrialStatus.ERROR, TrialStatus.DIVERGED, TrialStatus.RUNNING,
                             TrialStatus.PAUSED, TrialStatus.PENDING)
                 if s in set(df["status"])], fill_value=0)
    out = counts.copy()
    out.insert(0, "trials", counts.sum(axis=1))
    if hist is not None:
        times = runinfo.wall_times(hist)["stages"]
        for stage, g in df.groupby("stage"):
            out.loc[stage, "wall time"] = duration(times.get(str(stage), {}).get("wall_s"), exact=True)
            out.loc[stage, "mean trial time"] = duration(times.get(str(stage), {}).get("mean_trial_s"), exact=True)
            out.loc[stage, "trial time"] = duration(g["time_total_s"].sum()
                                                        if "time_total_s" in g.columns else None, exact=True)
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
    for stage, g in df.groupby("stage", sort=False):
        metric, mode = objectives.get(stage, (DEFAULT_METRIC, DEFAULT_MODE))
        best = tables.best_trial(g, metric, mode)
        if best is None:
            rows.append({"stage": stage, "metric": f"{metric} ({mode})", "trial_id": "-",
                         "value": "not reported"})
            continue
        name = metric  # a robust metric: with the radius it was measured at
        if metric in ("robust_acc", "final_robust_acc"):
            name += f" @{robust_radius(df.loc[[best.name]]).iloc[0]:g}/255"
        rows.append({"stage": stage, "metric": f"{name} ({mode})", "trial_id": best["trial_id"],
                     "value": f"{best[metric]:.4g}",
                     "setting": tables.best_setting(df, best),
                     "seed": best.get("seed"), "checkpoint": best.get("checkpoint")})
    return pd.DataFrame(rows)


def _listed(lines: list[str]) -> list[str]:
    extra = len(lines) - MAX_LISTED
    return lines[:MAX_LISTED] + ([f"- ... and {extra} more"] if extra > 0 else [])


def failed_section(df: pd.DataFrame) -> list[str]:
    """Notes for failed, diverged and unfinished trials."""
    failed = df[df["status"].isin(FAILED)]
    lines = _listed([f"- `{r.trial_id}` ({r.stage}, {r.status}): {r.error}"
                     for r in failed.itertuples()])
    unfinished = df["status"].isin(UNFINISHED).sum()
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


@dataclass(frozen=True)
class Sources:
    """What a report says of where its trials came from, besides the trials themselves."""

    lines: list[str]  # Markdown list items: sources, commands, sweep files
    objectives: dict[str, tuple[str, str]]  # {stage: (metric, mode)} from the sweep files
    dirty: bool = False  # a record made by a bnsweep with uncommitted changes


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record_source(path: str | os.PathLike) -> Sources:
    """A run record: described by what it holds, not where it lies, so that its report.md is the
    same wherever it is rewritten."""
    rec = record.read_record(path)
    meta, made = rec.meta, rec.meta["recorded"]
    lines = [f"- From the run record of experiment `{meta['experiment']}`, made {made['date']} from "
             f"`{meta['source']}` by {runinfo.code_line(made)}."]
    if meta.get("command"):
        lines.append(f"- Started with `{meta['command']}`.")
    text = rec.sweep_text()
    objectives = {}
    if text is not None:
        lines.append(f"- Sweep file `{SWEEP_FILE}` (as run, in the record), SHA-256 `{_digest(text)}`.")
        try:
            objectives = stage_objectives(text, f"{rec.root}/{SWEEP_FILE}")
        except ConfigError as err:
            warnings.warn(f"{rec.root}/{SWEEP_FILE}: damaged, objectives not read ({err})", DamagedWarning,
                          stacklevel=2)
    return Sources(lines, objectives, bool(made.get("dirty")))


def _experiment_sources(paths: list[str | os.PathLike]) -> Sources:
    experiments = results.find_experiments(paths)
    lines = [f"- From {', '.join(f'`{os.fspath(p)}`' for p in paths)}."]
    seen = set()
    for exp in experiments:
        root = posixpath.dirname(exp.path)
        if root in seen:
            continue
        seen.add(root)
        try:
            command = load_state(exp.prefix + root).get("command")
        except DataError as err:  # the trials still read; the command is not known
            warnings.warn(str(err), DamagedWarning, stacklevel=2)
            command = None
        if isinstance(command, str):
            lines.append(f"- Started with `{command}`.")
        text = _read(exp, posixpath.join(root, SWEEP_FILE))
        if text is not None:  # none: an experiment written by hand or by Ray alone
            lines.append(f"- Sweep file `{exp.prefix + posixpath.join(root, SWEEP_FILE)}`, SHA-256 `{_digest(text)}`.")
    return Sources(lines, {e.stage: (e.metric, e.mode) for e in experiments})


def _read(exp: results.Experiment, path: str) -> str | None:
    try:
        with exp.fs.open_input_stream(path) as f:
            return f.readall().decode("utf-8", errors="replace")
    except OSError:
        return None


def sources(paths: results.Paths) -> Sources:
    """Where the trials of `paths` (experiments or run records) came from, and their objectives."""
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    parts = [_record_source(p) if record.is_record(p) else _experiment_sources([p]) for p in given] \
        if any(record.is_record(p) for p in given) else [_experiment_sources(given)]
    return Sources([line for part in parts for line in part.lines],
                   {k: v for part in parts for k, v in part.objectives.items()},
                   any(part.dirty for part in parts))


def provenance_lines(found: Sources, run: dict) -> list[str]:
    """What made this report: when and with which bnsweep it was written, where its trials came
    from, and what ran them (machines, code, load, wall time; see `runinfo`)."""
    here = provenance.code()
    lines = [f"- Written {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} by "
             + runinfo.code_line({"bnsweep": here.version, "commit": here.commit, "dirty": here.dirty}) + "."]
    dirty = here.dirty or found.dirty or run["dirty"]
    warning = ["", "**DIRTY: code with uncommitted changes made these numbers or this report; they cannot "
               "be traced to a commit.**"] if dirty else []
    return lines + found.lines + runinfo.lines(run) + warning


# ----------------------------------------------------------------------------- the report


def _own_record(paths: results.Paths, out: str | os.PathLike) -> bool:
    """Whether `out` is the run record that `paths` names: its report is rewritten there (after the
    report's code changed: `bnsweep report docs/runs/demo -o docs/runs/demo`), and its typed
    trials.csv kept. UsageError, before anything is written, for a report of anything else into a
    record: it would replace the record's report and files with another's."""
    if not record.is_record(out):
        return False
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(given) != 1 or os.path.realpath(os.fspath(given[0])) != os.path.realpath(out):
        raise UsageError(f"-o: {os.fspath(out)} is a run record of other trials; allowed: a directory that is "
                         f"not a record, or the record itself (bnsweep report RECORD -o RECORD rewrites its report)")
    return True


def write_report(paths: results.Paths, out: str | os.PathLike,
                 metric: str | None = None, mode: str | None = None) -> Path:
    """Write `report.md`, the figures (PNG and PDF), `table.tex` and `trials.csv` into `out`;
    returns the path of report.md. `paths`: experiments or run records. `metric`/`mode` override
    the sweep file's objective. Into the run record it reports on, the report is rewritten and the
    record's own trials.csv kept (see `_own_record`)."""
    trials_csv = not _own_record(paths, out)
    found = sources(paths)
    df, hist = results.load(paths), results.history(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to report
    objectives = {stage: (metric or m, mode or o) for stage, (m, o) in found.objectives.items()}
    objectives.update({s: (metric or DEFAULT_METRIC, mode or DEFAULT_MODE)
                       for s in df["stage"].unique() if s not in objectives})
    table = tables.summarize(df)
    (out / "table.tex").write_text(tables.to_latex(table))
    if trials_csv:
        results.write_frame(df, "csv", str(out / "trials.csv"))

    names = ", ".join(dict.fromkeys(df["experiment"])) if len(df) else "no trials"
    title = f"# Sweep report: {names}" + (f" ({SYNTHETIC_TITLE})" if synthetic(df) else "")
    comparisons = compare.study_comparisons(df)
    lines = [title, "",
             "Accuracies in the comparison table and figures are percentages; metric values elsewhere "
             "are as reported (fractions).", "",
             *provenance_lines(found, runinfo.summary(df, hist)), "",
             "## Summary", "", results.markdown_table(summary_table(df, hist)),
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
             *_comparison_lines(comparisons),
             "## Figures", "",
             *_figure_lines("study", "Clean and robust accuracy per trainable set and init",
                            lambda: figures.study_figure(df), out), "",
             *_figure_lines("robustness_curves", "Robust accuracy against epsilon",
                            lambda: figures.robustness_curves(df), out), "",
             *_figure_lines("training_curves", "Clean and robust accuracy per epoch",
                            lambda: figures.training_curves(hist), out), "",
             "## Failed trials", "", *failed_section(df), "",
             "## Sanity checks", "", *sanity_section(sanity_checks(df)), "", *autoattack_gap(df), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _comparison_lines(comparisons: pd.DataFrame) -> list[str]:
    """The study's comparisons (`compare.study_comparisons`), where the trials hold them."""
    if comparisons.empty:
        return []
    return ["### Differences over seeds", "",
            "The study's questions among the adversarially trained trials: BN-only against "
            "classifier-only training from pre-trained weights, and BN-only training from pre-trained "
            "against from random weights. Difference of the means in percentage points with a 95 % "
            "Welch t interval over seeds: an interval that contains 0 means the seeds cannot tell the "
            "two settings apart.", "", compare.to_markdown(comparisons), ""]
