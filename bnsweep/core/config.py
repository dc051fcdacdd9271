"""TrialConfig: every knob of one trial as a frozen dataclass of plain values, validated up front.

A trial's config is the unit Ray Tune varies, TensorBoard's hparams view shows and results tables
group by, so it holds only primitives (plus one tuple of radii). Every invalid value is refused with
one line naming the key, the value and what is allowed, before any data is loaded or Ray starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

import yaml

from bnsweep.errors import ConfigError

DATASETS = ("cifar10", "cifar100", "folder", "planted", "digits")
TRAINABLE = ("all", "bn", "bn+fc", "fc", "none")
BN_STATS = ("update", "frozen")
BN_INIT = ("ones", "uniform")
TRAIN_ATTACKS = ("pgd", "fgsm", "none")
ATTACK_BN_MODES = ("eval", "train")
SCHEDULES = ("cosine", "step", "constant")
FINAL_ATTACKS = ("pgd", "autoattack", "none")
PRECISIONS = ("fp32", "bf16")
STAGE_INIT_PREFIX = "from_stage:"


@dataclass(frozen=True)
class TrialConfig:
    """One trial. Radii and step sizes are in units of 1/255 of the [0, 1] pixel range."""

    # data
    dataset: str = "planted"
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
    bn_init: str = "ones"
    # what trains
    trainable: str = "all"
    bn_stats: str = "update"
    # adversarial training
    train_attack: str = "pgd"
    train_eps_255: float = 8.0
    train_steps: int = 7
    train_step_255: float = 2.0
    attack_bn_mode: str = "eval"
    adv_fraction: float = 1.0
    # optimiser
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    # evaluation
    eval_eps_255: tuple[float, ...] = (8.0,)
    eval_steps: int = 10
    eval_step_255: float = 0.0  # 0: 2.5 * eps / eval_steps (Madry et al.)
    eval_restarts: int = 1
    eval_n: int = 1000
    final_attack: str = "pgd"
    final_steps: int = 50
    final_restarts: int = 1
    # run
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) for JSON, YAML and Ray's param_space."""
        d = dataclasses.asdict(self)
        d["eval_eps_255"] = list(self.eval_eps_255)
        return d

    @property
    def robust_eps_255(self) -> float:
        """The radius behind the headline `robust_acc` metric."""
        return self.train_eps_255 if self.train_attack != "none" else self.eval_eps_255[0]

    @property
    def stage_init(self) -> str | None:
        """The stage name of an `init: from_stage:NAME` trial, else None."""
        return self.init[len(STAGE_INIT_PREFIX):] if self.init.startswith(STAGE_INIT_PREFIX) else None


KEYS = tuple(f.name for f in fields(TrialConfig))
_TYPES = {f.name: f.type for f in fields(TrialConfig)}
_CHOICES = {
    "dataset": DATASETS,
    "trainable": TRAINABLE,
    "bn_stats": BN_STATS,
    "bn_init": BN_INIT,
    "train_attack": TRAIN_ATTACKS,
    "attack_bn_mode": ATTACK_BN_MODES,
    "schedule": SCHEDULES,
    "final_attack": FINAL_ATTACKS,
    "precision": PRECISIONS,
}
# (low, high, inclusive-low); None: unbounded
_RANGES = {
    "n_train": (0, None, True),
    "n_test": (0, None, True),
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
    "eval_n": (1, None, True),
    "final_steps": (1, 10_000, True),
    "final_restarts": (1, 1000, True),
}


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check a value's type; ints are accepted where floats are expected, nothing else is converted."""
    kind = _TYPES[key]
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
    # eval_eps_255: a number or a non-empty list of numbers
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise ConfigError(key, value, "a non-empty list of numbers in [0, 255]", where)
    if not all(0 <= v <= 255 for v in items):
        raise ConfigError(key, value, "a non-empty list of numbers in [0, 255]", where)
    return tuple(float(v) for v in items)


def _check_range(key: str, value: float, where: str) -> None:
    low, high, inclusive = _RANGES[key]
    ok = (value >= low if inclusive else value > low) and (high is None or value <= high)
    if not ok:
        lo = f"{'>=' if inclusive else '>'} {low}"
        raise ConfigError(key, value, f"a number {lo}" + (f" and <= {high}" if high is not None else ""), where)


def _check_model(value: str, where: str) -> None:
    from bnsweep.core.models import check_model_name

    try:
        check_model_name(value)
    except ValueError as err:
        raise ConfigError("model", value, str(err).split("allowed: ", 1)[-1], where) from None


def _check_init(cfg: TrialConfig, where: str, check_paths: bool) -> None:
    if cfg.init == "random" or cfg.stage_init is not None:
        if cfg.stage_init == "":
            raise ConfigError("init", cfg.init, "random, a checkpoint path, or {from_stage: NAME}", where)
        return
    if check_paths and not os.path.exists(cfg.init):
        raise ConfigError("init", cfg.init, "random, {from_stage: NAME}, or an existing checkpoint path", where)


def make_config(values: Mapping[str, Any] | None = None, *, where: str = "",
                check_paths: bool = True, base: TrialConfig | None = None) -> TrialConfig:
    """Validate `values` (missing keys take defaults, or those of `base`) into a TrialConfig.

    Raises ConfigError naming the first bad key. `where` (e.g. a file and stage) prefixes the message.
    Paths (`init`, `data_dir`) become absolute because Ray trials run in another working directory.
    """
    values = dict(values or {})
    for key in values:
        if key not in _TYPES:
            raise ConfigError("key", key, "one of " + ", ".join(KEYS), where)
    if isinstance(values.get("init"), Mapping):
        values["init"] = _stage_init_string(values["init"], where)
    clean = {key: _coerce(key, value, where) for key, value in values.items()}
    for key, value in clean.items():
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(key, value, ", ".join(_CHOICES[key]), where)
        if key in _RANGES:
            _check_range(key, value, where)
    cfg = dataclasses.replace(base or TrialConfig(), **clean)
    if "model" in clean or base is None:
        _check_model(cfg.model, where)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.device):
        raise ConfigError("device", cfg.device, "auto, cpu, cuda, cuda:N, mps", where)
    if cfg.train_attack != "none" and cfg.train_eps_255 == 0 and cfg.adv_fraction > 0:
        raise ConfigError("train_eps_255", cfg.train_eps_255, "a number > 0 when train_attack is not none", where)
    _check_init(cfg, where, check_paths)
    paths = {"data_dir": os.path.abspath(os.path.expanduser(cfg.data_dir))}
    if cfg.init not in ("random",) and cfg.stage_init is None:
        paths["init"] = os.path.abspath(os.path.expanduser(cfg.init))
    return dataclasses.replace(cfg, **paths)


def _stage_init_string(value: Mapping[str, Any], where: str) -> str:
    if set(value) != {"from_stage"} or not isinstance(value["from_stage"], str) or not value["from_stage"]:
        raise ConfigError("init", dict(value), "random, a checkpoint path, or {from_stage: NAME}", where)
    return STAGE_INIT_PREFIX + value["from_stage"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings from the command line; values are read as YAML scalars (8 -> int, true -> bool)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "key=value pairs, e.g. trainable=bn", "")
        out[key.strip()] = _yaml_scalar(raw)
    return out


class _Loader(yaml.SafeLoader):
    """The safe loader, also reading exponent floats without a dot (1e-3, 5e-4, 1.0e5) as numbers.

    PyYAML follows YAML 1.1, where `lr: 1e-3` is the string '1e-3' (an exponent needs a dot and a
    sign); YAML 1.2 and every researcher read it as 0.001.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))


def _yaml_scalar(raw: str) -> Any:
    try:
        return yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def load_yaml(path: str) -> Any:
    """Read a YAML file with the safe loader; errors become one-line ConfigErrors naming the file."""
    return parse_yaml(read_text(path), path)


def read_text(path: str) -> str:
    """A UTF-8 text file's contents; a missing file, a directory or other bytes are ConfigErrors."""
    if os.path.isdir(path):
        raise ConfigError("file", path, "a YAML file, not a directory")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError("file", path, "an existing YAML file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("file", path, f"UTF-8 text (byte {err.start} is not)") from None


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the safe loader; a parse error becomes a one-line ConfigError."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError("file", where, f"valid YAML; parse error{at}: {getattr(err, 'problem', err)}") from None
