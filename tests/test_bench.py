"""The benchmark runs and prints sane numbers (no timing thresholds), and its speed tricks (bf16
autocast, torch.compile) give the same results as fp32 eager within tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from bnsweep import bench
from bnsweep.data import batches
from bnsweep.train import Trial

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                        reason="needs CUDA")])


def test_quick_benchmark_prints_every_part(capsys):
    rows = bench.main(["--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "device cpu" in out and f"torch {torch.__version__}" in out
    for section in ("== efficiency", "== peers", "== eval"):
        assert section in out
    assert "== gpu: skipped (no CUDA device) ==" in out or torch.cuda.is_available()

    eff = rows["efficiency"]
    assert {(r["trainable"], r["k"]) for r in eff} == {(t, k) for t in ("all", "bn", "fc") for k in (1, 2)}
    for r in eff:
        for key in ("train_s", "grad_s", "pgd_s", "images_per_s", "ideal_ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)

    loops = {(r["trainable"], r["loop"]) for r in rows["peers"]}
    assert {("all", "bnsweep"), ("all", "reference"), ("bn", "bnsweep"), ("bn", "reference")} <= loops
    assert all(r["seconds"] > 0 and r["speedup"] > 0 for r in rows["peers"])

    survivors, every = rows["eval"]
    assert survivors["seconds"] > 0 and every["seconds"] > 0
    assert survivors["clean_acc"] == every["clean_acc"]
    assert all(0 <= v <= 1 for r in (survivors, every) for k, v in r.items() if k.endswith("acc") or "acc_" in k)


def test_quick_benchmark_runs_one_part(capsys):
    rows = bench.main(["--quick", "--device", "cpu", "--part", "efficiency", "--trainable", "bn",
                       "--steps", "1"])
    assert list(rows) == ["efficiency"] and len(rows["efficiency"]) == 1
    assert "== peers" not in capsys.readouterr().out


def test_throughput_table_runs_on_cpu():
    """The gpu part's measurement, on the CPU: device-resident uint8 data, augmentation, bf16."""
    rows = bench.throughput(torch.device("cpu"), ["resnet8"], steps=1, batch_size=16, n_batches=2, reps=1,
                            warmup=1, precisions=("fp32", "bf16"), compiles=(False,), width=0.25)
    assert [(r["precision"], r["compile"]) for r in rows] == [("fp32", False), ("bf16", False)]
    assert all(r["images_per_s"] > 0 and r["compile_s"] is None for r in rows)


def test_reference_loop_trains_only_the_chosen_set(tiny_config):
    trial = Trial(tiny_config(trainable="bn"))
    ref = bench.ReferenceLoop(trial.model, "bn", eps=8 / 255, alpha=2 / 255, steps=2)
    x, y = _batch(trial)
    conv_before = ref.model.conv1.weight.detach().clone()
    bn_before = ref.model.bn1.weight.detach().clone()
    ref.step(x, y)
    assert torch.equal(ref.model.conv1.weight, conv_before)  # has a gradient, but is not in the optimiser
    assert ref.model.conv1.weight.grad is not None
    assert not torch.equal(ref.model.bn1.weight, bn_before)


# -- speed tricks leave results unchanged --------------------------------------------------------

def _batch(trial: Trial) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = next(batches(trial.data.train_x, trial.data.train_y, 64, shuffle=False, augment=False))
    if trial.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _eval_logits(trial: Trial, x: torch.Tensor) -> torch.Tensor:
    trial.model.eval()
    with torch.no_grad(), trial.autocast():
        return trial.forward(x).float()


def _agree(tiny_config, device: str, logits_tol: float, loss_rtol: float, **fast) -> None:
    """Same seed, same batch: eval logits and one PGD training step's loss match fp32 eager."""
    base = dict(width=0.5, train_steps=2, device=device)
    ref, fast_trial = Trial(tiny_config(**base)), Trial(tiny_config(**base, **fast))
    x, y = _batch(ref)
    expected = _eval_logits(ref, x)
    torch.testing.assert_close(_eval_logits(fast_trial, x), expected,
                               atol=logits_tol * expected.abs().max().item(), rtol=0)
    loss_ref, correct_ref = ref.train_step(x, y, 0.1)
    loss_fast, correct_fast = fast_trial.train_step(x, y, 0.1)
    assert loss_fast.item() == pytest.approx(loss_ref.item(), rel=loss_rtol)
    assert abs(correct_fast.item() - correct_ref.item()) <= 2


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_bf16_agrees_with_fp32(tiny_config, device):
    _agree(tiny_config, device, logits_tol=0.03, loss_rtol=0.02, precision="bf16")


@pytest.mark.slow  # torch.compile on a 2-core CPU: about a minute
@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_compiled_agrees_with_eager(tiny_config, device):
    _agree(tiny_config, device, logits_tol=1e-3, loss_rtol=1e-3, compile=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_training_step_does_not_synchronise(tiny_config):
    """No host sync inside the batch loop: a PGD training step must not wait for the GPU."""
    trial = Trial(tiny_config(device="cuda", precision="bf16"))
    x, y = _batch(trial)
    trial.train_step(x, y, 0.1)  # first call: cuDNN set-up may synchronise
    torch.cuda.set_sync_debug_mode("error")
    try:
        trial.train_step(x, y, 0.1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("trainable", ["all", "bn"])
def test_attack_restores_the_trainable_set(tiny_config, trainable):
    """Attack steps freeze the trainable parameters (for torch.compile) and must hand them back."""
    trial = Trial(tiny_config(trainable=trainable))
    before = [p.requires_grad for p in trial.model.parameters()]
    trial.train_step(*_batch(trial), 0.1)
    assert [p.requires_grad for p in trial.model.parameters()] == before
