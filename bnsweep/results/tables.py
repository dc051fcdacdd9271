"""The study's comparison table: trials grouped by setting, mean ± std over seeds.

A *setting* is every trial key except those in NOT_SETTING_KEYS (the seed, and per-trial plumbing
such as paths and devices), so the table compares what was varied on purpose. Only the keys that
differ between settings are shown; the shared ones go in a caption line.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from bnsweep.results.columns import trial_keys
from bnsweep.results.formats import markdown_table

# Trial keys that are not part of a setting: replicates (seed) and per-trial plumbing.
NOT_SETTING_KEYS = frozenset({"seed", "init_checkpoint", "data_dir", "device"})
TABLE_METRICS = ("clean_acc", "robust_acc", "final_clean_acc", "final_robust_acc")
METRIC_LABELS = {"clean_acc": "clean", "robust_acc": "PGD robust", "final_clean_acc": "final clean",
                 "final_robust_acc": "final robust"}


def _hashable(value: Any) -> Any:
    """Lists (e.g. eval_eps_255) and dicts become tuples so that they can be grouped on."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def format_value(value: Any) -> str:
    """A setting value as a short label (tuples joined by commas, missing as '-')."""
    if isinstance(value, tuple):
        return ",".join(format_value(v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_keys(df: pd.DataFrame) -> list[str]:
    """Trial keys that define a setting (the experiment too, when several are loaded)."""
    keys = [k for k in trial_keys(df) if k not in NOT_SETTING_KEYS]
    return (["experiment"] if "experiment" in df.columns else []) + keys


def settings_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`df` with hashable setting columns, and the setting keys that vary (at least one)."""
    keys = setting_keys(df)
    out = df.copy()
    for key in keys:
        if out[key].dtype == object:
            out[key] = out[key].map(_hashable)
    varying = [k for k in keys if out[k].astype(str).nunique(dropna=False) > 1]
    return out, varying or keys[:1]


def summarize(df: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS,
              statuses: Sequence[str] = ("terminated",)) -> pd.DataFrame:
    """One row per setting: the varying setting keys, `n_seeds`, and `<metric>_mean`,
    `<metric>_std` (sample std, ddof=1; NaN for one seed) for each metric present.

    Trials whose status is not in `statuses` (failed, diverged, still running) are left out.
    The frame's attrs hold `common` (the keys shared by all settings, with their values).
    """
    df = df[df["status"].isin(statuses)] if "status" in df.columns else df
    metrics = [m for m in metrics if m in df.columns and df[m].notna().any()]
    frame, varying = settings_frame(df)
    if frame.empty:
        empty = pd.DataFrame(columns=[*varying, "n_seeds"])
        empty.attrs["common"] = {}
        return empty
    grouped = frame.groupby(varying, dropna=False, sort=True)
    table = grouped.size().rename("n_seeds").to_frame()  # one trial per seed and setting
    for m in metrics:
        table[f"{m}_mean"] = grouped[m].mean()
        table[f"{m}_std"] = grouped[m].std(ddof=1)
    table = _in_run_order(table.reset_index(), df)
    common = {k: frame[k].iloc[0] for k in setting_keys(df) if k not in varying}
    table.attrs["common"] = common
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
    """The summary as text cells: accuracies in percent as `mean ± std` (mean only for 1 seed)."""
    keys = [c for c in table.columns if c != "n_seeds" and not c.endswith(("_mean", "_std"))]
    out = pd.DataFrame({k: table[k].map(format_value) for k in keys})
    out["seeds"] = table["n_seeds"].astype(int).astype(str)
    for m in _metric_names(table):
        out[f"{METRIC_LABELS.get(m, m)} (%)"] = [
            _mean_std(a, b, pm, scale, digits) for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"])]
    return out


def common_line(table: pd.DataFrame) -> str:
    """`key=value` for the settings every row shares (the table's caption)."""
    common = table.attrs.get("common", {})
    return ", ".join(f"{k}={format_value(v)}" for k, v in common.items())


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table of `summarize`'s output, with the shared settings underneath."""
    text = markdown_table(display_table(table))
    common = common_line(table)
    return text + (f"\nShared by all rows: {common}\n" if common else "")


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
    caption = caption or ("Accuracy (\\%), mean $\\pm$ std over seeds. "
                          + _latex_escape(common_line(table)))
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
