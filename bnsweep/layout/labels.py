"""How settings and metrics are labelled for a reader, the same in tables, figures, `status` and
TensorBoard: a setting value as a short label, `init` as a reader wants it, the robust-accuracy
metric of one radius."""

from __future__ import annotations

import math
import re
from pathlib import PurePath
from typing import Any

import pandas as pd

from bnsweep.core.config import STAGE_INIT_PREFIX

# robust_acc_eps8: robust accuracy at radius 8/255
EPS_COLUMN = re.compile(r"^robust_acc_eps(\d+(?:\.\d+)?(?:e-?\d+)?)$")


def is_missing(value: Any) -> bool:
    """None, NaN or NA (a list or tuple is a value, never missing)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def init_label(init: str) -> str:
    """`init` as a reader wants it: `random`, `pre-trained (stage pretrain)` for
    `from_stage:pretrain`, `pre-trained (run3/checkpoint.pt)` for a checkpoint path."""
    if init == "random":
        return init
    if init.startswith(STAGE_INIT_PREFIX):
        return f"pre-trained (stage {init[len(STAGE_INIT_PREFIX):]})"
    return f"pre-trained ({'/'.join(PurePath(init).parts[-2:])})"


def format_value(value: Any, key: str | None = None) -> str:
    """A setting value as a short label (tuples joined by commas, missing as '-', `init` by
    `init_label`)."""
    if isinstance(value, tuple):
        return ",".join(format_value(v) for v in value)
    if is_missing(value):
        return "-"
    if key == "init" and isinstance(value, str):
        return init_label(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def duration(seconds: float | None, exact: bool = False) -> str:
    """A duration for a reader, '-' when unknown: to the precision that matters for an estimate or an
    age ('3 d 4 h', '2 h 5 min', '12 min', '2 min 5 s', '40 s'), or `exact`, to the second, as
    measured wall times are quoted ('2 h 15 min 5 s', '4 min 16 s', '47 s')."""
    if seconds is None or seconds != seconds:
        return "-"
    seconds = max(0, round(seconds))
    if exact:
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return " ".join([f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(hours or minutes) + [f"{secs} s"])
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes >= 10 else (f"{minutes} min {secs} s" if minutes else f"{secs} s")
