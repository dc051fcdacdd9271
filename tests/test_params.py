"""Which parameters train and which BatchNorm statistics move, checked on real training steps."""

from __future__ import annotations

import pytest
import torch

from bnsweep.core.attacks import pgd
from bnsweep.core.data import batches
from bnsweep.core.train import Trial
from bnsweep.core.trainable import bn_layers, bn_mode, count_params, trainable_names

STATS = ("running_mean", "running_var", "num_batches_tracked")


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_steps(trial: Trial, n: int = 2, lr: float = 0.1) -> None:
    data = trial.data
    for i, (x, y) in enumerate(batches(data.train_x, data.train_y, 64, shuffle=False, augment=False)):
        if i == n:
            break
        trial.train_step(x, y, lr)


def expected_trainable(model: torch.nn.Module, trainable: str) -> set[str]:
    """The intended set, spelled out independently of params.trainable_names."""
    names = [n for n, _ in model.named_parameters()]
    bn_modules = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    bn = {n for n in names if n.rsplit(".", 1)[0] in bn_modules}
    fc = {"fc.weight", "fc.bias"}
    return {"all": set(names), "bn": bn, "bn+fc": bn | fc, "fc": fc, "none": set()}[trainable]


@pytest.mark.parametrize("trainable", ["all", "bn", "bn+fc", "fc", "none"])
def test_exactly_the_chosen_parameters_train(tiny_config, trainable):
    trial = Trial(tiny_config(trainable=trainable, bn_stats="frozen", train_steps=1))
    model = trial.model
    chosen = expected_trainable(model, trainable)
    assert trainable_names(model, trainable) == chosen
    if trainable == "bn":
        assert chosen and all(n.endswith((".weight", ".bias")) and "conv" not in n for n in chosen)
        assert "fc.weight" not in chosen
    before = snapshot(model)
    train_steps(trial, n=2)
    after = model.state_dict()
    for name, p in model.named_parameters():
        if name in chosen:
            assert p.requires_grad, name
            assert not torch.equal(before[name], after[name]), f"{name} should have trained"
        else:
            assert not p.requires_grad, name
            assert p.grad is None, name
            assert torch.equal(before[name], after[name]), f"{name} is frozen but changed"
    # bn_stats: frozen -> running statistics (and every other buffer) are bit-identical
    for name in before:
        if name.endswith(STATS) or name.startswith("normalize."):
            assert torch.equal(before[name], after[name]), name
    n_trainable, n_params = count_params(model)
    assert n_trainable == sum(p.numel() for n, p in model.named_parameters() if n in chosen)
    assert n_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("trainable", ["bn", "none"])
def test_running_stats_move_only_with_bn_stats_update(tiny_config, trainable):
    for bn_stats in ("update", "frozen"):
        trial = Trial(tiny_config(trainable=trainable, bn_stats=bn_stats, train_steps=1))
        before = snapshot(trial.model)
        train_steps(trial, n=2)
        after = trial.model.state_dict()
        stat_names = [n for n in before if n.endswith(STATS)]
        assert stat_names
        changed = [n for n in stat_names if not torch.equal(before[n], after[n])]
        if bn_stats == "update":
            assert sorted(changed) == sorted(stat_names)
        else:
            assert changed == []


def test_attack_in_train_bn_mode_leaves_running_stats_and_modes(tiny_config):
    trial = Trial(tiny_config(attack_bn_mode="train", bn_stats="update"))
    model, layers = trial.model, bn_layers(trial.model)
    x = trial.data.train_x[:32].float() / 255
    y = trial.data.train_y[:32]
    seen: list[bool] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(m.training)) for m in layers]
    for start_training in (True, False):
        model.train(start_training)
        modes = [m.training for m in model.modules()]
        before = snapshot(model)
        seen.clear()
        with bn_mode(model, "train", "update"):
            assert all(m.training for m in layers)
            pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=3)
        assert seen and all(seen)  # the attack really used batch statistics
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert [m.training for m in model.modules()] == modes
        seen.clear()
        with bn_mode(model, "eval", "update"):
            pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=3)
        assert seen and not any(seen)
        assert [m.training for m in model.modules()] == modes
        # bn_stats frozen: even attack_bn_mode train keeps BN in eval mode
        seen.clear()
        with bn_mode(model, "train", "frozen"):
            pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=1)
        assert seen and not any(seen)
    for h in hooks:
        h.remove()


def test_eval_bn_mode_uses_running_stats(tiny_config):
    trial = Trial(tiny_config())
    model = trial.model
    train_steps(trial, n=2)  # running stats away from their (0, 1) initialisation
    x = trial.data.test_x[:16].float() / 255
    model.eval()
    with torch.no_grad():
        reference = model(x)
    model.train()
    before = snapshot(model)
    with torch.no_grad(), bn_mode(model, "eval", "update"):
        inside = model(x)
        with bn_mode(model, "train", "update"):
            batch_stats = model(x)
    torch.testing.assert_close(inside, reference)
    assert not torch.allclose(batch_stats, reference)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(m.training for m in bn_layers(model))


@pytest.mark.parametrize("attack_bn_mode", ["train", "eval"])
def test_one_training_step_moves_running_stats_once(tiny_config, attack_bn_mode):
    """The attack's forward passes (train_steps=3 of them) never count as BN updates."""
    trial = Trial(tiny_config(attack_bn_mode=attack_bn_mode, train_steps=3, trainable="bn"))
    train_steps(trial, n=2)
    for m in bn_layers(trial.model):
        assert m.num_batches_tracked.item() == 2


def test_bn_init_uniform(tiny_config):
    weights = torch.cat([m.weight.detach() for m in bn_layers(Trial(tiny_config(bn_init="uniform")).model)])
    assert weights.min() >= 0 and weights.max() <= 1
    assert weights.std() > 0.1  # not all equal: roughly U[0, 1] (std 0.29)
    ones = torch.cat([m.weight.detach() for m in bn_layers(Trial(tiny_config(bn_init="ones")).model)])
    assert torch.equal(ones, torch.ones_like(ones))
