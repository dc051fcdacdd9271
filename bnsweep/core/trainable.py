"""Which parameters train and which BatchNorm statistics move: the knobs the study is about.

Frozen parameters get `requires_grad=False`, so autograd never computes their weight gradients
(the saving that makes BN-only training cheaper, not just a masked update).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BN_TYPES)]


def trainable_names(model: nn.Module, trainable: str) -> set[str]:
    """Names of the parameters that train for a `trainable` setting (all / bn / bn+fc / fc / none)."""
    bn_params = {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, BN_TYPES)
                 for p, _ in m.named_parameters(recurse=False)}
    fc_params = {f"fc.{p}" for p, _ in model.fc.named_parameters()}
    every = {name for name, _ in model.named_parameters()}
    return {"all": every, "bn": bn_params, "bn+fc": bn_params | fc_params, "fc": fc_params, "none": set()}[trainable]


def set_trainable(model: nn.Module, trainable: str) -> list[nn.Parameter]:
    """Set `requires_grad` for exactly the chosen set; return the trainable parameters."""
    chosen = trainable_names(model, trainable)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in chosen)
        if name in chosen:
            params.append(p)
    return params


def init_bn(model: nn.Module, bn_init: str, generator: torch.Generator | None = None) -> None:
    """BatchNorm scale at random init: ones (PyTorch) or U[0, 1] (Frankle et al.'s BN-only setting)."""
    if bn_init == "uniform":
        with torch.no_grad():
            for m in bn_layers(model):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator))


def train_mode(model: nn.Module, bn_stats: str) -> None:
    """Train mode; with `bn_stats: frozen`, BN layers normalise with their running statistics and keep them."""
    model.train()
    if bn_stats == "frozen":
        for m in bn_layers(model):
            m.eval()


@contextlib.contextmanager
def bn_mode(model: nn.Module, mode: str, bn_stats: str) -> Iterator[None]:
    """BatchNorm mode while crafting attacks, restored afterwards.

    `eval`: BN uses running statistics. `train`: BN normalises with batch statistics (as in
    fast_adversarial), but running statistics are saved and restored, so only the training forward
    pass moves them; with `bn_stats: frozen` the layers stay in eval mode.
    """
    layers = bn_layers(model)
    was_training = [m.training for m in layers]
    use_batch_stats = mode == "train" and bn_stats == "update"
    saved = [{k: v.clone() for k, v in m.state_dict().items() if k.startswith(("running_", "num_batches"))}
             for m in layers] if use_batch_stats else []
    for m in layers:
        m.train(use_batch_stats)
    try:
        yield
    finally:
        for m, stats in zip(layers, saved):
            m.load_state_dict({**m.state_dict(), **stats})
        for m, was in zip(layers, was_training):
            m.train(was)


@contextlib.contextmanager
def frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """`params` stop requiring gradients for the block, then require them again.

    For attack steps under torch.compile: its backward computes the weight gradients of every
    parameter that requires them, even when `autograd.grad(loss, [x])` asks only for the input's
    (eager autograd skips them by itself, so there this changes nothing).
    """
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
