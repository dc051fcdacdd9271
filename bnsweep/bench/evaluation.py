"""Part eval: robust evaluation attacking only still-correct examples vs attacking every example."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn

from bnsweep.bench.common import Bench, Row
from bnsweep.core.evaluate import correct_mask, eps_metric, evaluate, pgd_survivors

# -- part: eval --------------------------------------------------------------------------------

def evaluate_every(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, eps_255: Sequence[float],
                   steps: int, step_255: float, restarts: int, seed: int) -> dict[str, float]:
    """The usual alternative to `evaluate`: attack every example at every radius, then count the
    examples correct both before and after the attack."""
    model.eval()
    generator = torch.Generator(device=x_uint8.device).manual_seed(seed)
    correct = correct_mask(model, x_uint8, y)
    everyone = torch.ones_like(correct)
    out = {"clean_acc": correct.float().mean().item()}
    for eps in sorted(eps_255):
        robust = correct & pgd_survivors(model, x_uint8, y, everyone, eps_255=eps, steps=steps,
                                         step_255=step_255, restarts=restarts, generator=generator)
        out[eps_metric(eps)] = robust.float().mean().item()
    return out


def evaluation(b: Bench) -> list[Row]:
    """`evaluate` (attacks only still-correct examples, radii in increasing order) vs attacking all."""
    a = b.args
    trial = b.trial(train_attack="none")
    for _ in range(a.eval_epochs):  # a trained model, so that "still correct" means something
        trial.train_epoch()
    x, y = trial.eval_split()
    kw = dict(eps_255=tuple(a.eval_eps), steps=a.eval_steps, step_255=0.0, restarts=1, seed=0)
    results: dict[str, dict[str, float]] = {}

    def run(name: str, fn: Callable[..., dict[str, float]]) -> None:
        results[name] = fn(trial.model, x, y, **kw)

    t = b.times({name: functools.partial(run, name, fn)
                 for name, fn in (("survivors", evaluate), ("every", evaluate_every))})
    print(f"\n== eval: PGD-{a.eval_steps} robust accuracy on {len(y)} examples, {a.model} after "
          f"{a.eval_epochs} clean epoch(s) on {len(trial.data.train_y)} images ==")
    print(f"{'attacked':<11}{'s':>8}{'clean':>8}" + "".join(f"{'eps ' + format(e, 'g'):>9}" for e in a.eval_eps))
    rows = []
    for name in ("survivors", "every"):
        r = results[name]
        rows.append({"attacked": name, "seconds": t[name], **r})
        print(f"{name:<11}{t[name]:>8.2f}{r['clean_acc']:>8.3f}"
              + "".join(f"{r[eps_metric(e)]:>9.3f}" for e in a.eval_eps))
    diff = max(abs(results["survivors"][k] - results["every"][k]) for k in results["every"])
    why = " (the attacks' random starts differ)" if diff else ""
    print(f"speed-up of attacking only still-correct examples: {t['every'] / t['survivors']:.2f}x; "
          f"largest accuracy difference {diff:.3f}: {round(diff * len(y))} of {len(y)} examples{why}")
    return rows

