"""PGD/FGSM stay in the threat model, take input-only gradients, and evaluation gets stronger, not weaker."""

from __future__ import annotations

import pytest
import torch

from bnsweep.core.attacks import pgd
from bnsweep.core.evaluate import eps_metric, evaluate
from bnsweep.core.models import build_model
from bnsweep.core.train import Trial
from bnsweep.core.trainable import bn_layers

ATTACKS = {
    "pgd": lambda m, x, y, eps, g: pgd(m, x, y, eps=eps, step=eps / 3, steps=4, generator=g),
    "pgd_restarts_best": lambda m, x, y, eps, g: pgd(m, x, y, eps=eps, step=eps / 2, steps=3, restarts=2,
                                                     keep_best=True, generator=g),
    "pgd_no_random_start": lambda m, x, y, eps, g: pgd(m, x, y, eps=eps, step=eps, steps=2, random_start=False),
    # FGSM as training runs it (train_attack: fgsm): one PGD step from a random start
    "fgsm": lambda m, x, y, eps, g: pgd(m, x, y, eps=eps, step=1.25 * eps, steps=1, generator=g),
}


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = build_model("resnet8", 10, width=0.25)
    model.eval()
    return model


def images_with_extremes(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 32, 32, generator=g)
    x[0] = 0.0
    x[1] = 1.0
    x[2, :, :16] = 0.0
    x[2, :, 16:] = 1.0
    x[3] = (x[3] > 0.5).float()  # every pixel at a bound
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("eps_255", [1, 8, 16, 64])
def test_adversarial_examples_stay_in_the_ball_and_in_range(small_model, attack, eps_255):
    x, y = images_with_extremes()
    eps = eps_255 / 255
    x_adv = ATTACKS[attack](small_model, x, y, eps, torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max() > 0.5 * eps  # it moved: the bounds are not met trivially


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_compute_no_parameter_gradients(attack):
    torch.manual_seed(0)
    model = build_model("resnet8", 10, width=0.25)
    model.train()  # BN in train mode too: the worst case for accidental graph building
    params = list(model.parameters())
    assert all(p.requires_grad for p in params)
    fired: list[int] = []
    hooks = [p.register_hook(lambda g, i=i: fired.append(i)) for i, p in enumerate(params)]
    x, y = images_with_extremes(8)
    ATTACKS[attack](model, x, y, 8 / 255, torch.Generator().manual_seed(0))
    assert fired == []
    assert all(p.grad is None for p in params)
    # control: the hooks do fire for an ordinary backward pass
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert len(set(fired)) == len(params)
    for h in hooks:
        h.remove()


def test_attack_does_not_touch_existing_parameter_gradients():
    torch.manual_seed(0)
    model = build_model("resnet8", 10, width=0.25).eval()
    x, y = images_with_extremes(8)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=3)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


@pytest.fixture(scope="module")
def trained():
    """A resnet8 trained cleanly for a few epochs: about 80% clean accuracy, attackable, not 0% robust."""
    trial = Trial(Trial_config())
    for _ in range(3):
        trial.train_epoch()
        trial.epoch += 1
    x, y = trial.eval_split()
    return trial.model, x, y


def Trial_config():
    from bnsweep.core.config import make_config

    return make_config(dict(dataset="planted", model="resnet8", width=0.5, n_train=512, n_test=128, eval_n=128,
                            epochs=3, batch_size=64, train_attack="none", device="cpu", final_attack="none"))


def test_more_steps_or_restarts_never_raise_robust_accuracy(trained):
    model, x, y = trained
    key = eps_metric(4.0)
    robust = {}
    for steps, restarts in [(1, 1), (3, 1), (10, 1), (3, 3), (10, 3)]:
        out = evaluate(model, x, y, eps_255=(4.0,), steps=steps, step_255=0.5, restarts=restarts, seed=0)
        assert out[key] <= out["clean_acc"]
        robust[steps, restarts] = out[key]
    clean = out["clean_acc"]
    assert robust[1, 1] >= robust[3, 1] >= robust[10, 1]
    assert robust[3, 1] >= robust[3, 3] and robust[10, 1] >= robust[10, 3]
    assert robust[10, 3] < robust[1, 1]  # the attack is not a no-op
    assert 0.5 < clean < 1.0
    assert 0.0 < robust[1, 1] < clean  # not trivially 0% or 100%


def test_robust_accuracy_non_increasing_in_eps(trained):
    model, x, y = trained
    radii = (0.0, 1.0, 2.0, 4.0, 8.0)
    out = evaluate(model, x, y, eps_255=radii, steps=3, step_255=0, restarts=1, seed=3)
    accs = [out[eps_metric(e)] for e in radii]
    assert out[eps_metric(0.0)] == out["clean_acc"]
    assert accs == sorted(accs, reverse=True)
    assert accs[-1] < accs[0]
    # the smallest attacked radius is the same attack as evaluating it alone
    alone = evaluate(model, x, y, eps_255=(1.0,), steps=3, step_255=0, restarts=1, seed=3)
    assert alone[eps_metric(1.0)] == out[eps_metric(1.0)]
    # the order in which radii are given does not matter
    assert evaluate(model, x, y, eps_255=tuple(reversed(radii)), steps=3, step_255=0, restarts=1, seed=3) == out


@pytest.mark.parametrize("start_training", [True, False])
def test_evaluate_runs_in_eval_mode_and_restores_mode(trained, start_training):
    model, x, y = trained
    model.train(start_training)
    modes = [m.training for m in model.modules()]
    seen: list[bool] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(m.training)) for m in bn_layers(model)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, x[:32], y[:32], eps_255=(8.0,), steps=2, step_255=0, restarts=1, seed=0)
    for h in hooks:
        h.remove()
    assert seen and not any(seen)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()


def _keep_best_on_every_example(model, x, y, *, eps, step, steps, restarts, generator):
    """Evaluation's PGD as it was before it dropped fooled examples: every step attacks the whole batch."""
    import torch.nn.functional as F

    from bnsweep.core.attacks import _project, _random_delta

    best_x, best_loss = x.clone(), torch.full((len(x),), -float("inf"))
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        delta = _random_delta(x, eps, generator)
        for _ in range(steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x + delta)
                grad, = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), [delta])
            newly = (logits.argmax(1) != y) & ~fooled
            best_x[newly] = (x + delta)[newly].detach()
            fooled |= newly
            delta = _project(x, delta.detach() + step * grad.sign(), eps)
        with torch.no_grad():
            logits = model(x + delta)
        loss_each, wrong = F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y
        take = ~fooled & (wrong | (loss_each > best_loss))
        best_x[take], best_loss = (x + delta)[take], torch.where(take, loss_each, best_loss)
        fooled |= take & wrong
    return best_x


@pytest.mark.parametrize("restarts", [1, 3])
def test_evaluation_attacks_only_what_is_not_fooled_yet_and_finds_the_same(trained, restarts):
    """keep_best=True stops attacking an example once it is fooled (its first misclassified iterate is
    kept either way), so later steps run on fewer examples and the adversarial examples are those of
    attacking every example every step."""
    from bnsweep.core.data import as_float

    model, x, y = trained
    x = as_float(x)
    was_training = model.training
    model.eval()
    sizes = []

    def counting(images):
        sizes.append(len(images))
        return model(images)

    args = dict(eps=8 / 255, step=2 / 255, steps=6, restarts=restarts)
    ours = pgd(counting, x, y, keep_best=True, generator=torch.Generator().manual_seed(3), **args)
    reference = _keep_best_on_every_example(model, x, y, generator=torch.Generator().manual_seed(3), **args)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert (model(ours).argmax(1) != y).sum() > 0  # it did fool some
    assert sizes[0] == len(x) and min(sizes) < len(x)  # and then attacked fewer
    model.train(was_training)
