"""Which columns of a results frame play which role: trial keys, robust-accuracy radii, settings.

Trial keys come from `TrialConfig` alone (plus the sweep's `stage`), so a key added to the config
is a trial key here too.
"""

from __future__ import annotations

import re

import pandas as pd

from bnsweep.core.config import KEYS

TRIAL_KEYS = ("stage", *KEYS)
# A reported metric whose name is also a trial key (e.g. `lr`: base vs current) gets this suffix.
COLLISION_SUFFIX = "_reported"
DEFAULT_METRIC, DEFAULT_MODE = "robust_acc", "max"  # a stage's objective when its sweep file is missing
EPS_COLUMN = re.compile(r"^robust_acc_eps(\d+(?:\.\d+)?(?:e-?\d+)?)$")


def trial_keys(df: pd.DataFrame) -> list[str]:
    """The trial-key columns of a frame from `load`/`history` (or, for a frame read back from a
    file, which has lost its attrs, the trial keys that it holds)."""
    keys = df.attrs.get("trial_keys") or TRIAL_KEYS
    return [k for k in keys if k in df.columns]


def eps_columns(df: pd.DataFrame) -> dict[float, str]:
    """{epsilon in 1/255: column} for the `robust_acc_eps{E}` columns, by increasing epsilon."""
    found = {float(m.group(1)): c for c in df.columns if (m := EPS_COLUMN.match(str(c)))}
    return dict(sorted(found.items()))
