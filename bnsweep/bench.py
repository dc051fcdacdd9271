"""`python -m bnsweep.bench`: how close PGD-k adversarial training comes to its ideal cost, on this device.

Cost model (notes/anchors.md B.6): a PGD-k training step needs k input-gradient passes (forward, then
backward to the input only) plus one training step; anything above that is overhead. A careless loop
also computes every parameter gradient in each attack step, and BN-only training that freezes by
leaving parameters out of the optimiser still computes every frozen convolution's weight gradient.

Parts (``--part``; each prints one section):

  efficiency  clean train step, input-gradient pass and PGD-k step per trainable set and k
  peers       bnsweep vs a fast_adversarial-style loop and torchattacks.PGD: same model, data, run
  gpu         images/s of PGD training on CUDA: fp32 vs bf16, eager vs torch.compile
  eval        robust evaluation attacking only still-correct examples vs attacking every example
  packing     aggregate images/s of 1, 2, 4, 8 trials sharing one GPU through Ray Tune (bench_sweep.py)
  overhead    share of a short-trial sweep's wall time spent computing, through Ray Tune (bench_sweep.py)

Every time is the median of ``--reps`` repetitions after ``--warmup`` calls, with the variants of a
section interleaved (A B C A B C ...) so that drift on a shared machine hits all of them alike. Data
is the synthetic, CIFAR-shaped ``planted`` set: timings do not depend on image content.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnsweep import bench_sweep
from bnsweep.config import TrialConfig, make_config
from bnsweep.data import Dataset, batches, load_dataset
from bnsweep.evaluate import correct_mask, eps_metric, evaluate, pgd_survivors
from bnsweep.params import bn_mode, frozen, trainable_names
from bnsweep.train import Trial, resolve_device

LR = 0.01  # timing only: small enough that repeated steps on one batch stay finite
Row = dict[str, Any]


# -- timing ------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(variants: dict[str, Callable[[], Any]], reps: int, warmup: int,
                 device: torch.device) -> dict[str, float]:
    """Median seconds per call of each variant; calls interleaved so drift hits every variant alike."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# -- shared setup ------------------------------------------------------------------------------

@dataclass
class Bench:
    """What every part shares: options, device, one data set and one fixed training batch."""

    args: argparse.Namespace
    device: torch.device
    data: Dataset
    x: torch.Tensor
    y: torch.Tensor

    def config(self, **overrides: Any) -> TrialConfig:
        a = self.args
        return make_config({"dataset": "planted", "model": a.model, "width": a.width,
                            "batch_size": a.batch_size, "device": str(self.device), "train_eps_255": 8,
                            "train_step_255": 2, "eval_n": a.eval_n, "precision": a.precision,
                            "compile": a.compile, **overrides})

    def trial(self, **overrides: Any) -> Trial:
        return Trial(self.config(**overrides), data=self.data)

    def times(self, variants: dict[str, Callable[[], Any]], reps: int | None = None) -> dict[str, float]:
        return median_times(variants, reps or self.args.reps, self.args.warmup, self.device)


def setup(args: argparse.Namespace) -> Bench:
    device = resolve_device(args.device)
    data = load_dataset("planted", data_dir="data", download=False, n_train=max(args.n_train, args.batch_size),
                        n_test=args.eval_n, data_seed=0, device=device)
    x, y = next(batches(data.train_x, data.train_y, args.batch_size, shuffle=False, augment=False))
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return Bench(args, device, data, x, y)


def with_config(trial: Trial, cfg: TrialConfig, x: torch.Tensor, y: torch.Tensor) -> Any:
    """`trial.train_step` under another config (same model and optimiser; only attack keys differ)."""
    base, trial.cfg = trial.cfg, cfg
    try:
        return trial.train_step(x, y, LR)
    finally:
        trial.cfg = base


def input_gradient(trial: Trial, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One attack step's model work: forward and backward to the input only, in the attack's BN
    mode and precision (the unit of the cost model). Parameters are frozen for the pass because a
    torch.compile'd backward computes weight gradients even when only the input's is requested."""
    cfg = trial.cfg
    with bn_mode(trial.model, cfg.attack_bn_mode, cfg.bn_stats), frozen(trial.params):
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
            "train": lambda: trial.train_step(b.x, b.y, LR),
            "grad": lambda: input_gradient(trial, b.x, b.y)}
        for k in b.args.steps:
            cfg = dataclasses.replace(trial.cfg, train_attack="pgd", train_steps=k)
            variants[f"pgd{k}"] = lambda cfg=cfg: with_config(trial, cfg, b.x, b.y)
        t = b.times(variants)
        for k in b.args.steps:
            measured = t[f"pgd{k}"]
            row = {"trainable": trainable, "k": k, "train_s": t["train"], "grad_s": t["grad"],
                   "pgd_s": measured, "images_per_s": len(b.y) / measured,
                   "ideal_ratio": (k * t["grad"] + t["train"]) / measured}
            rows.append(row)
            print(f"{trainable:<10}{k:>4}{1e3 * row['train_s']:>10.1f}{1e3 * row['grad_s']:>10.1f}"
                  f"{1e3 * measured:>10.1f}{row['images_per_s']:>9.0f}{row['ideal_ratio']:>16.2f}")
    print(f"lowest ideal/measured: {min(r['ideal_ratio'] for r in rows):.2f} (target >= 0.9)")
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
            "bnsweep": lambda: trial.train_step(b.x, b.y, LR),
            "reference": lambda: reference.step(b.x, b.y)}
        ta = torchattacks_step(trial, k)
        if ta is not None:
            variants["torchattacks"] = lambda: ta(b.x, b.y)
        t = b.times(variants)
        for loop, seconds in t.items():
            row = {"trainable": trainable, "loop": loop, "k": k, "seconds": seconds,
                   "images_per_s": len(b.y) / seconds, "speedup": seconds / t["bnsweep"]}
            rows.append(row)
            print(f"{trainable:<10}{loop:<14}{1e3 * seconds:>10.1f}{row['images_per_s']:>9.0f}"
                  f"{row['speedup']:>17.2f}x")
        if ta is None:
            print(f"{trainable:<10}{'torchattacks':<14}  skipped: torchattacks is not installed")
    print("speed-up = peer time / bnsweep time (target vs reference at k = 7: >= 1.3x for all, more for bn)")
    return rows


# -- part: gpu ---------------------------------------------------------------------------------

def synthetic_cifar(n: int, device: torch.device, seed: int = 0) -> Dataset:
    """Random CIFAR-shaped uint8 images resident on `device`, with flip+crop augmentation on."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset(train_x=x.to(device), train_y=y.to(device), test_x=x[:256].to(device),
                   test_y=y[:256].to(device), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3,
                   augment=True)


def throughput(device: torch.device, models: Sequence[str], *, steps: int, batch_size: int, n_batches: int,
               reps: int, warmup: int, precisions: Sequence[str] = ("fp32", "bf16"),
               compiles: Sequence[bool] = (False, True), width: float = 1.0) -> list[Row]:
    """Images/s of `Trial.train_epoch` (device-resident uint8 data, augmentation on the device,
    channels_last on CUDA, PGD-`steps`) per model x precision x compile, epochs interleaved.

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
    t = b.times({name: lambda name=name, fn=fn: results.__setitem__(name, fn(trial.model, x, y, **kw))
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


# -- main --------------------------------------------------------------------------------------

PARTS: dict[str, Callable[[Bench], list[Row]]] = {
    "efficiency": efficiency, "peers": peers, "gpu": gpu, "eval": evaluation,
    "packing": bench_sweep.packing, "overhead": bench_sweep.overhead}
QUICK = dict(**bench_sweep.QUICK, model="resnet8", width=0.25, batch_size=32, steps=[1, 2], peer_steps=2, reps=2, warmup=0,
             n_train=64, eval_n=32, eval_steps=2, eval_epochs=1, gpu_batches=2, gpu_batch_size=32)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({cpu_name()}, {torch.get_num_threads()} threads)"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bnsweep.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", choices=list(PARTS), default=list(PARTS), help="sections to run")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="efficiency/peers/eval trials")
    p.add_argument("--compile", action="store_true", help="efficiency/peers/eval trials use torch.compile")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 3, 7, 10], help="PGD steps k (efficiency)")
    p.add_argument("--trainable", nargs="+", default=["all", "bn", "fc"], choices=["all", "bn", "bn+fc", "fc"])
    p.add_argument("--peer-steps", type=int, default=7, help="PGD steps k of the peer comparison")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (the median is shown)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant first")
    p.add_argument("--n-train", type=int, default=2048, help="planted training images (eval part's model)")
    p.add_argument("--eval-n", type=int, default=256, help="test examples of the eval part")
    p.add_argument("--eval-eps", type=float, nargs="+", default=[2, 4, 8], help="radii in 1/255")
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-epochs", type=int, default=2, help="clean epochs that train the eval part's model")
    p.add_argument("--gpu-models", nargs="+", default=["resnet20", "preact_resnet18"])
    p.add_argument("--gpu-batch-size", type=int, default=512)
    p.add_argument("--gpu-batches", type=int, default=20, help="batches per timed epoch (gpu part)")
    p.add_argument("--gpu-eager-only", action="store_true", help="gpu part: skip torch.compile")
    bench_sweep.add_arguments(p)
    p.add_argument("--quick", action="store_true", help="tiny defaults: checks that every part runs (tests)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # flags given explicitly still win
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, list[Row]]:
    args = parse_args(argv)
    b = setup(args)
    print(f"bnsweep bench | device {describe(b.device)} | torch {torch.__version__} | python {platform.python_version()}")
    print(f"model {args.model} width {args.width:g}, batch {args.batch_size}, {args.precision}"
          f"{', compiled' if args.compile else ''}, planted CIFAR-shaped data; "
          f"median of {args.reps} reps after {args.warmup} warm-up, variants interleaved")
    return {part: PARTS[part](b) for part in args.part}


if __name__ == "__main__":
    main(sys.argv[1:])
