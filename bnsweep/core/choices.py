"""The fixed choices of trial keys, one enum each (as RobustBench's `ThreatModel` and
`BenchmarkDataset`, https://github.com/RobustBench/robustbench/blob/master/robustbench/model_zoo/enums.py).

Members are strings (`TrainAttack.NONE == "none"`), so a TrialConfig keeps plain values for Ray's
param_space, JSON and TensorBoard's hparams, while code compares against names, not literals.
"""

from __future__ import annotations

import re
from enum import Enum


class Choice(str, Enum):
    """A string-valued enum; `allowed()` lists its values for error messages."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """Every member's value, in definition order."""
        return tuple(member.value for member in cls)

    @classmethod
    def allowed(cls) -> str:
        """The values, comma-separated, as an error message lists what is allowed."""
        return ", ".join(cls.values())


class DatasetName(Choice):
    """The data sets a trial trains on (`dataset`)."""
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    FOLDER = "folder"  # an image-folder tree or archive
    PLANTED = "planted"  # synthetic, with planted robust and non-robust features
    DIGITS = "digits"  # scikit-learn's 8x8 digits, upscaled


class BNStats(Choice):
    """Whether BN running statistics move during training."""

    UPDATE = "update"  # every BN layer's
    FROZEN = "frozen"  # none
    SELECTED = "selected"  # only those of BN layers whose affine parameters train


class BNInit(Choice):
    """How BatchNorm's scale starts at random init (`bn_init`)."""
    ONES = "ones"  # gamma 1, beta 0 (PyTorch's default)
    UNIFORM = "uniform"  # gamma ~ U(0, 1), as in Frankle et al. (2021)


class TrainAttack(Choice):
    """The attack that makes training examples (`train_attack`)."""
    PGD = "pgd"
    FGSM = "fgsm"  # one step of train_step_255, random start (Wong et al., 2020)
    NONE = "none"  # clean training


class AttackBNMode(Choice):
    """The BN mode while the training attack runs."""

    EVAL = "eval"  # running statistics; the attack does not move them
    TRAIN = "train"  # batch statistics


class Schedule(Choice):
    """The learning-rate schedule (`schedule`)."""
    COSINE = "cosine"
    STEP = "step"  # x0.1 at 50% and 75% of training
    CONSTANT = "constant"


class FinalAttack(Choice):
    """The strongest evaluation, once after the last epoch (`final_attack`)."""
    PGD = "pgd"  # final_steps x final_restarts
    AUTOATTACK = "autoattack"  # standard AutoAttack (Croce & Hein, 2020)
    NONE = "none"


class AutoAttackVersion(Choice):
    """The AutoAttack run once at the end beside `final_attack` (`final_autoattack`)."""

    NONE = "none"
    STANDARD = "standard"  # APGD-CE, APGD-T, FAB-T, Square (Croce & Hein, 2020)
    APGD = "apgd-ce+apgd-t"  # its two gradient attacks: APGD-CE, then APGD-T on 9 target classes


class Precision(Choice):
    """The arithmetic of forward passes (`precision`)."""
    FP32 = "fp32"
    BF16 = "bf16"  # autocast for forward passes; weights stay fp32
    AUTO = "auto"  # bf16 where the device computes it natively, else fp32 (core/hardware.py)


class TrialStatus(Choice):
    """A trial's status as `results.load` reports it: Ray's (PENDING, ... in capitals), corrected by
    what the trial directory shows: a trial that diverged ended early (Ray calls it TERMINATED), one
    with results the snapshot does not know yet is running."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    TERMINATED = "terminated"
    ERROR = "error"
    DIVERGED = "diverged"

    @classmethod
    def from_ray(cls, ray_status: str | None) -> str:
        """Ray's spelling (None: not in a snapshot yet) -> ours; an unknown status is kept, lower-cased."""
        return cls.PENDING.value if ray_status is None else ray_status.lower()


ENDED = frozenset({TrialStatus.TERMINATED.value, TrialStatus.DIVERGED.value})  # will not train again
FAILED = frozenset({TrialStatus.ERROR.value, TrialStatus.DIVERGED.value})  # ended or stopped without a result
# Not ended and not failed: `bnsweep resume` continues them (an ERROR trial it retries).
UNFINISHED = frozenset({TrialStatus.PENDING.value, TrialStatus.RUNNING.value, TrialStatus.PAUSED.value})
DONE = (TrialStatus.TERMINATED.value,)  # the statuses tables, figures and comparisons use by default


# -- model names: the architectures of core/models.py, named without importing torch --------------

RESNET_DEPTHS = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet56": 56, "resnet110": 110}
MODEL_NAMES = (*RESNET_DEPTHS, "preact_resnet18")  # and wrn-D-W
WRN_RE = re.compile(r"wrn-(\d{1,6})-(\d{1,6})")
# Bounds checked before any model is built: a WideResNet of depth 10^6 takes minutes and gigabytes
# to build even on the meta device. ResNet-1001 is the deepest CIFAR network in the literature;
# WRN-106-16 (415 M parameters) about the largest robust one.
MAX_WRN_DEPTH = 1000
MAX_WRN_WIDEN = 100
MAX_PARAMS = 1_000_000_000  # ~4 GB of float32 weights, as many again for SGD's momentum
MODELS_ALLOWED = (", ".join(MODEL_NAMES) + f", wrn-D-W (D = 6n+4 <= {MAX_WRN_DEPTH}, 1 <= W <= {MAX_WRN_WIDEN}, "
                  "e.g. wrn-28-10)")


def parse_wrn(name: str) -> tuple[int, int] | None:
    """(depth, widen factor) of a valid `wrn-D-W` name, else None."""
    m = WRN_RE.fullmatch(name)
    if m is None:
        return None
    depth, widen = int(m.group(1)), int(m.group(2))
    if not 10 <= depth <= MAX_WRN_DEPTH or (depth - 4) % 6 != 0 or not 1 <= widen <= MAX_WRN_WIDEN:
        return None
    return depth, widen


def check_model_name(name: str) -> None:
    """Raise ValueError (one line: the value and what is allowed) unless `name` is a known model."""
    if name in MODEL_NAMES or (isinstance(name, str) and parse_wrn(name) is not None):
        return
    raise ValueError(f"model: {name!r} is not allowed; allowed: {MODELS_ALLOWED}")
