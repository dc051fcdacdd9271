"""The shipped sweep files validate, and say what the docs and the study promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bnsweep.cli import main
from bnsweep.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted((ROOT / "sweeps").rglob("*.yaml"))
CIFAR10_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"  # ../shared/data


@pytest.fixture(autouse=True)
def data_present(monkeypatch):
    """The paper sweep names a cluster's CIFAR directory; validation checks its files (tested in
    test_bad_input.py), which this machine need not have."""
    from bnsweep.core import data

    monkeypatch.setattr(data, "missing_files", lambda name, data_dir: None)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweep_validates(path, capsys):
    argv = ["validate", str(path)]
    if yaml.safe_load(path.read_text())["trial"]["dataset"] == "folder":  # the data must be there
        if not CIFAR10_JPEG.exists():
            pytest.skip(f"the JPEG copy of CIFAR-10 is not at {CIFAR10_JPEG}")
        argv += ["--set", f"data_dir={CIFAR10_JPEG}"]
    assert main(argv) == 0
    assert "trial(s) in all" in capsys.readouterr().out


def test_laptop_sweep_is_the_study_on_real_images(tmp_path):
    from test_folder import make_tree

    make_tree(tmp_path / "tree")  # a stand-in for the data: the file's sizes are checked below
    laptop = load_sweep(str(ROOT / "sweeps" / "cifar10-laptop.yaml"),
                        {"data_dir": str(tmp_path / "tree"), "n_train": 12, "n_test": 6})
    pre, adv = laptop.stages
    assert pre.base["train_attack"] == "none" and pre.base["dataset"] == "folder"
    assert set(adv.grid["trainable"]) == {"all", "bn", "bn+fc", "fc"}
    assert set(adv.grid["init"]) == {"from_stage:pretrain", "random"}
    assert len(adv.grid["seed"]) >= 3 and adv.base["train_attack"] == "pgd" and adv.base["train_eps_255"] == 8
    assert len(adv.base["eval_eps_255"]) >= 3 and adv.base["final_restarts"] >= 2
    assert all(s.resources["gpu"] == 0 and s.base["device"] == "cpu" for s in laptop.stages)
    # AutoAttack beside the final PGD for the adversarial rows, on a class-balanced subset
    assert adv.base["final_autoattack"] != "none" and pre.base["final_autoattack"] == "none"
    assert 0 < adv.base["final_autoattack_n"] <= adv.base["eval_n"] and adv.base["final_attack"] == "pgd"
    # the fast path where the machine has it, fp32 eager where it has not (the file runs anywhere)
    assert all((s.base["precision"], s.base["compile"]) == ("auto", "auto") for s in laptop.stages)
    # at least twice the first version's adversarial training: 24 trials x 3 epochs x 5,000 images x (1 + 3)
    doc = yaml.safe_load((ROOT / "sweeps" / "cifar10-laptop.yaml").read_text())
    trials = len(doc["grid"]["seed"]) * len(adv.grid["trainable"]) * len(adv.grid["init"])
    passes = trials * adv.base["epochs"] * doc["trial"]["n_train"] * (1 + adv.base["train_steps"])
    assert passes >= 2 * 24 * 3 * 5000 * 4


def test_demo_is_the_study_in_small():
    demo = load_sweep(str(Path(__file__).parent.parent / "sweeps" / "demo.yaml"))
    pre, adv = demo.stages
    assert pre.base["train_attack"] == "none" and pre.base["dataset"] == "planted"
    assert set(adv.grid["trainable"]) == {"all", "bn", "bn+fc", "fc"}
    assert set(adv.grid["init"]) == {"from_stage:pretrain", "random"}
    assert len(adv.grid["seed"]) >= 2 and adv.base["train_attack"] == "pgd"
    assert all(s.resources["gpu"] == 0 and s.base["device"] == "cpu" for s in demo.stages)


def test_paper_sweep_covers_the_open_choices():
    paper = load_sweep(str(Path(__file__).parent.parent / "sweeps" / "paper" / "cifar10.yaml"))
    stages = {s.name: s for s in paper.stages}
    assert stages["pretrain"].base["train_attack"] == "none"
    finetune, scratch = stages["finetune"], stages["scratch"]
    assert finetune.from_stage == "pretrain" and {"bn", "all"} <= set(finetune.grid["trainable"])
    assert set(finetune.grid["bn_stats"]) == {"update", "frozen"}
    assert set(finetune.grid["attack_bn_mode"]) == {"eval", "train"}
    assert "bn+fc" in finetune.grid["trainable"]  # classifier trained or not
    assert scratch.base["init"] == "random" and "bn" in scratch.grid["trainable"]
    for stage in (finetune, scratch):
        assert stage.base["dataset"] == "cifar10" and stage.base["train_attack"] == "pgd"
        assert stage.base["train_eps_255"] == 8 and stage.base["final_attack"] == "autoattack"
        assert stage.resources["gpu"] > 0


def test_layerwise_sweeps_are_one_study_on_planted_and_on_cifar10():
    cuts = ["bn@stem", "bn@stage1", "bn@stage2", "bn@stage3", "bn", "bn-stem"]
    studies = {name: load_sweep(str(Path(__file__).parent.parent / "sweeps" / name))
               for name in ("layerwise.yaml", "cifar10-layerwise.yaml")}
    for sweep in studies.values():
        pretrain, finetune = sweep.stages
        assert pretrain.base["train_attack"] == "none" and pretrain.base["trainable"] == "all"
        assert finetune.from_stage == "pretrain" and finetune.base["train_attack"] == "pgd"
        assert finetune.grid["trainable"] == cuts and finetune.base["bn_stats"] == "selected"
        assert len(finetune.grid["seed"]) >= 2
    small, big = studies["layerwise.yaml"].stages[1], studies["cifar10-layerwise.yaml"].stages[1]
    assert small.base["dataset"] == "planted" and small.resources["gpu"] == 0 and small.base["device"] == "cpu"
    assert big.base["dataset"] == "cifar10" and big.resources["gpu"] > 0


def test_gpu_short_sweep_is_the_study_at_full_size_with_its_projection(tmp_path):
    from test_gpu_study import tiny_cifar

    data = tiny_cifar(tmp_path / "cifar.tar.gz")  # a stand-in: n_train 0 takes whatever the split holds
    short = load_sweep(str(ROOT / "sweeps" / "cifar10-gpu-short.yaml"), {"data_dir": str(data)})
    pre, adv = short.stages
    assert pre.base["train_attack"] == "none" and pre.base["epochs"] >= 20
    for stage in short.stages:
        assert stage.base["n_train"] == 0 and stage.base["dataset"] == "folder"  # all 50,000 images
        assert stage.base["model"] == "resnet20" and stage.base["width"] >= 1
        assert stage.resources["gpu"] == 0.25 and len(stage.grid["seed"]) >= 2
    assert set(adv.grid["trainable"]) == {"all", "bn", "bn+fc", "fc"}
    assert set(adv.grid["init"]) == {"from_stage:pretrain", "random"}
    assert adv.base["train_attack"] == "pgd" and adv.base["train_eps_255"] == 8
    # every adversarial row (the BN rows among them) faces AutoAttack beside the final PGD
    assert adv.base["final_attack"] == "pgd" and adv.base["final_autoattack"] != "none"
    header = (ROOT / "sweeps" / "cifar10-gpu-short.yaml").read_text().split("\nname:")[0]
    assert "PROJECTION" in header and "in all" in header and "8,646" in header


def test_gpu_short_sweep_runs_at_toy_size_on_cpu(tmp_path, ray_local):
    """The file as shipped, with --set toy sizes (those of scripts/gpu_study.py --smoke-test)."""
    from test_gpu_study import TOY, tiny_cifar

    from bnsweep import results
    from bnsweep.core.yamlfile import parse_overrides
    from bnsweep.layout.paths import sweep_dir
    from bnsweep.sweep.driver import execute

    data = tiny_cifar(tmp_path / "cifar.tar.gz")
    short = load_sweep(str(ROOT / "sweeps" / "cifar10-gpu-short.yaml"),
                       parse_overrides([*TOY, "device=cpu", f"data_dir={data}"]))
    root = sweep_dir(str(tmp_path / "results"), short.name)
    execute(short, root, resume=False)
    df = results.load(root)
    assert df.groupby("stage").size().to_dict() == {"pretrain": 2, "adv": 16}
    assert set(df["status"]) == {"terminated"} and df["final_robust_acc"].notna().all()
    adv = df[df["stage"] != "pretrain"]
    assert (adv["init_checkpoint"] != "").sum() == 8  # the pre-trained half of the adversarial stage
