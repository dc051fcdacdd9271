"""`fit(config, report)`: the epoch loop shared by `bnsweep train` and every Ray Tune trial.

Per batch: craft adversarial examples for `adv_fraction` of the batch (input-only gradients, BN in
`attack_bn_mode`), then one SGD step on the trainable parameters. Per epoch: evaluate clean and PGD
robust accuracy on the first `eval_n` test examples (every `eval_every`-th epoch and the last) and
call `report(metrics, checkpoint_dir)` once. The last epoch's report also carries the final
evaluation (`final_attack`, then `final_autoattack`).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from bnsweep.core import checkpoints, hardware
from bnsweep.core.attacks import pgd
from bnsweep.core.choices import (
    AutoAttackVersion,
    FinalAttack,
    Precision,
    Schedule,
    TrainAttack,
)
from bnsweep.core.config import TrialConfig
from bnsweep.core.data import Dataset, as_float, batches, load_dataset
from bnsweep.core.evaluate import (
    autoattack_survivors,
    eps_metric,
    evaluate,
    robust_accuracy,
    robust_masks,
)
from bnsweep.core.models import build_model
from bnsweep.core.trainable import (
    bn_mode,
    count_params,
    describe,
    frozen,
    init_bn,
    set_trainable,
    train_mode,
    trainable_names,
)

# Seeds of the final evaluation's random starts: the trial's seed plus these, apart from training's draws.
FINAL_SEED_OFFSET = 10_000
AUTOATTACK_SEED_OFFSET = 20_000

Report = Callable[[dict[str, Any], "str | None"], None]
Progress = Callable[[Iterable, int, str], Iterable]


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else the CPU) or a torch device name -> the device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(cfg: TrialConfig, progress: float) -> float:
    """Learning rate at `progress` in [0, 1) of training (per batch, so cosine is smooth)."""
    if cfg.schedule == Schedule.COSINE:
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == Schedule.STEP:  # x0.1 at 50% and 75% of training
        return cfg.lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    return cfg.lr


class Trial:
    """Everything one trial holds: data, model, optimiser and RNG, built from a config."""

    def __init__(self, cfg: TrialConfig, data: Dataset | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.data = data or load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                                         n_train=cfg.n_train, n_test=cfg.n_test, data_seed=cfg.data_seed,
                                         device=self.device)
        self.model = build_model(cfg.model, self.data.num_classes, width=cfg.width,
                                 mean=self.data.mean, std=self.data.std)
        init_bn(self.model, cfg.bn_init)
        init_path = cfg.init_checkpoint if cfg.stage_init else cfg.init
        if init_path != "random":
            checkpoints.load_weights(self.model, checkpoints.load(init_path), cfg.to_dict(), init_path)
        # NHWC: cuDNN's and oneDNN's faster convolutions, without a layout conversion around each
        # one on CPUs (the models avoid oneDNN's strided 1x1 kernels, see models.Pointwise)
        self.model.to(self.device)
        self.model.to(memory_format=torch.channels_last)
        self.selected = trainable_names(self.model, cfg.trainable)
        self.params = set_trainable(self.model, self.selected)
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay) if self.params else None
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        # what `precision` and `compile` run as here (`auto` resolved on this machine; reported)
        self.precision = hardware.resolve_precision(cfg.precision, self.device)
        batches_per_epoch = math.ceil(len(self.data.train_y) / cfg.batch_size)
        self.compiled = hardware.resolve_compile(cfg.compile, self.device, cfg.epochs * batches_per_epoch)
        if self.compiled:
            hardware.use_compile_cache()
        self.forward = torch.compile(self.model) if self.compiled else self.model
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.progress: Progress = lambda batches, total, desc: batches

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of training and attack forward passes: bf16 autocast or nothing."""
        if self.precision == Precision.BF16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resume needs (weights, optimizer, epoch, the batch generator's state, config,
        metrics so far, precision), for a checkpoint."""
        return {"model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "epoch": self.epoch, "generator": self.generator.get_state(),
                "config": self.cfg.to_dict(), "metrics": self.history, "precision": self.precision}

    def restore(self, path: str) -> None:
        """Continue from a checkpoint of this same trial (after a crash or an interruption)."""
        state = checkpoints.load(path, key="resume")
        checkpoints.load_weights(self.model, state, self.cfg.to_dict(), path, key="resume")
        if self.optimizer and state["optimizer"]:
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        # a trial keeps the precision it started with, also when it resumes on another machine
        self.precision = state.get("precision", self.precision)
        self.epoch = state["epoch"]
        self.history = list(state["metrics"])

    # -- training ----------------------------------------------------------------------------
    def adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training attack's examples for a batch, with BN in `attack_bn_mode` and the weights frozen."""
        cfg = self.cfg
        with bn_mode(self.model, cfg.attack_bn_mode, cfg.bn_stats, self.selected), frozen(self.params):
            return pgd(self.forward, x, y, eps=cfg.train_eps_255 / 255, step=cfg.train_step_255 / 255,
                       steps=1 if cfg.train_attack == TrainAttack.FGSM else cfg.train_steps,
                       generator=self.generator, autocast=self.autocast())

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch; returns (summed loss, number correct) as device tensors (no host sync)."""
        cfg = self.cfg
        n_adv = round(cfg.adv_fraction * len(y)) if cfg.train_attack != TrainAttack.NONE else 0
        if n_adv:
            x = torch.cat([self.adversarial(x[:n_adv], y[:n_adv]), x[n_adv:]])
        train_mode(self.model, cfg.bn_stats, self.selected)
        grad = torch.enable_grad() if self.optimizer else torch.no_grad()
        with grad, self.autocast():
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y)
        if self.optimizer:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.detach() * len(y), (logits.argmax(1) == y).sum()

    def train_epoch(self) -> dict[str, float]:
        """One epoch of (adversarial) training; returns its training metrics."""
        cfg, data = self.cfg, self.data
        n = len(data.train_y)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        lr = cfg.lr
        start = time.perf_counter()
        epoch_batches = batches(data.train_x, data.train_y, cfg.batch_size, shuffle=True,
                                augment=data.augment and cfg.augment, generator=self.generator)
        for i, (x, y) in enumerate(self.progress(epoch_batches, steps_per_epoch,
                                                 f"epoch {self.epoch + 1}/{cfg.epochs}")):
            x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(cfg, (self.epoch * steps_per_epoch + i) / (cfg.epochs * steps_per_epoch))
            batch_loss, batch_correct = self.train_step(x, y, lr)
            loss_sum += batch_loss
            correct += batch_correct
        train_loss = loss_sum.item() / n
        seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} in epoch {self.epoch + 1} (lr {cfg.lr:g})")
        self._check_finite()
        return {"train_loss": train_loss, "train_acc": correct.item() / n, "lr": lr, "images_per_s": n / seconds,
                "train_s": seconds}

    def _check_finite(self) -> None:
        """Raise Diverged when the weights, or the outputs they give, are no longer finite: a blow-up in
        an epoch's last step leaves the epoch's training loss finite but a network that outputs NaN."""
        where = f"after epoch {self.epoch + 1} (lr {self.cfg.lr:g})"
        for name, t in self.model.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise Diverged(f"{name} is not finite {where}")
        x, _ = self.eval_split()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(as_float(x[:64]))
        finally:
            self.model.train(was_training)
        if not bool(torch.isfinite(logits).all()):
            raise Diverged(f"the model's outputs are not finite {where}")

    # -- evaluation --------------------------------------------------------------------------
    def eval_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluation images (the first `eval_n` test images, class-balanced) and labels."""
        n = min(self.cfg.eval_n, len(self.data.test_y))
        return self.data.test_x[:n], self.data.test_y[:n]

    def evaluates_after(self, epoch: int) -> bool:
        """Whether epoch `epoch` (1-based) ends with the per-epoch evaluation: every `eval_every`-th
        and the last."""
        return epoch % self.cfg.eval_every == 0 or epoch == self.cfg.epochs

    def evaluate_epoch(self) -> dict[str, float]:
        """The per-epoch evaluation: clean and PGD robust accuracy at each `eval_eps_255`."""
        cfg = self.cfg
        radii = tuple(sorted(set(cfg.eval_eps_255) | {cfg.robust_eps_255}))
        x, y = self.eval_split()
        out = evaluate(self.model, x, y, eps_255=radii, steps=cfg.eval_steps, step_255=cfg.eval_step_255,
                       restarts=cfg.eval_restarts, seed=cfg.seed + self.epoch)
        out["robust_acc"] = out[eps_metric(cfg.robust_eps_255)]
        return {k: v for k, v in out.items()
                if k in ("clean_acc", "robust_acc") or k in {eps_metric(e) for e in cfg.eval_eps_255}}

    def attack_accuracy(self, attack: str, eps_255: Sequence[float], steps: int, restarts: int,
                        autoattack_version: str = AutoAttackVersion.STANDARD) -> dict[str, float]:
        """Clean and robust accuracy of the evaluation images under `attack` (`robust_accuracy`) at
        each radius, with the step size (`eval_step_255`) and the seed (FINAL_SEED_OFFSET) of this
        trial's final evaluation, so `bnsweep eval` of its checkpoint with the same attack and
        images measures what the trial reported."""
        x, y = self.eval_split()
        return robust_accuracy(self.model, x, y, attack=attack, eps_255=eps_255, steps=steps,
                               step_255=self.cfg.eval_step_255, restarts=restarts,
                               seed=self.cfg.seed + FINAL_SEED_OFFSET, autoattack_version=autoattack_version)

    def final_evaluation(self) -> dict[str, Any]:
        """The strongest evaluation, once, at the trial's robust radius: `final_attack` (PGD with
        `final_steps` x `final_restarts`, or standard AutoAttack) on the evaluation images; then
        `final_autoattack` on the first `final_autoattack_n` of them, attacking only what
        `final_attack` left robust (so it never reports more than the final attack on those images)."""
        cfg = self.cfg
        out: dict[str, Any] = {"final_attack": cfg.final_attack}
        eps = cfg.robust_eps_255
        x, y = self.eval_split()
        robust = None
        if cfg.final_attack == FinalAttack.PGD:
            masks = robust_masks(self.model, x, y, eps_255=(eps,), steps=cfg.final_steps, step_255=cfg.eval_step_255,
                                 restarts=cfg.final_restarts, seed=cfg.seed + FINAL_SEED_OFFSET)
            robust = masks[eps_metric(eps)]
            out.update(final_clean_acc=masks["clean_acc"].float().mean().item(),
                       final_robust_acc=robust.float().mean().item())
        elif cfg.final_attack == FinalAttack.AUTOATTACK:
            acc = self.attack_accuracy(cfg.final_attack, (eps,), cfg.final_steps, cfg.final_restarts)
            out.update(final_clean_acc=acc["clean_acc"], final_robust_acc=acc[eps_metric(eps)])
        if cfg.final_autoattack != AutoAttackVersion.NONE:
            n = min(cfg.final_autoattack_n or len(y), len(y))
            before = robust[:n] if robust is not None else \
                robust_masks(self.model, x[:n], y[:n], eps_255=(), steps=1, step_255=0, restarts=1, seed=0)["clean_acc"]
            after = autoattack_survivors(self.model, x[:n], y[:n], before, eps_255=eps, version=cfg.final_autoattack,
                                         seed=cfg.seed + AUTOATTACK_SEED_OFFSET)
            out.update(final_autoattack_acc=after.float().mean().item(),
                       final_autoattack_before_acc=before.float().mean().item())
        return out

    # -- the loop ----------------------------------------------------------------------------
    def run(self, report: Report) -> dict[str, Any]:
        """Train the remaining epochs, reporting once per epoch; return the last metrics."""
        n_trainable, n_params = count_params(self.model)
        sizes = {"n_trainable_params": n_trainable, "n_params": n_params,
                 "trainable_groups": describe(self.model, self.selected),
                 "precision": self.precision, "compile": self.compiled}
        metrics: dict[str, Any] = self.history[-1] if self.history else {}
        while self.epoch < self.cfg.epochs:
            start = time.perf_counter()
            try:
                metrics = self.train_epoch()
            except Diverged as err:
                metrics = {"epoch": self.epoch + 1, "diverged": True, "diverged_reason": str(err), **sizes}
                report(metrics, None)  # no checkpoint: the weights are no longer finite
                return metrics
            if self.evaluates_after(self.epoch + 1):
                metrics.update(self.evaluate_epoch())
            self.epoch += 1
            if self.epoch == self.cfg.epochs:
                metrics.update(self.final_evaluation())
            metrics = {"epoch": self.epoch, **metrics, "epoch_s": time.perf_counter() - start, **sizes}
            self.history.append(metrics)
            self._report(report, metrics)
        return metrics

    def _report(self, report: Report, metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="bnsweep-ckpt-") as tmp:
            checkpoints.save(os.path.join(tmp, checkpoints.FILENAME), self.state())
            report(metrics, tmp)


def start(cfg: TrialConfig, resume: str | None = None) -> Trial:
    """Build a trial (data, model, starting weights) and restore the checkpoint `resume` of this
    trial: everything that can refuse bad input happens here, before anything trains or is written."""
    trial = Trial(cfg)
    if resume:
        trial.restore(resume)
    return trial


def fit(cfg: TrialConfig, report: Report, resume: str | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Run one trial. `report(metrics, checkpoint_dir)` is called once per epoch; the directory holds
    `checkpoint.pt` and is deleted after `report` returns (None for a diverged trial, whose weights
    are not worth keeping). `resume` is a checkpoint of this trial; `progress` wraps each epoch's
    batch iterator (a progress bar)."""
    trial = start(cfg, resume)
    if progress:
        trial.progress = progress
    return trial.run(report)
