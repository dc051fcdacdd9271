"""What each trial key means: the source of the docs' trial-key reference (`bnsweep validate --keys`)."""

from __future__ import annotations

from bnsweep.core.config import KEYS, TrialConfig, allowed_values
from bnsweep.core.hardware import AUTO_COMPILE_MIN_BATCHES

MEANING = {
    "dataset": "data set: torchvision CIFAR, an image `folder`, synthetic `planted`, scikit-learn `digits`",
    "data_dir": "where the data set's files are (CIFAR: a directory; folder: a directory or .tar/.tar.gz); "
                "shared on a cluster",
    "download": "let torchvision download CIFAR into `data_dir`",
    "n_train": "training images (0: the whole split; `planted`: 10,000), a class-balanced draw",
    "n_test": "test images (0: the whole split; `planted`: 2,000)",
    "data_seed": "seed of the subset draw and of `planted`'s images",
    "augment": "random flip and 4-pixel crop (CIFAR-style data sets only)",
    "model": "architecture: CIFAR ResNets (He et al. 2016), PreAct ResNet-18, wrn-D-W (Zagoruyko & Komodakis 2016)",
    "width": "channel multiplier of the model",
    "init": "starting weights: `random`, a checkpoint path, or `{from_stage: NAME}` in a sweep",
    "init_checkpoint": "the checkpoint a `from_stage` trial starts from (set by the sweep)",
    "bn_init": "BN scale at random init (`uniform`: U[0, 1] as in Frankle et al. 2021)",
    "trainable": "which parameters train; all others keep `requires_grad=False`",
    "bn_stats": "whether BN running statistics move during training",
    "train_attack": "attack that makes the training examples (`none`: standard training)",
    "train_eps_255": "L-inf radius of the training attack, in 1/255",
    "train_steps": "PGD iterations of the training attack",
    "train_step_255": "PGD step size, in 1/255",
    "attack_bn_mode": "BN mode while crafting examples (`eval`: running statistics, as MadryLab/robustness; "
                      "`train`: batch statistics, as locuslab/fast_adversarial, running statistics restored)",
    "adv_fraction": "share of each batch replaced by adversarial examples",
    "epochs": "training epochs",
    "batch_size": "training batch size",
    "lr": "SGD learning rate (peak of the schedule)",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay",
    "schedule": "learning-rate schedule (per batch; `step`: x0.1 at 50% and 75%)",
    "eval_eps_255": "radii of the per-epoch robust accuracy `robust_acc_eps{E}`",
    "eval_steps": "PGD iterations of the per-epoch evaluation",
    "eval_step_255": "its step size (0: 2.5 x eps / steps, Madry et al. 2018)",
    "eval_restarts": "random restarts of the per-epoch evaluation",
    "eval_n": "test examples evaluated (the first `eval_n`)",
    "eval_every": "evaluate every N-th epoch and always the last (epochs between report training metrics only)",
    "final_attack": "strongest evaluation, once at the end (`autoattack`: standard AutoAttack, Croce & Hein 2020)",
    "final_steps": "PGD iterations of the final evaluation",
    "final_restarts": "random restarts of the final evaluation",
    "final_autoattack": "AutoAttack at the end as well, on what `final_attack` left robust (metric "
                        "`final_autoattack_acc`); `apgd-ce+apgd-t`: its two gradient attacks, standard settings",
    "final_autoattack_n": "images `final_autoattack` attacks: the first N evaluation images, class-balanced "
                          "(0: all `eval_n`)",
    "seed": "seed of initialisation, batch order and attacks",
    "device": "`auto` picks CUDA when present",
    "precision": "`bf16` autocasts training and attack forward passes (evaluation stays fp32); `auto`: bf16 "
                 "where the device computes it natively (CUDA sm80+, CPU with AVX-512 BF16 or AMX), else fp32",
    "compile": "`torch.compile` the model for training and attacks; `auto`: where a compiler is found and the "
               f"trial trains at least {AUTO_COMPILE_MIN_BATCHES} batches",
}


def key_table() -> str:
    """The Markdown table of every trial key: default, allowed values and meaning."""
    defaults = TrialConfig().to_dict()
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        default = defaults[key]
        shown = ", ".join(f"{v:g}" for v in default) if isinstance(default, list) else (
            str(default).lower() if isinstance(default, bool) else f"{default}" if default != "" else '""')
        rows.append(f"| `{key}` | {shown} | {allowed_values(key)} | {MEANING[key]} |")
    return "\n".join(rows) + "\n"
