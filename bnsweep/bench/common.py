"""Shared by the benchmark parts: timing, the benchmark's trial set-up, and the hardware line."""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Mapping, TypeVar

import torch

from bnsweep.core.config import TrialConfig, make_config
from bnsweep.core.cpuinfo import cpu_name
from bnsweep.core.data import Dataset, batches, load_dataset
from bnsweep.core.train import Trial, resolve_device

LR = 0.01  # timing only: small enough that repeated steps on one batch stay finite
Row = dict[str, Any]


# -- timing ------------------------------------------------------------------------------------

def target(value: float, goal: str, scope: str = "") -> str:
    """A printed target with this run's verdict: `(target >= 0.9: met)`, or `MISSED`, so a reader
    of a benchmark record sees which targets held without redoing the comparison. `goal` is `>= X`
    or `<= X`; `scope` says where the target applies (`for trials of 30 s or more`)."""
    op, bound = goal.split()
    met = value >= float(bound) if op == ">=" else value <= float(bound)
    return f"(target {goal}{' ' + scope if scope else ''}: {'met' if met else 'MISSED'})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

K = TypeVar("K", bound=Hashable)  # what names a variant in a timing


def median_times(variants: Mapping[K, Callable[[], Any]], reps: int, warmup: int,
                 device: torch.device) -> dict[K, float]:
    """Median seconds per call of each variant; calls interleaved so drift hits every variant alike."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[K, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@contextmanager
def ray_session() -> Iterator[None]:
    """A local Ray for a part (`bnsweep.sweep.driver.connect`), shut down afterwards unless it was
    running before: a caller that holds one (the tests' session) keeps it and its start-up time."""
    import ray

    from bnsweep.sweep.driver import connect

    ours = not ray.is_initialized()
    connect(None)
    try:
        yield
    finally:
        if ours:
            ray.shutdown()


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
    return Bench(args, device, data, x.contiguous(memory_format=torch.channels_last), y)


def with_config(trial: Trial, cfg: TrialConfig, x: torch.Tensor, y: torch.Tensor) -> Any:
    """`trial.train_step` under another config (same model and optimiser; only attack keys differ)."""
    base, trial.cfg = trial.cfg, cfg
    try:
        return trial.train_step(x, y, LR)
    finally:
        trial.cfg = base


def synthetic_cifar(n: int, device: torch.device, seed: int = 0) -> Dataset:
    """Random CIFAR-shaped uint8 images resident on `device`, with flip+crop augmentation on."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset(train_x=x.to(device), train_y=y.to(device), test_x=x[:256].to(device),
                   test_y=y[:256].to(device), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3,
                   augment=True)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({cpu_name()}, {torch.get_num_threads()} threads)"
