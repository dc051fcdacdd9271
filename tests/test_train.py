"""fit(): per-epoch reports with the contract's metric names, exact resume, attacks, divergence, checkpoints."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil

import pytest
import torch
from _experiments import TIMING

import bnsweep.core.train
from bnsweep.core import checkpoints
from bnsweep.core.attacks import pgd as real_pgd
from bnsweep.core.config import ConfigError, make_config
from bnsweep.core.data import batches
from bnsweep.core.train import Trial, fit


class Recorder:
    """A `report` callback that keeps every metrics dict and a copy of every checkpoint."""

    def __init__(self, tmp_path, name="run"):
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.metrics: list[dict] = []
        self.checkpoints: list[str | None] = []

    def __call__(self, metrics, checkpoint_dir):
        self.metrics.append(dict(metrics))
        if checkpoint_dir is None:
            self.checkpoints.append(None)
            return
        assert sorted(os.listdir(checkpoint_dir)) == [checkpoints.FILENAME]
        copy = str(self.dir / f"epoch{metrics['epoch']}.pt")
        shutil.copyfile(os.path.join(checkpoint_dir, checkpoints.FILENAME), copy)
        self.checkpoints.append(copy)


def test_reports_once_per_epoch_with_contract_metric_names(tiny_config, tmp_path):
    cfg = tiny_config(epochs=2, train_eps_255=4, eval_eps_255=[2, 8], final_attack="pgd", trainable="bn+fc")
    rec = Recorder(tmp_path)
    final = fit(cfg, rec)
    assert [m["epoch"] for m in rec.metrics] == [1, 2]
    every = {"epoch", "train_loss", "train_acc", "clean_acc", "robust_acc", "robust_acc_eps2", "robust_acc_eps8",
             "lr", "images_per_s", "train_s", "epoch_s", "n_trainable_params", "n_params", "trainable_groups", "precision",
             "compile"}
    assert set(rec.metrics[0]) == every
    assert set(rec.metrics[1]) == every | {"final_clean_acc", "final_robust_acc", "final_attack"}
    assert final == rec.metrics[-1]
    last = rec.metrics[-1]
    assert last["final_attack"] == "pgd"
    for m in rec.metrics:
        assert (m["precision"], m["compile"]) == ("fp32", False)  # what the trial ran with
        for key in every - {"epoch", "n_trainable_params", "n_params", "trainable_groups", "precision", "compile"}:
            assert isinstance(m[key], float), key
        for key in ("train_acc", "clean_acc", "robust_acc", "robust_acc_eps2", "robust_acc_eps8"):
            assert 0.0 <= m[key] <= 1.0
        assert m["robust_acc_eps8"] <= m["robust_acc_eps2"] <= m["clean_acc"]
        assert 0 < m["n_trainable_params"] < m["n_params"]
        assert m["trainable_groups"] == "bn+fc"
    assert 0.0 <= last["final_robust_acc"] <= last["final_clean_acc"] <= 1.0
    # every epoch's checkpoint is a loadable bnsweep checkpoint of this trial at that epoch
    for epoch, path in enumerate(rec.checkpoints, start=1):
        state = checkpoints.load(path)
        assert state["epoch"] == epoch
        assert state["config"] == cfg.to_dict()
        assert [m["epoch"] for m in state["metrics"]] == list(range(1, epoch + 1))


def test_robust_acc_uses_first_eval_radius_when_training_is_clean(tiny_config, tmp_path):
    rec = Recorder(tmp_path)
    fit(tiny_config(train_attack="none", eval_eps_255=[3, 1]), rec)
    m = rec.metrics[0]
    assert m["robust_acc"] == m["robust_acc_eps3"]
    assert {"robust_acc_eps1", "robust_acc_eps3"} <= set(m) and "robust_acc_eps8" not in m


@pytest.mark.parametrize("overrides", [dict(trainable="all"), dict(trainable="bn", attack_bn_mode="train")])
def test_resumed_run_matches_uninterrupted_run(tiny_config, tmp_path, overrides):
    cfg = tiny_config(epochs=2, final_attack="pgd", **overrides)
    full = Recorder(tmp_path, "full")
    fit(cfg, full)
    resumed = Recorder(tmp_path, "resumed")
    fit(cfg, resumed, resume=full.checkpoints[0])  # as if interrupted after epoch 1
    assert [m["epoch"] for m in resumed.metrics] == [2]

    def no_timing(m):
        return {k: v for k, v in m.items() if k not in TIMING}

    # Bit-identical on the CPU; CUDA's non-deterministic kernels (cuDNN, atomics) allow rounding noise.
    exact = cfg.device == "cpu"

    def same(key, x, y):
        if exact or not isinstance(x, float):
            return x == y
        return x == pytest.approx(y, abs=2 / cfg.eval_n if "acc" in key else 1e-3, rel=1e-3)

    def assert_same_metrics(m1, m2):
        m1, m2 = no_timing(m1), no_timing(m2)
        assert m1.keys() == m2.keys() and all(same(k, m1[k], m2[k]) for k in m1), (m1, m2)

    assert_same_metrics(resumed.metrics[0], full.metrics[1])
    a, b = checkpoints.load(full.checkpoints[1]), checkpoints.load(resumed.checkpoints[0])
    assert a["config"] == b["config"] == cfg.to_dict()
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        if exact or not a["model"][k].is_floating_point():
            assert torch.equal(a["model"][k], b["model"][k]), k
        else:
            torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-3, rtol=1e-3, msg=k)
    for m1, m2 in zip(a["metrics"], b["metrics"], strict=True):
        assert_same_metrics(m1, m2)
    # resuming a finished trial trains nothing more
    again = Recorder(tmp_path, "again")
    assert no_timing(fit(cfg, again, resume=full.checkpoints[1])) == no_timing(full.metrics[1])
    assert again.metrics == []


def test_train_attack_none_never_attacks(tiny_config, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("train_attack: none must not call the attack")

    monkeypatch.setattr(bnsweep.core.train, "pgd", boom)
    rec = Recorder(tmp_path)
    fit(tiny_config(train_attack="none"), rec)
    assert rec.metrics[0]["train_loss"] > 0
    with pytest.raises(AssertionError, match="must not call"):
        fit(tiny_config(train_attack="pgd"), Recorder(tmp_path, "control"))


@pytest.mark.parametrize("train_attack, adv_fraction, expected", [
    ("pgd", 0.5, 32), ("pgd", 1.0, 64), ("fgsm", 0.5, 32), ("pgd", 0.0, 0)])
def test_adv_fraction_attacks_that_share_of_each_batch(tiny_config, monkeypatch, train_attack, adv_fraction,
                                                       expected):
    calls = []

    def recording_pgd(model, x, y, **kw):
        calls.append((x.clone(), kw["steps"]))
        return real_pgd(model, x, y, **kw)

    monkeypatch.setattr(bnsweep.core.train, "pgd", recording_pgd)
    trial = Trial(tiny_config(train_attack=train_attack, adv_fraction=adv_fraction, train_steps=3))
    x, y = trial.data.train_x[:64].float() / 255, trial.data.train_y[:64]
    inputs = []
    handle = trial.model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    trial.model.train()
    trial.train_step(x, y, lr=0.1)
    handle.remove()
    if expected == 0:
        assert calls == []
        assert torch.equal(inputs[-1], x)
        return
    assert len(calls) == 1
    attacked, steps = calls[0]
    assert torch.equal(attacked, x[:expected])
    assert steps == (1 if train_attack == "fgsm" else 3)
    trained_on = inputs[-1]  # the training forward pass comes after the attack's
    assert trained_on.shape == x.shape
    assert torch.equal(trained_on[expected:], x[expected:])  # the rest stays clean
    delta = (trained_on[:expected] - x[:expected]).abs()
    assert delta.max() <= 8 / 255 + 1e-6 and delta.max() > 4 / 255


@pytest.mark.parametrize("n_train", [64, 128])  # 64: the blow-up happens in the epoch's only step
@pytest.mark.parametrize("trainable", ["all", "bn"])
def test_huge_learning_rate_stops_as_diverged(tiny_config, tmp_path, n_train, trainable):
    cfg = dataclasses.replace(tiny_config(n_train=n_train, epochs=3, trainable=trainable, train_steps=1),
                              lr=1e30, schedule="constant")  # beyond make_config's lr range on purpose
    rec = Recorder(tmp_path)
    final = fit(cfg, rec)
    assert len(rec.metrics) == 1 and rec.checkpoints == [None]
    assert final["diverged"] is True and final["epoch"] == 1
    assert isinstance(final["diverged_reason"], str) and final["diverged_reason"]
    assert not {"clean_acc", "robust_acc", "train_acc"} & set(final)


def test_moderate_learning_rate_does_not_report_divergence(tiny_config, tmp_path):
    rec = Recorder(tmp_path)
    fit(tiny_config(n_train=64), rec)
    assert "diverged" not in rec.metrics[0]


def save_trial_checkpoint(cfg, path) -> Trial:
    trial = Trial(cfg)
    checkpoints.save(str(path), trial.state())
    return trial


@pytest.mark.parametrize("other", [dict(width=0.5), dict(model="resnet20")])
def test_init_from_another_architecture_is_refused(tiny_config, tmp_path, other):
    path = tmp_path / "ckpt.pt"
    save_trial_checkpoint(tiny_config(), path)
    with pytest.raises(ConfigError) as err:
        Trial(tiny_config(init=str(path), **other))
    assert err.value.key == "init"
    assert str(err.value).startswith("init:")


def test_init_from_checkpoint_loads_its_weights(tiny_config, tmp_path):
    path = tmp_path / checkpoints.FILENAME
    source = save_trial_checkpoint(tiny_config(seed=1), path)
    target = Trial(tiny_config(seed=2, init=str(path), trainable="bn"))
    fresh = Trial(tiny_config(seed=2))
    src, dst = source.model.state_dict(), target.model.state_dict()
    assert all(torch.equal(src[k], dst[k]) for k in src)
    assert not torch.equal(fresh.model.conv1.weight, dst["conv1.weight"])
    # a checkpoint directory (as Ray Tune hands them out) works too
    assert Trial(tiny_config(init=str(tmp_path))).model.state_dict()["fc.weight"].equal(src["fc.weight"])


class Evil:
    """Unpickling this runs os.mkdir(marker): a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_running_checkpoint_is_refused_and_never_runs(tiny_config, tmp_path, writer):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.pt")
    state = {"format": checkpoints.FORMAT, "model": {"x": Evil(marker)}, "config": {}}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(state, fh)
    with pytest.raises(ConfigError) as err:
        checkpoints.load(path)
    assert err.value.key == "init"
    with pytest.raises(ConfigError) as err:
        Trial(tiny_config(init=path))
    assert err.value.key == "init"
    with pytest.raises(ConfigError):
        fit(tiny_config(), lambda m, d: None, resume=path)
    assert not os.path.exists(marker)
    # control: the file really does run code when loaded without weights_only
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as fh:
            pickle.load(fh)
    assert os.path.isdir(marker)


def test_non_checkpoint_files_are_refused(tmp_path):
    for name, content in [("empty.pt", b""), ("text.pt", b"not a checkpoint\n")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ConfigError):
            checkpoints.load(str(path))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="not one"):
        checkpoints.load(str(tmp_path / "foreign.pt"))
    with pytest.raises(ConfigError) as err:
        checkpoints.load(str(tmp_path / "missing.pt"), key="resume")
    assert err.value.key == "resume"


def test_make_config_refuses_missing_init_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        make_config({"init": str(tmp_path / "nope.pt")})
    assert err.value.key == "init"


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                        reason="needs CUDA")])


# -- speed tricks (bf16, torch.compile, no host sync) leave results unchanged --------------------------------------------------------

def _batch(trial: Trial) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = next(batches(trial.data.train_x, trial.data.train_y, 64, shuffle=False, augment=False))
    return x.contiguous(memory_format=torch.channels_last), y


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
