"""Is a difference between two settings more than seed noise? The difference of their mean accuracy
over seeds with a 95 % Welch t interval (unequal variances: `scipy.stats.ttest_ind(equal_var=False)`)
and the number of seeds on each side.

With three seeds a two-point gap can be noise: an interval that contains 0 says the seeds cannot tell
the two settings apart. The interval needs two seeds or more on each side; when neither side varies
over its seeds there is no spread to estimate it from, and it is left out ('no spread').

    bnsweep table results/demo --where "stage == 'adv'" \\
        --compare "trainable == 'bn' and init != 'random'" "trainable == 'fc' and init != 'random'"
    bnsweep table results/demo --where "stage == 'adv'" --reference "trainable == 'all' and init == 'random'"
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bnsweep.core.choices import DONE, TrainAttack
from bnsweep.errors import UsageError
from bnsweep.layout.labels import format_value, is_missing
from bnsweep.results.formats import markdown_table
from bnsweep.results.tables import (
    TABLE_METRICS,
    metric_columns,
    metric_label,
    settings_frame,
)
from bnsweep.results.where import mask

LEVEL = 0.95


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its Welch interval at `level` (NaN bounds: no interval)."""

    mean_a: float
    mean_b: float
    low: float
    high: float
    n_a: int
    n_b: int

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b


def welch(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Difference:
    """The difference of means of `a` and `b` with a Welch t interval (NaN values dropped)."""
    from scipy import stats

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    xa, xb = xa[~np.isnan(xa)], xb[~np.isnan(xb)]
    mean_a, mean_b = (float(x.mean()) if len(x) else np.nan for x in (xa, xb))
    low = high = np.nan
    if len(xa) >= 2 and len(xb) >= 2 and (xa.var() > 0 or xb.var() > 0):
        with warnings.catch_warnings():  # a side without spread: scipy warns of precision loss
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_ind(xa, xb, equal_var=False).confidence_interval(level)
        low, high = float(ci.low), float(ci.high)
    return Difference(mean_a, mean_b, low, high, len(xa), len(xb))


def _setting_of(frame: pd.DataFrame, varying: list[str], rows: pd.Series, what: str) -> tuple:
    """The one setting (values of the varying keys) that the trials in `rows` share."""
    chosen = frame.loc[rows, varying]
    if chosen.empty:
        raise UsageError(f"{what}: selects no trial (of those the table shows)")
    settings = chosen.astype(str).drop_duplicates()
    if len(settings) > 1:
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in r.items()) for _, r in settings.head(4).iterrows())
        raise UsageError(f"{what}: selects {len(settings)} settings ({shown}); allowed: an expression that "
                         "selects the trials of one setting (add keys, e.g. and init == 'random')")
    return tuple(chosen.iloc[0])


def _label(keys: list[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={format_value(v, k)}" for k, v in zip(keys, values) if not is_missing(v)) or "-"


def _pair_rows(frame: pd.DataFrame, values: pd.DataFrame, varying: list[str], a: tuple, b: tuple,
               level: float) -> list[dict[str, Any]]:
    """One row per metric: setting a against setting b."""
    def members(setting: tuple) -> pd.Series:
        return (frame[varying].astype(str) == [str(v) for v in setting]).all(axis=1)

    in_a, in_b = members(a), members(b)
    differ = [k for k, x, y in zip(varying, a, b) if str(x) != str(y)]
    shared = [k for k in varying if k not in differ]
    rows = []
    for metric in values.columns:
        d = welch(values.loc[in_a, metric], values.loc[in_b, metric], level)
        if np.isnan(d.mean_a) or np.isnan(d.mean_b):
            continue  # a metric one side never measured (another radius)
        rows.append({"a": _label(differ, [a[varying.index(k)] for k in differ]),
                     "b": _label(differ, [b[varying.index(k)] for k in differ]),
                     "within": _label(shared, [a[varying.index(k)] for k in shared]),
                     "metric": metric, "mean_a": d.mean_a, "mean_b": d.mean_b, "difference": d.difference,
                     "low": d.low, "high": d.high, "n_a": d.n_a, "n_b": d.n_b})
    return rows


def _prepared(df: pd.DataFrame, statuses: Sequence[str], radii: Sequence[float] | None):
    df = df[df["status"].isin(statuses)] if "status" in df.columns else df
    frame, varying = settings_frame(df)
    return df, frame, varying, metric_columns(df, TABLE_METRICS, radii)


def compare(df: pd.DataFrame, a: str, b: str, statuses: Sequence[str] = DONE,
            radii: Sequence[float] | None = None, level: float = LEVEL) -> pd.DataFrame:
    """The setting whose trials `a` selects (a `--where` expression) against the one `b` selects:
    per metric of the comparison table, both means, their difference and its interval, and n."""
    df, frame, varying, values = _prepared(df, statuses, radii)
    sa = _setting_of(frame, varying, mask(df, a), f"--compare {a!r}")
    sb = _setting_of(frame, varying, mask(df, b), f"--compare {b!r}")
    if [str(v) for v in sa] == [str(v) for v in sb]:
        raise UsageError(f"--compare: {a!r} and {b!r} select the same setting; allowed: two different settings")
    return _frame(_pair_rows(frame, values, varying, sa, sb, level), level)


def against_reference(df: pd.DataFrame, reference: str, statuses: Sequence[str] = DONE,
                      radii: Sequence[float] | None = None, level: float = LEVEL) -> pd.DataFrame:
    """Every other setting against the one `reference` selects (as `compare`)."""
    df, frame, varying, values = _prepared(df, statuses, radii)
    ref = _setting_of(frame, varying, mask(df, reference), f"--reference {reference!r}")
    others = frame[varying].astype(str).drop_duplicates()
    rows = []
    for i in others.index:
        setting = tuple(frame.loc[i, varying])
        if [str(v) for v in setting] != [str(v) for v in ref]:
            rows += _pair_rows(frame, values, varying, setting, ref, level)
    return _frame(rows, level)


def study_comparisons(df: pd.DataFrame, statuses: Sequence[str] = DONE,
                      level: float = LEVEL) -> pd.DataFrame:
    """The study's own questions, where the trials hold them (adversarially trained ones only):
    BN-only against classifier-only training from pre-trained weights, and BN-only training from
    pre-trained against from random weights; each within every setting of the other keys."""
    if not {"trainable", "init"} <= set(df.columns):
        return _frame([], level)
    if "train_attack" in df.columns:
        df = df[df["train_attack"] != TrainAttack.NONE]
    df, frame, varying, values = _prepared(df, statuses, None)
    if df.empty or not {"trainable", "init"} & set(varying):
        return _frame([], level)
    settings = {tuple(str(v) for v in frame.loc[i, varying]): tuple(frame.loc[i, varying])
                for i in frame[varying].astype(str).drop_duplicates().index}

    def partner(setting: tuple, **change: Any) -> tuple | None:
        key = [str(v) for v in setting]
        for k, v in change.items():
            if k not in varying:
                return None
            key[varying.index(k)] = v
        return settings.get(tuple(key))

    def value(setting: tuple, key: str) -> str | None:
        return str(setting[varying.index(key)]) if key in varying else str(frame[key].iloc[0])

    rows = []
    for setting in settings.values():
        if value(setting, "trainable") != "bn" or value(setting, "init") == "random":
            continue
        for other in (partner(setting, trainable="fc"), partner(setting, init="random")):
            if other is not None:
                rows += _pair_rows(frame, values, varying, setting, other, level)
    return _frame(rows, level)


def _frame(rows: list[dict[str, Any]], level: float) -> pd.DataFrame:
    columns = ["a", "b", "within", "metric", "mean_a", "mean_b", "difference", "low", "high", "n_a", "n_b"]
    out = pd.DataFrame(rows, columns=columns)
    out.attrs["level"] = level
    return out


def _points(x: float, sign: bool = False) -> str:
    return "-" if np.isnan(x) else f"{100 * x:{'+' if sign else ''}.1f}"


def _interval(low: float, high: float, n_a: int, n_b: int) -> str:
    if np.isnan(low):
        return "no spread" if min(n_a, n_b) >= 2 else "-"
    return f"{_points(low, True)} to {_points(high, True)}"


def inline(row: pd.Series, level: float = LEVEL) -> str:
    """One comparison as a phrase: `+1.9 points (95 % interval -0.8 to +4.6; 3 vs 3 seeds)`."""
    return (f"{_points(row['difference'], True)} points ({100 * level:g} % interval "
            f"{_interval(row['low'], row['high'], row['n_a'], row['n_b'])}; {row['n_a']} vs {row['n_b']} seeds)")


def to_markdown(comparisons: pd.DataFrame) -> str:
    """A Markdown table of `compare`'s, `against_reference`'s or `study_comparisons`'s output:
    accuracies and differences in percentage points."""
    level = comparisons.attrs.get("level", LEVEL)
    cells = pd.DataFrame({
        "setting": comparisons["a"], "against": comparisons["b"], "where": comparisons["within"],
        "metric": comparisons["metric"].map(metric_label),
        "mean (%)": [f"{_points(a)} vs {_points(b)}" for a, b in zip(comparisons["mean_a"], comparisons["mean_b"])],
        "difference (points)": comparisons["difference"].map(lambda d: _points(d, sign=True)),
        f"{100 * level:g} % interval (Welch)": [
            _interval(*v)
            for v in zip(comparisons["low"], comparisons["high"], comparisons["n_a"], comparisons["n_b"])],
        "seeds": [f"{na} vs {nb}" for na, nb in zip(comparisons["n_a"], comparisons["n_b"])],
    })
    if (cells["where"] == "-").all():
        cells = cells.drop(columns="where")
    return markdown_table(cells)
