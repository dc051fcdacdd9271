"""Figures of a sweep: robust accuracy against epsilon, and accuracy per epoch, per setting.

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

from bnsweep.results.columns import eps_columns
from bnsweep.results.tables import format_value, settings_frame

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
    for key in [k for k in ("stage", "experiment") if k in varying]:  # pipeline order, not A-Z
        order = {v: i for i, v in enumerate(dict.fromkeys(frame[key]))}
        groups.sort(key=lambda kg: order[kg[1][key].iloc[0]])
    for i, (key, g) in enumerate(groups):
        key = key if isinstance(key, tuple) and len(key) == len(varying) else (key,)
        n = g["trial_id"].nunique() if "trial_id" in g.columns else len(g)
        label = ", ".join(f"{k}={format_value(v)}" for k, v in zip(varying, key)) + f" (n={n})"
        yield i, len(groups), label, g


def _finish(fig: Figure, title: str) -> Figure:
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(2, len(labels)),
               fontsize="small", frameon=False)
    fig.suptitle(title)
    return fig


def robustness_curves(df: pd.DataFrame, statuses: Sequence[str] = ("terminated",)) -> Figure:
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
    return _finish(fig, "Robust accuracy against ε (mean ± std over seeds)")


def training_curves(hist: pd.DataFrame, statuses: Sequence[str] = ("terminated",),
                    metrics: Sequence[str] = ("clean_acc", "robust_acc")) -> Figure:
    """Accuracy (%) per epoch, one panel per metric, one line per setting (mean over seeds,
    shaded ± std), from `results.history`."""
    metrics = [m for m in metrics if m in hist.columns]
    if not metrics:
        raise ValueError("history has none of the accuracy columns clean_acc, robust_acc")
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
        ax.set_title(metric.replace("_acc", " accuracy").replace("_", " ").capitalize())
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("Accuracy (%)")
    return _finish(fig, "Accuracy per epoch (mean ± std over seeds)")


def save_figure(fig: Figure, path: str | Path) -> list[Path]:
    """Save as `<stem>.png` and `<stem>.pdf` (whatever suffix `path` has); returns both paths."""
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")  # long legends below the axes stay whole
    fig.savefig(paths[1], bbox_inches="tight")
    return paths
