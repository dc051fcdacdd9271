"""Which columns of a results frame play which role: trial keys, robust-accuracy radii, settings.

Trial keys come from `TrialConfig` alone (plus the sweep's `stage`), so a key added to the config
is a trial key here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bnsweep.core.choices import AutoAttackVersion, FinalAttack, TrainAttack
from bnsweep.core.config import KEYS, TrialConfig
from bnsweep.layout.labels import EPS_COLUMN, is_missing

TRIAL_KEYS = ("stage", *KEYS)
# A reported metric whose name is also a trial key (e.g. `lr`: base vs current) gets this suffix.
COLLISION_SUFFIX = "_reported"
DEFAULT_METRIC, DEFAULT_MODE = "robust_acc", "max"  # a stage's objective when its sweep file is missing
# Made-up results (`bnsweep.testing` reports the metric `synthetic` in every row) say so in every title.
SYNTHETIC = "synthetic"
SYNTHETIC_TITLE = "SYNTHETIC: made-up numbers (bnsweep.testing), not measured"

# Keys that mean nothing for some trials: {deciding key: {its value: keys unused then}}. A clean
# trial never ran PGD, FGSM takes one step, AutoAttack has its own steps and restarts, and no
# AutoAttack column attacks no images.
NOT_APPLICABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "train_attack": {TrainAttack.NONE: ("train_eps_255", "train_steps", "train_step_255", "attack_bn_mode",
                                        "adv_fraction"),
                     TrainAttack.FGSM: ("train_steps",)},
    "final_attack": {FinalAttack.NONE: ("final_steps", "final_restarts"),
                     FinalAttack.AUTOATTACK: ("final_steps", "final_restarts")},
    "final_autoattack": {AutoAttackVersion.NONE: ("final_autoattack_n",)},
}


def trial_keys(df: pd.DataFrame) -> list[str]:
    """The trial-key columns of a frame from `load`/`history` (or, for a frame read back from a
    file, which has lost its attrs, the trial keys that it holds)."""
    keys = df.attrs.get("trial_keys") or TRIAL_KEYS
    return [k for k in keys if k in df.columns]


def eps_columns(df: pd.DataFrame) -> dict[float, str]:
    """{epsilon in 1/255: column} for the `robust_acc_eps{E}` columns, by increasing epsilon."""
    found = {float(m.group(1)): c for c in df.columns if (m := EPS_COLUMN.match(str(c)))}
    return dict(sorted(found.items()))


def synthetic(df: pd.DataFrame) -> bool:
    """Whether the trials' numbers are made up (reported `synthetic` by `bnsweep.testing`)."""
    return SYNTHETIC in df.columns and bool(df[SYNTHETIC].astype("boolean").fillna(False).any())


def not_applicable(df: pd.DataFrame) -> dict[str, pd.Series]:
    """{key: rows for which the key meant nothing} (see NOT_APPLICABLE), for keys in `df`."""
    masks: dict[str, pd.Series] = {}
    for gate, unused in NOT_APPLICABLE.items():
        if gate not in df.columns:
            continue
        for value, keys in unused.items():
            for key in (k for k in keys if k in df.columns):
                rows = df[gate] == value
                masks[key] = masks[key] | rows if key in masks else rows
    return masks


def gate_of(key: str) -> str | None:
    """The key that decides whether `key` applies (train_attack for train_eps_255), if any."""
    return next((g for g, unused in NOT_APPLICABLE.items()
                 if any(key in keys for keys in unused.values())), None)


def robust_radius(df: pd.DataFrame) -> pd.Series:
    """Per trial, the radius (1/255) of its `robust_acc` and `final_robust_acc`: the training
    radius of an adversarial trial, the first evaluation radius of a clean one
    (`TrialConfig.robust_eps_255`; a key missing from the frame takes its default)."""
    names = [k for k in ("train_attack", "train_eps_255", "eval_eps_255") if k in df.columns]
    if df.empty or not names:
        return pd.Series(TrialConfig().robust_eps_255, index=df.index, dtype=float)
    # One TrialConfig per distinct combination: a history frame repeats them on every epoch.
    codes = df[names].astype(str).groupby(names, sort=False, dropna=False).ngroup()
    radius = {code: _radius(dict(zip(names, df.loc[i, names])))
              for i, code in codes.drop_duplicates().items()}
    return codes.map(radius).astype(float)


def _radius(keys: dict[str, Any]) -> float:
    given = {k: v for k, v in keys.items() if not is_missing(v)}
    if "eval_eps_255" in given and not isinstance(given["eval_eps_255"], (list, tuple)):
        given["eval_eps_255"] = (given["eval_eps_255"],)
    return float(TrialConfig(**given).robust_eps_255)


def robust_at(df: pd.DataFrame, eps_255: float, radius: pd.Series | None = None) -> pd.Series:
    """Per trial, PGD robust accuracy at `eps_255` (the last epoch's): its `robust_acc_eps{E}`
    column, else `robust_acc` where that was measured at this radius, else NaN. `radius`:
    `robust_radius(df)`, if already known."""
    column = eps_columns(df).get(float(eps_255))
    values = df[column].astype(float) if column else pd.Series(np.nan, index=df.index)
    if "robust_acc" in df.columns:
        radius = robust_radius(df) if radius is None else radius
        values = values.fillna(df["robust_acc"].astype(float).where(radius == eps_255))
    return values


def study_radii(df: pd.DataFrame, radius: pd.Series | None = None) -> list[float]:
    """The radii at which a study reports robust accuracy: the robust radius of every adversarially
    trained trial (of every trial when none trained adversarially), in increasing order.
    `radius`: `robust_radius(df)`, if already known."""
    if df.empty:
        return []
    radius = robust_radius(df) if radius is None else radius
    adversarial = df["train_attack"] != TrainAttack.NONE if "train_attack" in df.columns else radius.notna()
    return sorted(set(radius[adversarial] if adversarial.any() else radius))
