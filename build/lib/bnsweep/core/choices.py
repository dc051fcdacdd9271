"""The fixed choices of trial keys, one enum each (as RobustBench's `ThreatModel` and
`BenchmarkDataset`, https://github.com/RobustBench/robustbench/blob/master/robustbench/model_zoo/enums.py).

Members are strings (`TrainAttack.NONE == "none"`), so a TrialConfig keeps plain values for Ray's
param_space, JSON and TensorBoard's hparams, while code compares against names, not literals.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A string-valued enum; `allowed()` lists its values for error messages."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)

    @classmethod
    def allowed(cls) -> str:
        return ", ".join(cls.values())


class DatasetName(Choice):
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
    ONES = "ones"  # gamma 1, beta 0 (PyTorch's default)
    UNIFORM = "uniform"  # gamma ~ U(0, 1), as in Frankle et al. (2021)


class TrainAttack(Choice):
    PGD = "pgd"
    FGSM = "fgsm"  # one step of train_step_255, random start (Wong et al., 2020)
    NONE = "none"  # clean training


class AttackBNMode(Choice):
    """The BN mode while the training attack runs."""

    EVAL = "eval"  # running statistics; the attack does not move them
    TRAIN = "train"  # batch statistics


class Schedule(Choice):
    COSINE = "cosine"
    STEP = "step"  # x0.1 at 50% and 75% of training
    CONSTANT = "constant"


class FinalAttack(Choice):
    PGD = "pgd"  # final_steps x final_restarts
    AUTOATTACK = "autoattack"  # standard AutoAttack (Croce & Hein, 2020)
    NONE = "none"


class Precision(Choice):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast for forward passes; weights stay fp32
