"""L-inf PGD (random start, restarts) and FGSM with random start, with input-only gradients.

Gradients are taken with `torch.autograd.grad(loss, [delta])`, so autograd runs only the backward
nodes on the path to the input: no parameter gradient is computed or accumulated in an attack step,
even for parameters that train. The caller chooses the BatchNorm mode (`params.bn_mode`).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F


def _project(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip delta to the eps ball, then so that x + delta stays in [0, 1]."""
    delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0, 1) - x


def _random_delta(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _project(x, (2 * noise - 1) * eps, eps)


def pgd(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float,
        steps: int,
        restarts: int = 1, random_start: bool = True, keep_best: bool = False,
        generator: torch.Generator | None = None, autocast: contextlib.AbstractContextManager | None = None,
        ) -> torch.Tensor:
    r"""PGD in "Towards Deep Learning Models Resistant to Adversarial Attacks" (Madry et al. 2018,
    arXiv 1706.06083). Distance: L-inf.

    Each step ascends the summed cross-entropy along the sign of its input gradient (taken with
    `torch.autograd.grad`, so no parameter gradient is computed), then projects back onto the eps
    ball and [0, 1]. With several restarts each example keeps its worst case: the highest-loss final
    iterate. Evaluation (`keep_best=True`) also keeps, per example, the first iterate of any step or
    restart that is misclassified, so more steps or restarts with the same generator can only find
    more adversarial examples, never fewer; it attacks a fooled example no further (work that would
    change no result), so each step costs what the examples still robust cost.

    Arguments:
        model (nn.Module): maps images in [0, 1] to logits; its BN mode is the caller's choice.
        eps (float): radius in [0, 1] pixel units (8/255 is `eps=8 / 255`).
        step (float): step size in pixel units (Madry et al.: 2/255 for eps 8/255 and 7 steps).
        steps (int): iterations per restart.
        restarts (int): random restarts (default: 1).
        random_start (bool): start from a uniform point of the eps ball (default: True).
        keep_best (bool): keep the first misclassified iterate (evaluation; default: False).
        generator (torch.Generator): source of the random starts, for reproducible attacks.
        autocast: context manager around the forward passes (e.g. bf16 autocast).

    Shape:
        - x: (N, C, H, W) floats in [0, 1]; y: (N,) class indices.
        - output: like x, with ``(output - x).abs() <= eps`` and ``0 <= output <= 1``.

    Examples::
        >>> x_adv = pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=7)
        >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)  # float32: (x + delta) - x rounds
        True
    """
    if eps == 0 or steps == 0:
        return x.clone()
    autocast = autocast or contextlib.nullcontext()
    best_x = x.clone()
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    everyone = torch.arange(x.shape[0], device=x.device)
    for _ in range(restarts):
        delta = _random_delta(x, eps, generator) if random_start else torch.zeros_like(x)
        # Evaluation attacks only the examples not fooled yet: what it found for the others is kept
        # whatever later steps do, so attacking them further is work that changes no result.
        idx = (~fooled).nonzero().squeeze(1) if keep_best else everyone
        xs, ys = (x[idx], y[idx]) if keep_best else (x, y)
        delta = delta[idx] if keep_best else delta
        for _ in range(steps):
            if not len(idx):
                break
            delta.requires_grad_(True)
            with torch.enable_grad(), autocast:
                logits = model(xs + delta)
                loss = F.cross_entropy(logits.float(), ys, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [delta])
            moved = _project(xs, delta.detach() + step * grad.sign(), eps)
            if keep_best:
                newly = logits.argmax(1) != ys
                best_x[idx[newly]] = (xs + delta)[newly].detach()
                fooled[idx[newly]] = True
                idx, xs, ys, moved = idx[~newly], xs[~newly], ys[~newly], moved[~newly]
            delta = moved
        if restarts == 1 and not keep_best:
            return (x + delta).detach()
        if not len(idx):
            continue
        with torch.no_grad(), autocast:
            logits = model(xs + delta).float()
        loss_each = F.cross_entropy(logits, ys, reduction="none")
        wrong = logits.argmax(1) != ys
        take = (wrong & keep_best) | (loss_each > best_loss[idx])
        best_x[idx[take]] = (xs + delta)[take]
        best_loss[idx[take]] = loss_each[take]
        if keep_best:
            fooled[idx[take & wrong]] = True
    return best_x
