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
from bnsweep.core.choices import AutoAttackVersion, FinalAttack
from bnsweep.core.data import as_float


def eps_metric(eps_255: float) -> str:
    """Metric name of robust accuracy at a radius: 8 -> robust_acc_eps8, 0.5 -> robust_acc_eps0.5."""
    return f"robust_acc_eps{eps_255:g}"


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


def robust_masks(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, eps_255: Sequence[float],
                 steps: int, step_255: float, restarts: int, seed: int,
                 batch_size: int = 500) -> dict[str, torch.Tensor]:
    """`evaluate` per example: ``{"clean_acc": mask, "robust_acc_eps{E}": mask, ...}``, boolean
    masks of the examples classified correctly, and still so under PGD at each radius."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=x_uint8.device).manual_seed(seed)
    try:
        robust = correct_mask(model, x_uint8, y, batch_size)
        out = {"clean_acc": robust}
        for eps in sorted(set(eps_255)):
            if eps > 0:
                robust = pgd_survivors(model, x_uint8, y, robust, eps_255=eps, steps=steps, step_255=step_255,
                                       restarts=restarts, generator=generator, batch_size=batch_size)
            out[eps_metric(eps)] = robust
        return out
    finally:
        model.train(was_training)


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
    masks = robust_masks(model, x_uint8, y, eps_255=eps_255, steps=steps, step_255=step_255,
                         restarts=restarts, seed=seed, batch_size=batch_size)
    return {name: mask.float().mean().item() for name, mask in masks.items()}


def robust_accuracy(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, attack: str,
                    eps_255: Sequence[float], steps: int, step_255: float, restarts: int,
                    seed: int, autoattack_version: str = AutoAttackVersion.STANDARD) -> dict[str, float]:
    """Clean and robust accuracy under `attack` ("pgd": `evaluate`; "autoattack": AutoAttack's
    `autoattack_version` at each radius, in increasing order, each on what the smaller radius left
    robust): the one final evaluation, of a trial's last epoch and of `bnsweep eval`."""
    if attack == FinalAttack.PGD:
        return evaluate(model, x_uint8, y, eps_255=eps_255, steps=steps, step_255=step_255,
                        restarts=restarts, seed=seed)
    robust = robust_masks(model, x_uint8, y, eps_255=(), steps=1, step_255=0, restarts=1, seed=seed)["clean_acc"]
    out = {"clean_acc": robust.float().mean().item()}
    for eps in sorted(set(eps_255)):
        robust = autoattack_survivors(model, x_uint8, y, robust, eps_255=eps, version=autoattack_version, seed=seed)
        out[eps_metric(eps)] = robust.float().mean().item()
    return out


def autoattack_survivors(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, candidates: torch.Tensor, *,
                         eps_255: float, version: str, seed: int, batch_size: int = 500) -> torch.Tensor:
    r"""AutoAttack (Croce & Hein 2020, arXiv 2003.01690; pyautoattack) on the `candidates` (a mask of
    examples classified correctly, e.g. those an earlier attack left robust); returns the mask of
    those still classified correctly. Attacking only the candidates keeps the result at or below the
    earlier attack's on the same images: together they are one worst case over both attacks, as
    AutoAttack's own ensemble is. The model runs in eval mode; its training mode is restored.

    Arguments:
        version (str): ``standard`` (APGD-CE, APGD-T on 9 target classes, FAB-T, Square with 5,000
            queries) or ``apgd-ce+apgd-t`` (its two gradient attacks with the same settings, without
            FAB-T and Square: most of its strength for a fraction of the cost).
        seed (int): seed of the attacks' random starts.
    """
    from pyautoattack import AutoAttack

    survivors = candidates.clone()
    idx = candidates.nonzero().squeeze(1)
    if len(idx) == 0:
        return survivors
    was_training = model.training
    model.eval()
    try:
        adversary = AutoAttack(model, norm="Linf", eps=eps_255 / 255, version="standard", seed=seed,
                               device=x_uint8.device)
        if version == AutoAttackVersion.APGD:  # standard's settings, its gradient attacks only
            adversary.attacks_to_run = ["apgd-ce", "apgd-t"]
        logging.getLogger("auto-attack").setLevel(logging.WARNING)
        x, target = as_float(x_uint8[idx]), y[idx]
        x_adv, _ = adversary.run_standard_evaluation(x, target, batch_size=batch_size)
        _check_inside(x_adv, x, eps_255 / 255)
        survivors[idx] = correct_mask(model, x_adv, target, batch_size)
        return survivors
    finally:
        model.train(was_training)


def _check_inside(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    """An attack's examples must lie in the eps ball around x and in [0, 1] (float rounding aside)."""
    if not (bool(((x_adv - x).abs() <= eps + 1e-6).all()) and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1):
        raise RuntimeError(f"an attack returned examples outside the {eps * 255:g}/255 ball or [0, 1]")
