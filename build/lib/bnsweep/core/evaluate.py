"""Clean and robust accuracy: PGD at several radii (attacking only what is still correct) and AutoAttack.

Models are evaluated in eval mode and fp32. Radii are processed in increasing order and each attacks
only the examples still robust at the smaller radius: an example fooled within a small ball is
fooled within every larger one, so this is both faster and guarantees robust accuracy that never
rises with epsilon.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from bnsweep.core.attacks import pgd
from bnsweep.core.choices import FinalAttack


def eps_metric(eps_255: float) -> str:
    """Metric name of robust accuracy at a radius: 8 -> robust_acc_eps8, 0.5 -> robust_acc_eps0.5."""
    return f"robust_acc_eps{eps_255:g}"


def as_float(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(255)


@torch.no_grad()
def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Boolean mask of the examples the model classifies correctly; x is uint8 or float in [0, 1]."""
    as_input = as_float if x.dtype == torch.uint8 else (lambda t: t)
    return torch.cat([model(as_input(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]
                      for i in range(0, len(y), batch_size)])


def pgd_survivors(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, candidates: torch.Tensor, *,
                  eps_255: float, steps: int, step_255: float, restarts: int, generator: torch.Generator,
                  batch_size: int = 500) -> torch.Tensor:
    """Attack the `candidates` (a mask) with PGD; return the mask of those still correctly classified."""
    survivors = candidates.clone()
    idx = candidates.nonzero().squeeze(1)
    step = (step_255 or 2.5 * eps_255 / steps) / 255
    for i in range(0, len(idx), batch_size):
        chunk = idx[i:i + batch_size]
        x_adv = pgd(model, as_float(x_uint8[chunk]), y[chunk], eps=eps_255 / 255, step=step, steps=steps,
                    restarts=restarts, keep_best=True, generator=generator)
        with torch.no_grad():
            survivors[chunk] = model(x_adv).argmax(1) == y[chunk]
    return survivors


def evaluate(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, eps_255: Sequence[float],
             steps: int, step_255: float, restarts: int, seed: int, batch_size: int = 500) -> dict[str, float]:
    r"""Clean accuracy and L-inf PGD robust accuracy at every radius (Madry et al. 2018, arXiv 1706.06083).

    Radii are attacked in increasing order, each only on the examples still robust at the smaller
    one (as AutoAttack does, github.com/fra31/auto-attack), so robust accuracy never rises with
    epsilon. The model runs in eval mode; its training mode is restored afterwards.

    Arguments:
        model (nn.Module): takes images in [0, 1] (it normalises internally).
        x_uint8 (Tensor): test images, uint8, shape (N, C, H, W), on the model's device.
        y (Tensor): labels, shape (N,).
        eps_255 (Sequence[float]): L-inf radii in units of 1/255.
        steps (int): PGD iterations per restart.
        step_255 (float): step size in 1/255; 0 means 2.5 * eps / steps.
        restarts (int): random restarts; an example counts as fooled if any restart fools it.
        seed (int): seed of the random starts.

    Returns:
        ``{"clean_acc": float, "robust_acc_eps{E}": float, ...}``, fractions in [0, 1].

    Examples::
        >>> out = evaluate(model, x, y, eps_255=(2, 8), steps=10, step_255=0, restarts=1, seed=0)
        >>> out["clean_acc"] >= out["robust_acc_eps2"] >= out["robust_acc_eps8"]
        True
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=x_uint8.device).manual_seed(seed)
    try:
        robust = correct_mask(model, x_uint8, y, batch_size)
        out = {"clean_acc": robust.float().mean().item()}
        for eps in sorted(set(eps_255)):
            if eps > 0:
                robust = pgd_survivors(model, x_uint8, y, robust, eps_255=eps, steps=steps, step_255=step_255,
                                       restarts=restarts, generator=generator, batch_size=batch_size)
            out[eps_metric(eps)] = robust.float().mean().item()
        return out
    finally:
        model.train(was_training)


def robust_accuracy(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, attack: str,
                    eps_255: Sequence[float], steps: int, step_255: float, restarts: int,
                    seed: int) -> dict[str, float]:
    """Clean and robust accuracy under `attack` ("pgd": `evaluate`; "autoattack": standard
    AutoAttack at each radius): the one final evaluation, of a trial's last epoch and of `bnsweep eval`."""
    if attack == FinalAttack.PGD:
        return evaluate(model, x_uint8, y, eps_255=eps_255, steps=steps, step_255=step_255,
                        restarts=restarts, seed=seed)
    out = evaluate(model, x_uint8, y, eps_255=(), steps=1, step_255=0, restarts=1, seed=seed)
    for eps in sorted(set(eps_255)):
        out[eps_metric(eps)] = autoattack_accuracy(model, x_uint8, y, eps_255=eps, seed=seed)
    return out


def autoattack_accuracy(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, eps_255: float,
                        seed: int = 0, batch_size: int = 500) -> float:
    """Robust accuracy under standard AutoAttack (pyautoattack: APGD-CE, APGD-T, FAB-T, Square)."""
    from pyautoattack import AutoAttack

    was_training = model.training
    model.eval()
    try:
        adversary = AutoAttack(model, norm="Linf", eps=eps_255 / 255, version="standard", seed=seed,
                               device=x_uint8.device)
        logging.getLogger("auto-attack").setLevel(logging.WARNING)
        x_adv, _ = adversary.run_standard_evaluation(as_float(x_uint8), y, batch_size=batch_size)
        return correct_mask(model, x_adv, y, batch_size).float().mean().item()
    finally:
        model.train(was_training)
