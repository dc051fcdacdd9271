"""Parts efficiency, peers and gpu: how close PGD-k adversarial training comes to its ideal cost."""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnsweep.bench.common import (
    LR,
    Bench,
    Row,
    median_times,
    sync,
    synthetic_cifar,
    target,
    with_config,
)
from bnsweep.core.config import make_config
from bnsweep.core.train import Trial
from bnsweep.core.trainable import bn_mode, frozen, trainable_names


def input_gradient(trial: Trial, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One attack step's model work: forward and backward to the input only, in the attack's BN
    mode and precision (the unit of the cost model). Parameters are frozen for the pass because a
    torch.compile'd backward computes weight gradients even when only the input's is requested."""
    cfg = trial.cfg
    with bn_mode(trial.model, cfg.attack_bn_mode, cfg.bn_stats, trial.selected), frozen(trial.params):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), trial.autocast():
            loss = F.cross_entropy(trial.forward(x).float(), y, reduction="sum")
        return torch.autograd.grad(loss, [x])[0]


# -- part: efficiency --------------------------------------------------------------------------

def efficiency(b: Bench) -> list[Row]:
    """Measured PGD-k step (the real `Trial.train_step`) against k input-gradient passes + 1 train step."""
    print("\n== efficiency: PGD-k training step vs ideal = k x input-gradient pass + 1 x train step ==")
    print(f"{'trainable':<10}{'k':>4}{'train ms':>10}{'grad ms':>10}{'PGD-k ms':>10}{'img/s':>9}"
          f"{'ideal/measured':>16}")
    rows = []
    for trainable in b.args.trainable:
        trial = b.trial(trainable=trainable, train_attack="none")
        variants: dict[str, Callable[[], Any]] = {
            "train": functools.partial(trial.train_step, b.x, b.y, LR),
            "grad": functools.partial(input_gradient, trial, b.x, b.y)}
        for k in b.args.steps:
            cfg = dataclasses.replace(trial.cfg, train_attack="pgd", train_steps=k)
            variants[f"pgd{k}"] = functools.partial(with_config, trial, cfg, b.x, b.y)
        t = b.times(variants)
        for k in b.args.steps:
            measured = t[f"pgd{k}"]
            row = {"trainable": trainable, "k": k, "train_s": t["train"], "grad_s": t["grad"],
                   "pgd_s": measured, "images_per_s": len(b.y) / measured,
                   "ideal_ratio": (k * t["grad"] + t["train"]) / measured}
            rows.append(row)
            print(f"{trainable:<10}{k:>4}{1e3 * row['train_s']:>10.1f}{1e3 * row['grad_s']:>10.1f}"
                  f"{1e3 * measured:>10.1f}{row['images_per_s']:>9.0f}{row['ideal_ratio']:>16.2f}")
    lowest = min(r["ideal_ratio"] for r in rows)
    print(f"lowest ideal/measured: {lowest:.2f} {target(lowest, '>= 0.9')}")
    return rows


# -- part: peers -------------------------------------------------------------------------------

class ReferenceLoop:
    """PGD-k training as in the widely copied public scripts (locuslab/fast_adversarial
    CIFAR10/train_pgd.py): the model stays in train mode, every attack step calls `loss.backward()`
    (computing, then discarding, all parameter gradients), and a subset is "trained" by handing only
    it to the optimiser, so frozen convolutions still get weight gradients."""

    def __init__(self, model: nn.Module, trainable: str, *, eps: float, alpha: float, steps: int):
        self.model = copy.deepcopy(model).requires_grad_(True)
        chosen = trainable_names(self.model, trainable)
        self.opt = torch.optim.SGD([p for n, p in self.model.named_parameters() if n in chosen],
                                   lr=LR, momentum=0.9, weight_decay=5e-4)
        self.eps, self.alpha, self.steps = eps, alpha, steps

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.model.train()
        delta = torch.empty_like(x).uniform_(-self.eps, self.eps)
        delta.data = torch.clamp(delta, -x, 1 - x)
        delta.requires_grad = True
        for _ in range(self.steps):
            loss = F.cross_entropy(self.model(x + delta), y)
            loss.backward()
            assert delta.grad is not None
            grad = delta.grad.detach()
            delta.data = torch.clamp(delta + self.alpha * torch.sign(grad), -self.eps, self.eps)
            delta.data = torch.clamp(delta, -x, 1 - x)
            delta.grad.zero_()
        loss = F.cross_entropy(self.model(x + delta.detach()), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()


def torchattacks_step(trial: Trial, steps: int) -> Callable[[torch.Tensor, torch.Tensor], Any] | None:
    """torchattacks.PGD (eval-mode BN, input-only gradients) feeding the same clean training step;
    None when torchattacks is not installed."""
    try:
        import torchattacks
    except ImportError:
        return None
    cfg = trial.cfg
    attack = torchattacks.PGD(trial.model, eps=cfg.train_eps_255 / 255, alpha=cfg.train_step_255 / 255,
                              steps=steps, random_start=True)
    clean = dataclasses.replace(cfg, train_attack="none")
    return lambda x, y: with_config(trial, clean, attack(x, y), y)


def peers(b: Bench) -> list[Row]:
    """bnsweep's PGD-k step against peer loops on the same model, data and run."""
    k = b.args.peer_steps
    print(f"\n== peers: PGD-{k} training step, bnsweep vs (a) fast_adversarial-style loop, "
          f"(b) torchattacks.PGD + same train step ==")
    print(f"{'trainable':<10}{'loop':<14}{'ms':>10}{'img/s':>9}{'bnsweep speed-up':>18}")
    rows = []
    for trainable in [t for t in b.args.trainable if t != "fc"]:
        trial = b.trial(trainable=trainable, train_steps=k)
        reference = ReferenceLoop(trial.model, trainable, eps=trial.cfg.train_eps_255 / 255,
                                  alpha=trial.cfg.train_step_255 / 255, steps=k)
        variants: dict[str, Callable[[], Any]] = {
            "bnsweep": functools.partial(trial.train_step, b.x, b.y, LR),
            "reference": functools.partial(reference.step, b.x, b.y)}
        ta = torchattacks_step(trial, k)
        if ta is not None:
            variants["torchattacks"] = functools.partial(ta, b.x, b.y)
        t = b.times(variants)
        for loop, seconds in t.items():
            row = {"trainable": trainable, "loop": loop, "k": k, "seconds": seconds,
                   "images_per_s": len(b.y) / seconds, "speedup": seconds / t["bnsweep"]}
            rows.append(row)
            print(f"{trainable:<10}{loop:<14}{1e3 * seconds:>10.1f}{row['images_per_s']:>9.0f}"
                  f"{row['speedup']:>17.2f}x")
        if ta is None:
            print(f"{trainable:<10}{'torchattacks':<14}  skipped: torchattacks is not installed")
    print("speed-up = peer time / bnsweep time", end="")
    against = [r["speedup"] for r in rows if r["loop"] == "reference" and r["trainable"] == "all" and k == 7]
    print(f"; vs reference for all at k = 7: {against[0]:.2f}x {target(against[0], '>= 1.3')}" if against else "")
    return rows


# -- part: gpu ---------------------------------------------------------------------------------

def throughput(device: torch.device, models: Sequence[str], *, steps: int, batch_size: int, n_batches: int,
               reps: int, warmup: int, precisions: Sequence[str] = ("fp32", "bf16"),
               compiles: Sequence[bool] = (False, True), width: float = 1.0) -> list[Row]:
    """Images/s of `Trial.train_epoch` (device-resident uint8 data, augmentation on the device,
    channels_last, PGD-`steps`) per model x precision x compile, epochs interleaved.

    The warm-up epoch includes torch.compile; compile time = first epoch - median epoch."""
    data = synthetic_cifar(batch_size * n_batches, device)  # whole batches: no recompile on a last one
    rows = []
    for model in models:
        trials, first = {}, {}
        for precision in precisions:
            for compiled in compiles:
                cfg = make_config({"dataset": "planted", "model": model, "width": width, "precision": precision,
                                   "compile": compiled, "train_steps": steps, "batch_size": batch_size,
                                   "epochs": 1, "device": str(device), "eval_n": 64})
                trials[precision, compiled] = trial = Trial(cfg, data=data)
                sync(device)
                start = time.perf_counter()
                for _ in range(max(1, warmup)):
                    trial.train_epoch()
                first[precision, compiled] = time.perf_counter() - start
        epoch = median_times({key: t.train_epoch for key, t in trials.items()}, reps, 0, device)
        for (precision, compiled), seconds in epoch.items():
            warm = first[precision, compiled] - max(1, warmup) * seconds
            rows.append({"model": model, "precision": precision, "compile": compiled, "k": steps,
                         "images_per_s": len(data.train_y) / seconds,
                         "compile_s": max(0.0, warm) if compiled else None})
    return rows


def gpu(b: Bench) -> list[Row]:
    """PGD-10 training throughput on CUDA for resnet20 and preact_resnet18; skipped without CUDA."""
    if not torch.cuda.is_available():
        print("\n== gpu: skipped (no CUDA device) ==")
        return []
    device = b.device if b.device.type == "cuda" else torch.device("cuda")
    a = b.args
    print(f"\n== gpu: PGD-10 training images/s on {torch.cuda.get_device_name(device)}, batch {a.gpu_batch_size}, "
          f"uint8 data and augmentation on the GPU, channels_last ==")
    rows = throughput(device, a.gpu_models, steps=10, batch_size=a.gpu_batch_size, n_batches=a.gpu_batches,
                      reps=a.reps, warmup=a.warmup, compiles=(False,) if a.gpu_eager_only else (False, True))
    print(f"{'model':<18}{'precision':<11}{'mode':<10}{'img/s':>9}{'compile s':>11}")
    for r in rows:
        compile_s = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else "-"
        print(f"{r['model']:<18}{r['precision']:<11}{'compiled' if r['compile'] else 'eager':<10}"
              f"{r['images_per_s']:>9.0f}{compile_s:>11}")
    return rows

