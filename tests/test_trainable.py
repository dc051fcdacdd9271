"""Which parameters train and which BatchNorm statistics move, checked on real training steps."""

from __future__ import annotations

import pytest
import torch

from bnsweep.core.attacks import pgd
from bnsweep.core.data import batches
from bnsweep.core.models import build_model, skeleton
from bnsweep.core.train import Trial
from bnsweep.core.trainable import (
    KINDS,
    SelectionError,
    bn_layers,
    bn_mode,
    count_params,
    describe,
    groups,
    trainable_names,
)

STATS = ("running_mean", "running_var", "num_batches_tracked")
# (model, width): every architecture family, small; wrn-16-2 has a shortcut convolution in stage 1
MODELS = [("resnet8", 0.25), ("resnet20", 0.25), ("preact_resnet18", 0.125), ("wrn-16-2", 0.25)]


def listing(model: str, width: float, classes: int = 10) -> dict[str, tuple[str, str, int]]:
    """{parameter name: (kind, place, number of values)}, written out from the architectures'
    definitions (He et al.'s CIFAR ResNets, PreActResNet-18, WRN-D-K) by channel arithmetic,
    independently of the module walk in bnsweep.core.trainable."""
    out: dict[str, tuple[str, str, int]] = {}

    def ch(base: int) -> int:
        return max(1, round(base * width))

    def conv(name: str, place: str, c_in: int, c_out: int, k: int = 3) -> None:
        out[f"{name}.weight"] = ("conv", place, c_in * c_out * k * k)

    def bn(name: str, place: str, c: int) -> None:
        out[f"{name}.weight"] = out[f"{name}.bias"] = ("bn", place, c)

    preact = not model.startswith("resnet")
    if model == "preact_resnet18":
        stem_c, widths, blocks = ch(64), [ch(64), ch(128), ch(256), ch(512)], 2
    elif model.startswith("wrn"):
        depth, k = (int(x) for x in model.split("-")[1:])
        stem_c, widths, blocks = ch(16), [ch(16 * k), ch(32 * k), ch(64 * k)], (depth - 4) // 6
    else:
        stem_c, widths, blocks = ch(16), [ch(16), ch(32), ch(64)], (int(model[6:]) - 2) // 6
    conv("conv1", "stem", 3, stem_c)
    if not preact:
        bn("bn1", "stem", stem_c)  # post-activation: the stem is conv + BN
    c_in = stem_c
    for s, c_out in enumerate(widths, start=1):
        for i in range(blocks):
            block, place, c = f"layer{s}.{i}", f"stage{s}", c_in if i == 0 else c_out
            if preact:  # BN before each convolution, on its input
                bn(f"{block}.bn1", place, c)
                conv(f"{block}.conv1", place, c, c_out)
                bn(f"{block}.bn2", place, c_out)
                conv(f"{block}.conv2", place, c_out, c_out)
            else:
                conv(f"{block}.conv1", place, c, c_out)
                bn(f"{block}.bn1", place, c_out)
                conv(f"{block}.conv2", place, c_out, c_out)
                bn(f"{block}.bn2", place, c_out)
            if i == 0 and (s > 1 or c != c_out):  # downsampling or widening: 1x1 projection
                conv(f"{block}.shortcut" + ("" if preact else ".0"), place, c, c_out, k=1)
                if not preact:
                    bn(f"{block}.shortcut.1", place, c_out)
        c_in = c_out
    if preact:
        bn("bn", "head", c_in)  # the BN after the last stage, before the classifier
    out["fc.weight"], out["fc.bias"] = ("fc", "head", c_in * classes), ("fc", "head", classes)
    return out


def pick(entries: dict[str, tuple[str, str, int]], kind: str | None = None, place: str | None = None) -> set[str]:
    return {n for n, (k, p, _) in entries.items() if kind in (None, k) and place in (None, p)}


def numel(model: torch.nn.Module, names: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n in names)


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


TINY = listing("resnet8", 0.25)  # tiny_config's model
CUTS = {  # expressions beyond the five sets, and what they select in TINY
    "bn@stage3+fc": pick(TINY, "bn", "stage3") | pick(TINY, "fc"),
    "all-stem": set(TINY) - pick(TINY, place="stem"),
    "stage3+fc": pick(TINY, place="stage3") | pick(TINY, "fc"),
    "conv": pick(TINY, "conv"),
    "glob:layer3.*.bn*": {n for n in pick(TINY, "bn", "stage3") if ".shortcut." not in n},
}


@pytest.mark.parametrize("trainable", ["all", "bn", "bn+fc", "fc", "none", *CUTS])
def test_exactly_the_chosen_parameters_train(tiny_config, trainable):
    trial = Trial(tiny_config(trainable=trainable, bn_stats="frozen", train_steps=1))
    model = trial.model
    chosen = CUTS[trainable] if trainable in CUTS else expected_trainable(model, trainable)
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


@pytest.mark.parametrize("model, width", MODELS)
def test_every_named_group_selects_the_listed_parameters(model, width):
    net = build_model(model, 10, width=width)
    entries = listing(model, width)
    assert {n: p.numel() for n, p in net.named_parameters()} == {n: e[2] for n, e in entries.items()}
    stages = sorted({p for _, p, _ in entries.values() if p.startswith("stage")})
    places = ["stem", *stages, "head"]
    expected = {"all": set(entries), **{k: pick(entries, k) for k in KINDS}, **{p: pick(entries, place=p) for p in places},
                "bn+fc": pick(entries, "bn") | pick(entries, "fc")}
    assert list(groups(net)) == ["all", "none", *KINDS, *places]
    for group, names in expected.items():
        assert trainable_names(net, group) == names, group
        assert numel(net, trainable_names(net, group)) == sum(entries[n][2] for n in names), group
    for kind in KINDS:
        for place in places:
            cell = pick(entries, kind, place)
            if cell:
                assert trainable_names(net, f"{kind}@{place}") == cell
            else:  # e.g. bn@stem of a pre-activation net: its first BN is in stage 1
                with pytest.raises(SelectionError, match="matches no parameter"):
                    trainable_names(net, f"{kind}@{place}")
    assert trainable_names(net, "none") == set()
    # the meta-device skeleton that validates configs has the same names and shapes
    meta = skeleton(model, width=width)
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [(n, p.shape) for n, p in net.named_parameters()]
    assert groups(meta) == groups(net)


def test_minus_removes_and_terms_apply_left_to_right():
    net = build_model("resnet8", 10, width=0.25)
    bn, stem, stage1 = pick(TINY, "bn"), pick(TINY, place="stem"), pick(TINY, place="stage1")
    assert trainable_names(net, "all-stem") == set(TINY) - stem
    assert trainable_names(net, "bn-stem") == bn - stem
    assert trainable_names(net, "all-stage1+bn@stage1") == (set(TINY) - stage1) | pick(TINY, "bn", "stage1")
    assert trainable_names(net, "all-stage1-stem+glob:conv1.*") == set(TINY) - stage1 - stem | {"conv1.weight"}
    assert trainable_names(net, "glob:layer[1-2].*") == stage1 | pick(TINY, place="stage2")  # - in a class
    for expression, term, problem in [("all-stem-stem", "-stem", "removes nothing"), ("bn+bn@stage1", "bn@stage1", "adds nothing"),
                                      ("-stem", "-stem", "start with what to keep"), ("bn+", "", "empty"),
                                      ("bnn", "bnn", "names no group"), ("glob:layer[1", "glob:layer[1", "not a glob"),
                                      ("stage1@stem", "stage1@stem", "before @"), ("bn@stage4", "bn@stage4", "after @")]:
        with pytest.raises(SelectionError, match=problem) as err:
            trainable_names(net, expression)
        assert err.value.term == term
    preact = build_model("preact_resnet18", 10, width=0.125)
    with pytest.raises(SelectionError, match="removes nothing"):  # its stem has no BN: bn-stem would equal bn
        trainable_names(preact, "bn-stem")


@pytest.mark.parametrize("model, width", MODELS)
def test_trainable_groups_name_a_selection_the_same_way_whatever_expression_made_it(model, width):
    net = build_model(model, 10, width=width)
    n_stages = len([g for g in groups(net) if g.startswith("stage")])
    expressions = ["all", "none", "bn", "bn+fc", "fc+bn", "fc", "conv", "all-stem", f"stage{n_stages}+fc",
                   f"bn@stage{n_stages}+fc", "bn-bn@stage1", "all-conv", "stage1+stage2-conv@stage2"]
    for expression in expressions:
        chosen = trainable_names(net, expression)
        text = describe(net, chosen)
        assert trainable_names(net, text) == chosen, (expression, text)  # itself an expression for it
    assert describe(net, trainable_names(net, "bn+fc")) == describe(net, trainable_names(net, "fc+bn")) == "bn+fc"
    assert describe(net, trainable_names(net, "all-conv")) == "bn+fc"
    assert describe(net, trainable_names(net, "glob:layer1.0.bn1.*")) == f"bn@stage1(2/{len(pick(listing(model, width), 'bn', 'stage1'))})"


@pytest.mark.parametrize("trainable, moving", [("bn@stage2", "layer2."), ("conv", None)])
def test_bn_stats_selected_moves_only_the_selected_bn_layers(tiny_config, trainable, moving):
    """With attack_bn_mode train, the attack uses batch statistics exactly where training does."""
    trial = Trial(tiny_config(trainable=trainable, bn_stats="selected", attack_bn_mode="train", train_steps=2))
    before = snapshot(trial.model)
    seen: dict[str, list[bool]] = {}
    for name, m in trial.model.named_modules():
        if m in bn_layers(trial.model):
            m.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, []).append(m.training))
    train_steps(trial, n=2)
    for name, m in trial.model.named_modules():
        if m not in bn_layers(trial.model):
            continue
        selected = moving is not None and name.startswith(moving)
        assert m.num_batches_tracked.item() == (2 if selected else 0), name
        assert torch.equal(before[f"{name}.running_mean"], m.running_mean) != selected, name
        assert set(seen[name]) == {selected}, name  # batch statistics in attack and training, or never


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


def test_layers_command_prints_groups_and_a_selection(capsys):
    from bnsweep.cli import main

    entries = listing("resnet8", 0.5)
    assert main(["layers", "resnet8", "--width", "0.5", "--trainable", "bn@stage3+fc"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:8]}
    assert list(rows) == ["stem", "stage1", "stage2", "stage3", "head", "all"]
    for place, cells in rows.items():  # columns bn, conv, fc, all; a cell KIND@PLACE
        for kind, cell in zip([*KINDS, None], cells):
            names = pick(entries, kind, None if place == "all" else place)
            assert cell == (f"{sum(entries[n][2] for n in names):,}" if names else "-"), (place, kind)
    chosen = pick(entries, "bn", "stage3") | pick(entries, "fc")
    assert all(f"  {name} " in out for name in chosen)
    assert out.count("layer") == len(chosen) - 2  # no other parameter is listed
    total = sum(e[2] for e in entries.values())
    assert f"{len(chosen)} tensor(s), {sum(entries[n][2] for n in chosen):,} of {total:,} parameters" in out
