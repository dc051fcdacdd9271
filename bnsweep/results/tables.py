"""The study's comparison table: trials grouped by setting, mean ± std over seeds.

A *setting* is every trial key except those in NOT_SETTING_KEYS (the seed, and per-trial plumbing
such as paths and devices), so the table compares what was varied on purpose. A key that means
nothing for a trial (the PGD settings of a clean-trained one, see `columns.NOT_APPLICABLE`) is blank
for it and does not make settings differ. Only the keys that differ between settings are shown; the
shared ones go in a caption line. Every robust-accuracy column holds one radius, named in its header.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bnsweep.core.choices import DONE, TrialStatus
from bnsweep.layout.labels import format_value, is_missing
from bnsweep.results.columns import (
    COLLISION_SUFFIX,
    SYNTHETIC_TITLE,
    gate_of,
    not_applicable,
    robust_at,
    robust_radius,
    study_radii,
    synthetic,
    trial_keys,
)
from bnsweep.results.formats import markdown_table

# Keys a trial may resolve itself (`auto`) and reports as metrics (`precision_reported`, ...).
RESOLVED_KEYS = ("precision", "compile")
# Trial keys that are not part of a setting: replicates (seed), per-trial plumbing, and how often
# the per-epoch evaluation ran (it changes no number the table shows).
NOT_SETTING_KEYS = frozenset({"seed", "init_checkpoint", "data_dir", "device", "eval_every"})
# `robust_acc` and `final_robust_acc` become one column per radius (see `metric_columns`).
TABLE_METRICS = ("clean_acc", "robust_acc", "final_clean_acc", "final_robust_acc", "final_autoattack_acc")
METRIC_LABELS = {"clean_acc": "clean", "final_clean_acc": "final clean"}
_BY_RADIUS = re.compile(r"^(final_)?(robust|autoattack)_acc_eps(.+)$")
# Final metrics measured at each trial's own robust radius: one column per radius.
FINAL_BY_RADIUS = ("final_robust_acc", "final_autoattack_acc")


def _hashable(value: Any) -> Any:
    """Lists (e.g. eval_eps_255) and dicts become tuples so that they can be grouped on."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def setting_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    """`key=value, ...` for a legend or a note, leaving out keys that do not apply (blank)."""
    return ", ".join(f"{k}={format_value(v, k)}" for k, v in zip(keys, values) if not is_missing(v))


def metric_label(name: str) -> str:
    """Column header of a metric: `robust_acc_eps8` -> `PGD robust @8/255`,
    `final_robust_acc_eps8` -> `final robust @8/255`, `final_autoattack_acc_eps8` -> `final
    AutoAttack @8/255`, `clean_acc` -> `clean`."""
    if m := _BY_RADIUS.match(name):
        what = "final AutoAttack" if m.group(2) == "autoattack" else "final robust" if m.group(1) else "PGD robust"
        return f"{what} @{m.group(3)}/255"
    return METRIC_LABELS.get(name, name)


def setting_keys(df: pd.DataFrame) -> list[str]:
    """Trial keys that define a setting (the experiment too, when several are loaded)."""
    keys = [k for k in trial_keys(df) if k not in NOT_SETTING_KEYS]
    return (["experiment"] if "experiment" in df.columns else []) + keys


def settings_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`df` with hashable setting columns and keys that do not apply to a trial blanked (None),
    and the setting keys that vary among the trials they apply to (at least one key)."""
    keys = setting_keys(df)
    out = df.copy()
    for key in RESOLVED_KEYS:  # `auto`: group by what each trial ran with, as it reported
        ran = key + COLLISION_SUFFIX
        if key in out.columns and ran in out.columns:
            out[key] = out[ran].astype(object).where(out[ran].notna(), out[key])
    for key in keys:
        if out[key].dtype == object:
            out[key] = out[key].map(_hashable)
    unused = {k: rows for k, rows in not_applicable(out).items() if k in keys}
    for key, rows in unused.items():
        out[key] = out[key].astype(object).where(~rows, None)
    varying = [k for k in keys
               if out.loc[~unused[k] if k in unused else slice(None), k].astype(str).nunique() > 1]
    return out, varying or keys[:1]


def best_trial(df: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The best terminated trial by `metric` (`mode`: max or min), else the best trial of any status
    (a stage still running); None when no trial reported the metric. The one rule `status` and the
    report's best trials use."""
    if metric not in df.columns or df[metric].isna().all():
        return None
    done = df[(df["status"] == TrialStatus.TERMINATED) & df[metric].notna()]
    pool = done if len(done) else df[df[metric].notna()]
    return pool.loc[pool[metric].idxmax() if mode == "max" else pool[metric].idxmin()]


def best_setting(df: pd.DataFrame, best: pd.Series) -> str:
    """The setting of the trial `best` (a row of `df`) by the keys that vary among `df`'s trials, as
    legends label it (keys that do not apply to it left out)."""
    settings, varying = settings_frame(df)
    keys = [k for k in varying if k not in ("stage", "experiment")]
    return setting_label(keys, settings.loc[best.name, keys])


def _shared(frame: pd.DataFrame, keys: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The values of `keys` (not varying) shared by all rows, and {'rows where GATE is V':
    {key: value}} for those that apply to some rows only (see `columns.NOT_APPLICABLE`)."""
    everywhere: dict[str, Any] = {}
    somewhere: dict[str, dict[str, Any]] = {}
    unused = not_applicable(frame)
    for key in keys:
        applies = ~unused[key] if key in unused else pd.Series(True, index=frame.index)
        if not applies.any():
            continue
        value = frame.loc[applies, key].iloc[0]
        if applies.all():
            everywhere[key] = value
        else:
            gate = gate_of(key)
            where = f"rows where {gate} is {', '.join(sorted(map(str, set(frame.loc[applies, gate]))))}"
            somewhere.setdefault(where, {})[key] = value
    return everywhere, somewhere


def _same(df: pd.DataFrame, a: str, b: str) -> bool:
    """Whether columns `a` and `b` hold the same values wherever `a` has one."""
    if a not in df.columns or b not in df.columns:
        return False
    both = df[[a, b]].astype(float).dropna(subset=[a])
    return bool(np.allclose(both[a], both[b], rtol=0, atol=1e-9))


def metric_columns(df: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS,
                   radii: Sequence[float] | None = None) -> pd.DataFrame:
    """Per trial, the table's metrics as fractions, one radius per robust column: `robust_acc`
    becomes `robust_acc_eps{E}` for each E in `radii` (default: `columns.study_radii`, so a
    clean-trained trial is shown at the adversarial trials' radius); `final_robust_acc`, measured at
    each trial's robust radius, becomes `final_robust_acc_eps{E}` per radius it was measured at (and
    so does `final_autoattack_acc`).
    Columns without any value are left out, and so is `final_clean_acc` where it repeats
    `clean_acc`."""
    radius = robust_radius(df)
    radii = study_radii(df, radius) if radii is None else radii
    out: dict[str, pd.Series] = {}
    for m in metrics:
        if m == "robust_acc":
            out.update({f"robust_acc_eps{r:g}": robust_at(df, r, radius) for r in radii})
        elif m in FINAL_BY_RADIUS and m in df.columns:
            final = df[m].astype(float)
            out.update({f"{m}_eps{r:g}": final.where(radius == r)
                        for r in sorted(set(radius[final.notna()]))})
        elif m == "final_clean_acc" and "clean_acc" in metrics and _same(df, m, "clean_acc"):
            continue  # the last epoch's clean accuracy again (same model, same images)
        elif m in df.columns:
            out[m] = df[m].astype(float)
    values = pd.DataFrame(out, index=df.index)
    return values.loc[:, values.notna().any()]


def summarize(df: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS,
              statuses: Sequence[str] = DONE,
              radii: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per setting: the varying setting keys, `n_seeds` (distinct seeds: trials of one seed
    that differ only in keys a setting leaves out, such as `device`, count once), and `<metric>_mean`,
    `<metric>_std` (sample std over the trials, ddof=1; NaN for one trial) for each of `metric_columns`.

    Trials whose status is not in `statuses` (failed, diverged, still running) are left out.
    The frame's attrs hold `common` (the keys shared by all settings, with their values) and
    `common_where` (keys shared by all settings they apply to, by condition).
    """
    df = df[df["status"].isin(statuses)] if "status" in df.columns else df
    values = metric_columns(df, metrics, radii)
    frame, varying = settings_frame(df)
    if frame.empty:
        empty = pd.DataFrame(columns=[*varying, "n_seeds"])
        empty.attrs.update(common={}, common_where={}, synthetic=synthetic(df))
        return empty
    seeds = [df["seed"]] if "seed" in df.columns else []
    grouped = pd.concat([frame[varying], values, *seeds], axis=1).groupby(varying, dropna=False, sort=True)
    table = (grouped["seed"].nunique() if seeds else grouped.size()).rename("n_seeds").to_frame()
    for m in values.columns:
        table[f"{m}_mean"] = grouped[m].mean()
        table[f"{m}_std"] = grouped[m].std(ddof=1)
    table = _in_run_order(table.reset_index(), df)
    common, common_where = _shared(frame, [k for k in setting_keys(df) if k not in varying])
    table.attrs.update(common=common, common_where=common_where, synthetic=synthetic(df))
    return table


def _in_run_order(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Experiments and stages in the order they were loaded (a pipeline's order), not A-Z."""
    for key in ("stage", "experiment"):
        if key in table.columns:
            order = {v: i for i, v in enumerate(dict.fromkeys(df[key]))}
            table = table.sort_values(key, key=lambda s: s.map(order), kind="stable")
    return table.reset_index(drop=True)


def _metric_names(table: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]


def _mean_std(mean: float, std: float, pm: str, scale: float, digits: int) -> str:
    if pd.isna(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if pd.isna(std) else f"{text}{pm}{std * scale:.{digits}f}"


def display_table(table: pd.DataFrame, pm: str = " ± ", scale: float = 100.0,
                  digits: int = 1) -> pd.DataFrame:
    """The summary as text cells: accuracies in percent as `mean ± std` (mean only for 1 seed;
    '-' where a setting has no value, e.g. never evaluated at that radius)."""
    keys = [c for c in table.columns if c != "n_seeds" and not c.endswith(("_mean", "_std"))]
    out = pd.DataFrame({k: table[k].map(lambda v, k=k: format_value(v, k)) for k in keys})
    out["seeds"] = table["n_seeds"].astype(int).astype(str)
    for m in _metric_names(table):
        out[f"{metric_label(m)} (%)"] = [
            _mean_std(a, b, pm, scale, digits) for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"])]
    return out


def common_line(table: pd.DataFrame) -> str:
    """`key=value` for the settings every row shares, then those shared by every row they apply
    to (the table's caption)."""
    def pairs(values: dict[str, Any]) -> str:
        return ", ".join(f"{k}={format_value(v, k)}" for k, v in values.items())

    parts = [pairs(table.attrs.get("common", {}))]
    parts += [f"by all {where}: {pairs(v)}" for where, v in table.attrs.get("common_where", {}).items()]
    return "; ".join(p for p in parts if p)


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table of `summarize`'s output, with the shared settings underneath."""
    text = markdown_table(display_table(table))
    common = common_line(table)
    title = f"**{SYNTHETIC_TITLE}.**\n\n" if table.attrs.get("synthetic") else ""
    return title + text + (f"\nShared by all rows: {common}\n" if common else "")


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs `table` environment of `summarize`'s output (needs \\usepackage{booktabs})."""
    cells = display_table(table, pm=" \\pm ")
    metric_cols = set(cells.columns[len(cells.columns) - len(_metric_names(table)):])
    align = "".join("r" if c in metric_cols or c == "seeds" else "l" for c in cells.columns)

    def cell(col: str, value: str) -> str:
        return f"${value}$" if col in metric_cols and value != "-" else _latex_escape(value)

    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(_latex_escape(c) for c in cells.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c, v) for c, v in zip(cells.columns, row)) + r" \\"
              for row in cells.itertuples(index=False)]
    common = common_line(table)
    caption = caption or ("Accuracy (\\%), mean $\\pm$ std over seeds."
                          + (f" Shared by all rows: {_latex_escape(common)}." if common else ""))
    caption = (f"{SYNTHETIC_TITLE}. " if table.attrs.get("synthetic") else "") + caption
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
