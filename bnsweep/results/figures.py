"""Figures of a sweep: the study's bars (accuracy per trainable set and init), robust accuracy
against epsilon, and accuracy per epoch, per setting.

Figures are built on `matplotlib.figure.Figure` (no pyplot, no global backend change) and saved as
PNG and PDF. Each setting has its own marker and line style as well as a colour from a
luminance-ordered map, so the curves stay distinguishable when printed in grey-scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnsweep.core.choices import DONE, FinalAttack, TrainAttack
from bnsweep.layout.labels import format_value
from bnsweep.results.columns import (
    SYNTHETIC_TITLE,
    eps_columns,
    robust_at,
    study_radii,
    synthetic,
)
from bnsweep.results.tables import (
    metric_columns,
    metric_label,
    setting_label,
    settings_frame,
)

# The study's trainable sets in the paper's order; other expressions follow, sorted.
STUDY_TRAINABLE = ("all", "bn", "bn+fc", "fc", "none")
# Clean bars light and plain, robust bars dark and hatched: apart in grey-scale as well as colour.
BAR_STYLES = ({"color": "#a6c8e6", "edgecolor": "black", "linewidth": 0.6},
              {"color": "#1f4f82", "edgecolor": "black", "hatchcolor": "white", "hatch": "///",
               "linewidth": 0.6})
ATTACK_NAMES = {FinalAttack.PGD: "PGD", FinalAttack.AUTOATTACK: "AutoAttack"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def _style(i: int, n: int) -> dict[str, Any]:
    """Colour (dark to light), marker and line style all change with the setting's index."""
    shade = 0.85 * i / max(n - 1, 1)
    return {"color": colormaps["viridis"](shade), "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def _groups(df: pd.DataFrame, statuses: Sequence[str]) -> Iterator[tuple[int, int, str, pd.DataFrame]]:
    """(index, count, legend label, trials) per setting, for trials with one of `statuses`."""
    df = df[df["status"].isin(statuses)] if "status" in df.columns else df
    if df.empty:
        raise ValueError(f"no trials with status {', '.join(statuses)} to plot")
    frame, varying = settings_frame(df)
    groups = list(frame.groupby(varying, dropna=False, sort=True))
    for column in [k for k in ("stage", "experiment") if k in varying]:  # pipeline order, not A-Z
        order = {v: i for i, v in enumerate(dict.fromkeys(frame[column]))}
        groups.sort(key=lambda kg: order[kg[1][column].iloc[0]])
    shown = _legend_keys(frame, varying)
    for i, (group, g) in enumerate(groups):
        key = group if isinstance(group, tuple) and len(group) == len(varying) else (group,)
        n = g["trial_id"].nunique() if "trial_id" in g.columns else len(g)
        label = setting_label(shown, [v for k, v in zip(varying, key) if k in shown]) + f" (n={n})"
        yield i, len(groups), label, g


def _legend_keys(frame: pd.DataFrame, varying: list[str]) -> list[str]:
    """The varying keys a legend needs: a key fixed within each stage (train_attack when one stage
    pre-trains cleanly and the next trains with PGD) is told by the stage's name already."""
    if "stage" not in varying:
        return varying
    per_stage = frame.groupby("stage")
    return [k for k in varying
            if k == "stage" or (per_stage[k].agg(lambda s: s.astype(str).nunique()) > 1).any()]


def _finish(fig: Figure, title: str, df: pd.DataFrame) -> Figure:
    """Legend below the axes; the title, which says when the numbers are made up."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(2, len(labels)),
               fontsize="small", frameon=False)
    fig.suptitle(f"{SYNTHETIC_TITLE}\n{title}" if synthetic(df) else title)
    return fig


def robustness_curves(df: pd.DataFrame, statuses: Sequence[str] = DONE) -> Figure:
    """Robust accuracy (%) against the L-inf radius, one line per setting, error bars = std over
    seeds, from the `robust_acc_eps{E}` columns of `results.load`."""
    eps = eps_columns(df)
    if not eps:
        raise ValueError("no robust_acc_eps{E} columns: the trials reported no per-radius accuracy")
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax = fig.add_subplot()
    xs = np.array(list(eps))
    for i, n, label, g in _groups(df, statuses):
        values = g[list(eps.values())].astype(float) * 100
        ax.errorbar(xs, values.mean().to_numpy(), yerr=values.std(ddof=1).fillna(0).to_numpy(),
                    label=label, capsize=3, markersize=6, **_style(i, n))
    if (xs > 0).all():
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel("L∞ radius ε (×1/255)")
    ax.set_ylabel("Robust accuracy (%)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    return _finish(fig, "Robust accuracy against ε (mean ± std over seeds)", df)


def training_curves(hist: pd.DataFrame, statuses: Sequence[str] = DONE,
                    metrics: Sequence[str] = ("clean_acc", "robust_acc")) -> Figure:
    """Accuracy (%) per epoch, one panel per metric, one line per setting (mean over seeds,
    shaded ± std), from `results.history`. `robust_acc` is drawn at the study's radius for every
    setting (`tables.metric_columns`), a clean-trained one included."""
    hist = hist[hist["status"].isin(statuses)] if "status" in hist.columns else hist
    values = metric_columns(hist, metrics)
    if values.empty:
        raise ValueError("history has none of the accuracy columns clean_acc, robust_acc")
    # epochs without an evaluation (`eval_every`) have no accuracy: the lines join the evaluated ones
    hist, metrics = hist.assign(**values).dropna(subset=list(values.columns), how="all"), list(values.columns)
    x = "epoch" if "epoch" in hist.columns else "training_iteration"
    fig = Figure(figsize=(5 * len(metrics), 5.5), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for i, n, label, g in _groups(hist, statuses):
        curves = g.groupby(x)[metrics].agg(["mean", "std"]) * 100
        for ax, metric in zip(axes, metrics):
            mean, std = curves[(metric, "mean")], curves[(metric, "std")].fillna(0)
            style = _style(i, n)
            ax.plot(mean.index, mean, label=label, markevery=max(1, len(mean) // 10), **style)
            ax.fill_between(mean.index, mean - std, mean + std, color=style["color"], alpha=0.15)
    for ax, metric in zip(axes, metrics):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Epoch")
        label = metric_label(metric)  # "clean", "PGD robust @8/255"
        ax.set_title(label.replace(" robust", " robust accuracy") if "robust" in label
                     else f"{label.capitalize()} accuracy")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("Accuracy (%)")
    return _finish(fig, "Accuracy per epoch (mean ± std over seeds)", hist)


def _study_metrics(df: pd.DataFrame, eps: float) -> tuple[pd.Series, pd.Series, str]:
    """(clean, robust, robust bar label): the final evaluation when every trial has one, else the
    last epoch's clean and PGD accuracy at `eps`."""
    final = ["final_clean_acc", "final_robust_acc"]
    if set(final) <= set(df.columns) and df[final].notna().all().all():
        attacks = set(df["final_attack"]) if "final_attack" in df.columns else set()
        name = ATTACK_NAMES.get(attacks.pop(), "final attack") if len(attacks) == 1 else "final attack"
        return df["final_clean_acc"], df["final_robust_acc"], f"robust ({name} @{eps:g}/255)"
    if "clean_acc" not in df.columns:
        raise ValueError("the trials reported no clean_acc")
    return df["clean_acc"], robust_at(df, eps), f"robust (PGD @{eps:g}/255, last epoch)"


def _bar_panel(ax: Any, trainable: pd.Series, sets: list[str],
               bars: list[tuple[str, pd.Series]]) -> set[int]:
    """Per trainable set, one bar per (label, accuracy of each trial) side by side: mean and std
    in %, the mean written above. Returns the numbers of seeds behind the bars."""
    width = 0.8 / len(bars)
    seeds = set()
    for j, (label, values) in enumerate(bars):
        stats = (values.astype(float) * 100).groupby(trainable).agg(["mean", "std", "count"]).reindex(sets)
        std = stats["std"].fillna(0)
        x = np.arange(len(sets)) + (j - (len(bars) - 1) / 2) * width
        ax.bar(x, stats["mean"], width, yerr=std, label=label, capsize=3, error_kw={"elinewidth": 1},
               **BAR_STYLES[j])
        for xi, mean, top in zip(x, stats["mean"], stats["mean"] + std):
            if pd.notna(mean):
                ax.annotate(f"{mean:.0f}", (xi, top), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize="x-small")
        seeds |= set(stats["count"].dropna().astype(int)) - {0}
    ax.set_xticks(np.arange(len(sets)), sets)
    return seeds


def study_figure(df: pd.DataFrame, statuses: Sequence[str] = DONE) -> Figure:
    """The study's comparison from `results.load`: one panel per init (and per other setting that
    varies), clean and robust accuracy (%) per trainable set as grouped bars, error bars = std over
    seeds.

    Only adversarially trained trials are drawn when there are any: a clean pre-training stage is
    the table's reference row, not a bar. Robust accuracy is at one radius (the trials' training
    radius), from the final evaluation when every trial has one.
    """
    df = df[df["status"].isin(statuses)] if "status" in df.columns else df
    if "train_attack" in df.columns and (df["train_attack"] != TrainAttack.NONE).any():
        df = df[df["train_attack"] != TrainAttack.NONE]
    if df.empty or "trainable" not in df.columns:
        raise ValueError(f"no trials with status {', '.join(statuses)} and a trainable set to plot")
    radii = study_radii(df)
    if len(radii) > 1:
        raise ValueError(f"trials at several robust radii ({', '.join(f'{r:g}' for r in radii)}/255): "
                         "select one, e.g. --where 'train_eps_255 == 8'")
    clean, robust, robust_name = _study_metrics(df, radii[0])
    frame, varying = settings_frame(df)
    # settings_frame names one key even when none varies: keep only keys with two values or more
    panel_keys = sorted((k for k in varying if k != "trainable" and frame[k].astype(str).nunique() > 1),
                        key=lambda k: k != "init")
    panels = list(frame.groupby(panel_keys, dropna=False, sort=True)) if panel_keys else [((), frame)]
    sets = sorted(set(frame["trainable"]), key=lambda t: ((STUDY_TRAINABLE + (t,)).index(t), t))
    fig = Figure(figsize=(max(4.5, 1.2 + 0.9 * len(sets) * len(panels)), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    seeds = set()
    for ax, (key, g) in zip(axes, panels):
        seeds |= _bar_panel(ax, g["trainable"], sets,
                            [("clean", clean[g.index]), (robust_name, robust[g.index])])
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title("\n".join(f"{k}: {format_value(v, k)}" for k, v in zip(panel_keys, key)),
                     fontsize="medium")
        ax.set_xlabel("Trainable parameters")
        ax.set_ylim(0, 100)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("Accuracy (%)")
    n = "-".join(map(str, sorted({min(seeds), max(seeds)}))) if seeds else "0"
    return _finish(fig, f"Accuracy per trainable set (mean ± std over {n} seeds)", df)


def save_figure(fig: Figure, path: str | Path) -> list[Path]:
    """Save as `<stem>.png` and `<stem>.pdf` (whatever suffix `path` has); returns both paths."""
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")  # long legends below the axes stay whole
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})  # same figure, same bytes
    return paths
