"""How big a sweep is before it runs: its trials and its training work, counted without building a grid.

The unit of work is the *image pass*: one forward and one backward pass of one training image. An
epoch costs training images x (1 + attack passes): PGD-k adds k passes for the `adv_fraction` of
each batch it attacks, FGSM one, `train_attack: none` nothing. Per-epoch evaluation and the final
attack are not counted. Dimensions sampled by `search:` count at their expected value, and a stage
under ASHA may stop trials early, so its work is an upper bound.

A projected wall time needs a rate: image passes per second of ONE trial (the `images_per_s` a trial
reports when it trains without an attack; a PGD-k trial's `images_per_s` x (k + 1)) and how many
trials run at once.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable

from bnsweep.core.choices import TrainAttack
from bnsweep.sweep.spec import Stage


def train_images(config: dict[str, Any]) -> int:
    """Training images per epoch (data.py imports torch: only validation, which has it already, calls this)."""
    from bnsweep.core.data import train_size

    return train_size(config["dataset"], config["data_dir"], config["n_train"])


def passes_per_image(config: dict[str, Any]) -> float:
    """Forward-backward passes per training image per epoch: 1, plus the attack's on attacked images."""
    attack = {TrainAttack.PGD: config["train_steps"], TrainAttack.FGSM: 1}.get(config["train_attack"], 0)
    return 1 + config["adv_fraction"] * attack


# Work per trial = epochs x training images x passes per image; each factor reads its own keys.
FACTORS: tuple[tuple[tuple[str, ...], Callable[[dict[str, Any]], float]], ...] = (
    (("epochs",), lambda c: c["epochs"]),
    (("dataset", "data_dir", "n_train"), train_images),
    (("train_attack", "train_steps", "adv_fraction"), passes_per_image),
)


def _weighted(stage: Stage, key: str) -> list[tuple[Any, float]]:
    """(value, weight) pairs: grid values count once each, sampled ones by their probability."""
    if key in stage.grid:
        return [(v, 1.0) for v in stage.grid[key]]
    if key in stage.search:
        (kind, args), = stage.search[key].items()
        if kind == "choice":
            return [(v, 1 / len(args)) for v in args]
        low, high = args
        return [((high - low) / math.log(high / low) if kind == "loguniform" else (low + high) / 2, 1.0)]
    return [(stage.base[key], 1.0)]


def stage_work(stage: Stage) -> float:
    """Image passes of all the stage's trials (expected, for sampled keys).

    The grid is a product of dimensions and each factor reads disjoint keys, so the sum over all cells
    is the product of each factor summed over its own keys' values, times the other dimensions' sizes.
    """
    total = float(stage.num_samples)
    for keys, factor in FACTORS:
        part = 0.0
        for combo in itertools.product(*(_weighted(stage, k) for k in keys)):
            part += factor(dict(zip(keys, (v for v, _ in combo)))) * math.prod(w for _, w in combo)
        total *= part
    counted = {k for keys, _ in FACTORS for k in keys}
    return total * math.prod(len(v) for k, v in stage.grid.items() if k not in counted)


def stage_seconds(stage: Stage, work: float, rate: float, slots: int) -> float:
    """Wall time of a stage at `rate` image passes/s per trial with `slots` trials at a time
    (fewer when the stage has fewer trials or a smaller max_concurrent); perfect packing assumed."""
    at_once = min(slots, stage.max_concurrent or slots, stage.num_trials)
    return work / (rate * at_once)


def si(value: float) -> str:
    """1234567 -> '1.23 M'."""
    for factor, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:.3g}"
