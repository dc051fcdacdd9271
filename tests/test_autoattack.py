"""AutoAttack (pyautoattack): the final evaluation, `bnsweep eval --attack autoattack`, the
`final_autoattack` column beside PGD, and the order a stronger attack keeps: AutoAttack <= PGD <=
clean, on a model that PGD neither breaks nor leaves alone."""

from __future__ import annotations

import json

import pytest
import torch

from bnsweep.cli import main
from bnsweep.core.evaluate import autoattack_survivors, robust_masks
from bnsweep.core.train import Trial

# A resnet8 trained cleanly for two epochs on planted data. On its 16 test images (measured): 75 %
# clean; at 8/255, 2 of them stay correct under PGD-20 and 1 under AutoAttack's APGD-CE + APGD-T, so
# both inequalities are tested, not 0 <= 0. Its final evaluation is standard AutoAttack at 32/255,
# where APGD-CE fools every image and FAB-T and Square, which take minutes on images they cannot
# fool, have nothing left to attack.
CLEAN_TRAINED = ["dataset=planted", "model=resnet8", "width=0.5", "n_train=512", "n_test=16", "epochs=2",
                 "batch_size=64", "eval_steps=3", "train_attack=none", "eval_eps_255=[32]", "final_attack=autoattack"]


@pytest.fixture(scope="module")
def clean_trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("aa") / "run"
    assert main(["train", "--set", *CLEAN_TRAINED, "--out", str(out)]) == 0
    return out


def _eval(capsys, run, eps: str, *attack) -> tuple[float, float]:
    """(clean, robust accuracy) at `eps`/255 on the 16 test images, from `bnsweep eval`'s table."""
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoint.pt"), "--eps-255", eps, "--n", "16", *attack]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].split()[0] == eps
    clean, robust = map(float, lines[-1].split()[1:])
    return clean, robust


def test_autoattack_is_at_most_pgd_at_most_clean(clean_trained, capsys):
    """`bnsweep eval --attack autoattack` with AutoAttack's gradient attacks (APGD-CE and APGD-T,
    `--autoattack-version apgd-ce+apgd-t`, about 7 s of one core here) against PGD-20, on the same images."""
    clean, pgd = _eval(capsys, clean_trained, "8", "--attack", "pgd", "--steps", "20")
    clean_aa, aa = _eval(capsys, clean_trained, "8", "--attack", "autoattack", "--autoattack-version",
                         "apgd-ce+apgd-t")
    assert clean_aa == clean
    assert 0 < pgd < clean  # a model PGD neither breaks completely nor leaves alone
    assert aa <= pgd <= clean


def test_final_evaluation_is_standard_autoattack(clean_trained, capsys):
    final = json.loads((clean_trained / "final.json").read_text())
    assert final["final_attack"] == "autoattack"
    clean, pgd = _eval(capsys, clean_trained, "32", "--attack", "pgd", "--steps", "20")
    assert final["final_clean_acc"] == clean > 0.5
    assert final["final_robust_acc"] <= pgd <= clean


# A final "PGD" of one step of 0.01/255 from a random start barely attacks: it leaves examples robust
# that AutoAttack at the same radius fools, so the test sees AutoAttack work on what PGD left.
WEAK_PGD = dict(n_test=64, eval_n=64, train_attack="none", eval_eps_255=[8], final_steps=1, eval_step_255=0.01,
                final_attack="pgd")


def test_final_autoattack_attacks_only_what_pgd_left_robust(tiny_config):
    cfg = tiny_config(**WEAK_PGD, final_autoattack="apgd-ce+apgd-t", final_autoattack_n=32)
    trial = Trial(cfg)
    reports = []
    trial.run(lambda metrics, checkpoint: reports.append(metrics))
    final = reports[-1]
    x, y = trial.eval_split()
    pgd = robust_masks(trial.model, x, y, eps_255=(8.0,), steps=1, step_255=0.01, restarts=1, seed=cfg.seed + 10_000)
    before = pgd["robust_acc_eps8"][:32]
    # the same images as the final PGD's first 32, starting from what it left robust
    assert final["final_robust_acc"] == pgd["robust_acc_eps8"].float().mean().item()
    assert final["final_autoattack_before_acc"] == before.float().mean().item() > 0
    assert final["final_autoattack_acc"] < final["final_autoattack_before_acc"]  # stronger than PGD-1 here
    assert 0 <= final["final_autoattack_acc"] <= final["final_autoattack_before_acc"] <= final["final_clean_acc"]
    # only the final report carries it, and `final_autoattack: none` adds nothing
    assert all("final_autoattack_acc" not in m for m in reports[:-1])
    none = []
    Trial(tiny_config(**WEAK_PGD)).run(lambda metrics, checkpoint: none.append(metrics))
    assert not {"final_autoattack_acc", "final_autoattack_before_acc"} & set(none[-1])


def test_autoattack_survivors_stay_within_the_candidates(tiny_config):
    trial = Trial(tiny_config(**WEAK_PGD))
    trial.train_epoch()
    x, y = trial.eval_split()
    correct = robust_masks(trial.model, x, y, eps_255=(), steps=1, step_255=0, restarts=1, seed=0)["clean_acc"]
    candidates = correct.clone()
    candidates[::2] = False  # half of them are not offered to the attack
    after = autoattack_survivors(trial.model, x, y, candidates, eps_255=8, version="apgd-ce+apgd-t", seed=0)
    assert not (after & ~candidates).any()  # nothing outside the candidates becomes robust
    assert trial.model.training  # its mode is restored
    none = torch.zeros_like(candidates)
    assert not autoattack_survivors(trial.model, x, y, none, eps_255=8, version="standard", seed=0).any()
