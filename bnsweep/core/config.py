"""TrialConfig: every knob of one trial as a frozen dataclass of plain values, validated up front.

A trial's config is the unit Ray Tune varies, TensorBoard's hparams view shows and results tables
group by, so it holds only primitives (plus one tuple of radii); a key with fixed choices holds the
value of its enum in `choices`. Every invalid value is refused with one line naming the key, the
value and what is allowed, before any data is loaded or Ray starts.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from bnsweep.core.choices import (
    MAX_PARAMS,
    MAX_WRN_DEPTH,
    MAX_WRN_WIDEN,
    MODEL_NAMES,
    AttackBNMode,
    AutoAttackVersion,
    BNInit,
    BNStats,
    Choice,
    DatasetName,
    FinalAttack,
    Precision,
    Schedule,
    TrainAttack,
    check_model_name,
)
from bnsweep.errors import ConfigError, DataError

STAGE_INIT_PREFIX = "from_stage:"


@dataclass(frozen=True)
class TrialConfig:
    """One trial. Radii and step sizes are in units of 1/255 of the [0, 1] pixel range."""

    # data
    dataset: str = DatasetName.PLANTED.value
    data_dir: str = "data"  # cifar: their folder; folder: the image tree or archive (made absolute)
    download: bool = False
    n_train: int = 0  # 0: the whole split (planted: its default size)
    n_test: int = 0
    data_seed: int = 0
    augment: bool = True  # flip + crop, only for natural images (cifar, folder)
    # model and starting point
    model: str = "resnet20"
    width: float = 1.0
    init: str = "random"  # "random", a checkpoint path, or "from_stage:NAME" (sweeps)
    init_checkpoint: str = ""  # the checkpoint a "from_stage:NAME" trial starts from (set by the sweep)
    bn_init: str = BNInit.ONES.value
    # what trains
    trainable: str = "all"  # an expression over the model's groups, e.g. bn, bn+fc, bn@stage3, all-stem
    bn_stats: str = BNStats.UPDATE.value
    # adversarial training
    train_attack: str = TrainAttack.PGD.value
    train_eps_255: float = 8.0
    train_steps: int = 7
    train_step_255: float = 2.0
    attack_bn_mode: str = AttackBNMode.EVAL.value
    adv_fraction: float = 1.0
    # optimiser
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = Schedule.COSINE.value
    # evaluation
    eval_eps_255: tuple[float, ...] = (8.0,)
    eval_steps: int = 10
    eval_step_255: float = 0.0  # 0: 2.5 * eps / eval_steps (Madry et al.)
    eval_restarts: int = 1
    eval_n: int = 1000
    eval_every: int = 1  # evaluate every N epochs, and always after the last
    final_attack: str = FinalAttack.PGD.value
    final_steps: int = 50
    final_restarts: int = 1
    final_autoattack: str = AutoAttackVersion.NONE.value  # also AutoAttack, on what final_attack left robust
    final_autoattack_n: int = 0  # its images: the first N evaluation images (0: all eval_n)
    # run
    seed: int = 0
    device: str = "auto"
    precision: str = Precision.FP32.value
    compile: bool | str = False  # true, false or "auto" (core/hardware.py)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) for JSON, YAML and Ray's param_space."""
        d = dataclasses.asdict(self)
        d["eval_eps_255"] = list(self.eval_eps_255)
        return d

    @property
    def robust_eps_255(self) -> float:
        """The radius behind the headline `robust_acc` metric."""
        return self.train_eps_255 if self.train_attack != TrainAttack.NONE else self.eval_eps_255[0]

    @property
    def stage_init(self) -> str | None:
        """The stage name of an `init: from_stage:NAME` trial, else None."""
        return self.init[len(STAGE_INIT_PREFIX):] if self.init.startswith(STAGE_INIT_PREFIX) else None


KEYS = tuple(f.name for f in fields(TrialConfig))
# "int", "float", "str", "bool" or the radii tuple
TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(TrialConfig)}
CHOICES: dict[str, type[Choice]] = {
    "dataset": DatasetName,
    "bn_stats": BNStats,
    "bn_init": BNInit,
    "train_attack": TrainAttack,
    "attack_bn_mode": AttackBNMode,
    "schedule": Schedule,
    "final_attack": FinalAttack,
    "final_autoattack": AutoAttackVersion,
    "precision": Precision,
}
MAX_SEED = 2**32 - 1  # numpy and scikit-learn seeds (data_seed) stop here; torch's go further
MAX_COUNT = 2**31 - 1
# (low, high, inclusive-low), for every number; data set sizes are checked against the data set too
_RANGES = {
    "n_train": (0, MAX_COUNT, True),
    "n_test": (0, MAX_COUNT, True),
    "data_seed": (0, MAX_SEED, True),
    "seed": (0, MAX_SEED, True),
    "width": (0, 64, False),
    "train_eps_255": (0, 255, True),
    "train_steps": (1, 1000, True),
    "train_step_255": (0, 255, False),
    "adv_fraction": (0, 1, True),
    "epochs": (1, 100_000, True),
    "batch_size": (1, 1_000_000, True),
    "lr": (0, 10_000, False),
    "momentum": (0, 1, True),
    "weight_decay": (0, 1, True),
    "eval_steps": (1, 10_000, True),
    "eval_step_255": (0, 255, True),
    "eval_restarts": (1, 1000, True),
    "eval_n": (1, MAX_COUNT, True),
    "eval_every": (1, 100_000, True),
    "final_steps": (1, 10_000, True),
    "final_restarts": (1, 1000, True),
    "final_autoattack_n": (0, MAX_COUNT, True),
}


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check a value's type; ints are accepted where floats are expected, nothing else is converted."""
    kind = TYPES[key]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false", where)
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "an integer", where)
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(key, value, "a finite number", where)
            return float(value)
        raise ConfigError(key, value, "a number", where)
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string", where)
    if kind == "bool | str":  # compile: true, false or auto
        if isinstance(value, bool) or value == "auto":
            return value
        raise ConfigError(key, value, "true, false or auto", where)
    # eval_eps_255: a number or a non-empty list of numbers
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise ConfigError(key, value, "a non-empty list of numbers in [0, 255]", where)
    if not all(0 <= v <= 255 for v in items):
        raise ConfigError(key, value, "a non-empty list of numbers in [0, 255]", where)
    return tuple(float(v) for v in items)


def _check_range(key: str, value: float, where: str) -> None:
    low, high, inclusive = _RANGES[key]
    if not ((value >= low if inclusive else value > low) and value <= high):
        kind = "an integer" if TYPES[key] == "int" else "a number"
        raise ConfigError(key, value, f"{kind} {'>=' if inclusive else '>'} {low} and <= {high}", where)


def _check_model(value: str, width: float, where: str) -> None:
    """A known model name, of at most MAX_PARAMS parameters at this width (before anything builds it)."""
    from bnsweep.core.models import check_size  # builds the model on the meta device: torch

    try:
        check_model_name(value)
        check_size(value, width)
    except ValueError as err:
        raise ConfigError("model", value, str(err).split("allowed: ", 1)[-1], where) from None


def _check_trainable(cfg: TrialConfig, where: str) -> None:
    problem = _trainable_problem(cfg.model, cfg.width, cfg.trainable, cfg.train_attack != TrainAttack.NONE)
    if problem:
        raise ConfigError("trainable", cfg.trainable, problem, where)


@functools.lru_cache(maxsize=256)
def _trainable_problem(model: str, width: float, expression: str, attacked: bool) -> str | None:
    """What is wrong with `expression` for this model (resolved on the meta device), or None."""
    from bnsweep.core.models import skeleton
    from bnsweep.core.trainable import SelectionError, group_list, trainable_names

    net = skeleton(model, width=width)
    allowed = (f"an expression over {model}'s groups ({group_list(net)}) joined by + and -, "
               "e.g. bn+fc or all-stem (bnsweep layers shows them)")
    try:
        chosen = trainable_names(net, expression)
    except SelectionError as err:
        return f"{allowed}; here {err}"
    if not chosen and attacked and expression != "none":
        return f"{allowed}; here it selects no parameter while train_attack is not none (write none to train nothing)"
    return None


def _check_init(cfg: TrialConfig, where: str, check_paths: bool) -> None:
    if cfg.init == "random" or cfg.stage_init is not None:
        if cfg.stage_init == "":
            raise ConfigError("init", cfg.init, "random, a checkpoint path, or {from_stage: NAME}", where)
        return
    if check_paths and not os.path.exists(cfg.init):
        raise ConfigError("init", cfg.init, "random, {from_stage: NAME}, or an existing checkpoint path", where)


# The keys each cross-key check of make_config reads. A sweep grid too large to validate cell by cell
# is validated for every combination of each group's values (sweep/spec.py), so a check that reads
# several keys must list them here.
KEY_GROUPS = (
    ("train_attack", "train_eps_255", "adv_fraction"),  # an attack needs a radius
    ("trainable", "model", "width", "train_attack"),  # _check_trainable
    ("dataset", "data_dir", "download", "n_train", "n_test"),  # _check_data
    ("init", "model", "width", "dataset", "data_dir"),  # _check_checkpoint
    ("final_attack", "final_autoattack"),  # one AutoAttack at most
)


def make_config(values: Mapping[str, Any] | None = None, *, where: str = "",
                check_paths: bool = True, base: TrialConfig | None = None) -> TrialConfig:
    """Validate `values` (missing keys take defaults, or those of `base`) into a TrialConfig.

    Raises ConfigError naming the first bad key. `where` (e.g. a file and stage) prefixes the message.
    Paths (`init`, `data_dir`) become absolute because Ray trials run in another working directory.
    """
    values = dict(values or {})
    for key in values:
        if key not in TYPES:
            raise ConfigError("key", key, "one of " + ", ".join(KEYS), where)
    if isinstance(values.get("init"), Mapping):
        values["init"] = _stage_init_string(values["init"], where)
    clean = {key: _coerce(key, value, where) for key, value in values.items()}
    for key, value in clean.items():
        if key in CHOICES and value not in CHOICES[key].values():
            raise ConfigError(key, value, CHOICES[key].allowed(), where)
        if key in _RANGES:
            _check_range(key, value, where)
    cfg = dataclasses.replace(base or TrialConfig(), **clean)
    if "model" in clean or "width" in clean or base is None:
        _check_model(cfg.model, cfg.width, where)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.device):
        raise ConfigError("device", cfg.device, "auto, cpu, cuda, cuda:N, mps", where)
    if cfg.train_attack != TrainAttack.NONE and cfg.train_eps_255 == 0 and cfg.adv_fraction > 0:
        raise ConfigError("train_eps_255", cfg.train_eps_255, "a number > 0 when train_attack is not none", where)
    if cfg.final_autoattack != AutoAttackVersion.NONE and cfg.final_attack == FinalAttack.AUTOATTACK:
        raise ConfigError("final_autoattack", cfg.final_autoattack,
                          "none when final_attack is autoattack (that is standard AutoAttack already)", where)
    _check_trainable(cfg, where)
    _check_init(cfg, where, check_paths)
    paths: dict[str, Any] = {"data_dir": os.path.abspath(os.path.expanduser(cfg.data_dir))}
    if cfg.init not in ("random",) and cfg.stage_init is None:
        paths["init"] = os.path.abspath(os.path.expanduser(cfg.init))
    cfg = dataclasses.replace(cfg, **paths)
    _check_data(cfg, where, check_paths)
    if check_paths and "init" in paths:
        _check_checkpoint(cfg, where)
    return cfg


def _check_data(cfg: TrialConfig, where: str, check_paths: bool) -> None:
    """Subsets no larger than the data set; with `check_paths`, its files where trials will read them."""
    from bnsweep.core import data

    try:
        sizes = data.sizes(cfg.dataset, cfg.data_dir)
    except DataError as err:  # a folder data set that is missing or laid out wrong
        raise DataError(f"{where}: {err}" if where else str(err)) from None
    for key, most in (("n_train", sizes.train), ("n_test", sizes.test)):
        if getattr(cfg, key) > most:
            of = f"the folder data set {cfg.data_dir}" if cfg.dataset == DatasetName.FOLDER else cfg.dataset
            raise ConfigError(key, getattr(cfg, key), f"0 (the whole split) or at most {most} for {of}", where)
    missing = data.missing_files(cfg.dataset, cfg.data_dir) if check_paths and not cfg.download else None
    if missing:
        raise ConfigError("data_dir", cfg.data_dir, f"a directory holding {cfg.dataset} ({missing})", where)


def _check_checkpoint(cfg: TrialConfig, where: str) -> None:
    """A checkpoint `init` must load safely and fit the model (checked once per file version)."""
    from bnsweep.core.checkpoints import checkpoint_file

    try:
        stat_ = os.stat(checkpoint_file(cfg.init))
        version = (stat_.st_mtime_ns, stat_.st_size)
    except OSError:
        version = None  # loading it names the problem
    try:
        _checkpoint_fits(cfg.init, version, cfg.model, cfg.width, cfg.dataset, cfg.data_dir)
    except ConfigError as err:
        raise ConfigError(err.key, err.value, err.allowed, where) from None


@functools.lru_cache(maxsize=64)
def _checkpoint_fits(path: str, version: Any, model: str, width: float, dataset: str, data_dir: str) -> None:
    """check_fits, once per (file version, architecture): grids validate a checkpoint per cell."""
    from bnsweep.core import checkpoints, data

    checkpoints.check_fits(path, model, width, data.sizes(dataset, data_dir).num_classes)


def _stage_init_string(value: Mapping[str, Any], where: str) -> str:
    if set(value) != {"from_stage"} or not isinstance(value["from_stage"], str) or not value["from_stage"]:
        raise ConfigError("init", dict(value), "random, a checkpoint path, or {from_stage: NAME}", where)
    return STAGE_INIT_PREFIX + value["from_stage"]


_ALLOWED_TEXT = {
    "trainable": "an expression of groups (all, none, bn, conv, fc, stem, stageN, head, KIND@PLACE, "
                 "glob:PATTERN) joined by + and -, e.g. bn, bn+fc, bn@stage3+fc, all-stem",
    "model": ", ".join(MODEL_NAMES) + f", wrn-D-W (D = 6n+4 <= {MAX_WRN_DEPTH}, W <= {MAX_WRN_WIDEN}); "
             f"at most 10^{len(str(MAX_PARAMS)) - 1} parameters at the trial's width",
    "device": "auto, cpu, cuda, cuda:N, mps",
    "init": "random, a checkpoint path, {from_stage: NAME}",
    "eval_eps_255": "a non-empty list of numbers in [0, 255]",
}


def allowed_values(key: str) -> str:
    """What a trial key accepts, in words (the docs' trial-key reference is generated from this)."""
    if key in _ALLOWED_TEXT:
        return _ALLOWED_TEXT[key]
    if key in CHOICES:
        return CHOICES[key].allowed()
    if key in _RANGES:
        low, high, inclusive = _RANGES[key]
        return f"{'>=' if inclusive else '>'} {low}" + (f", <= {high}" if high is not None else "")
    return {"bool": "true, false", "bool | str": "true, false, auto", "str": "text", "int": "an integer",
            "float": "a number"}[TYPES[key]]
