"""AutoAttack (standard, via pyautoattack): the final evaluation and `bnsweep eval --attack autoattack`."""

from __future__ import annotations

import pytest

from bnsweep.cli import main
from bnsweep.core.evaluate import autoattack_accuracy, evaluate
from bnsweep.core.train import Trial


@pytest.mark.slow  # standard AutoAttack on 32 CPU examples: minutes
def test_autoattack_is_at_least_as_strong_as_pgd_and_reported_at_the_end(tiny_config, tmp_path, capsys):
    cfg = tiny_config(epochs=3, n_train=512, n_test=32, eval_n=32, width=0.5, final_attack="autoattack",
                      train_attack="none")
    trial = Trial(cfg)
    reports = []
    trial.run(lambda metrics, checkpoint: reports.append(metrics))
    final = reports[-1]
    assert final["final_attack"] == "autoattack"
    x, y = trial.eval_split()
    pgd = evaluate(trial.model, x, y, eps_255=(8.0,), steps=20, step_255=0, restarts=1, seed=0)
    aa = autoattack_accuracy(trial.model, x, y, eps_255=8.0)
    assert aa == final["final_robust_acc"] <= pgd["robust_acc_eps8"] <= pgd["clean_acc"] == final["final_clean_acc"]
    assert pgd["clean_acc"] > 0  # there was something to attack


def test_eval_command_with_autoattack(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--set", "dataset=planted", "model=resnet8", "width=0.25", "n_train=128", "n_test=16",
                 "epochs=1", "batch_size=64", "train_steps=1", "final_attack=none", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint.pt"), "--attack", "autoattack", "--eps-255", "8", "--n", "8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "attack=autoattack" in lines[0] and lines[-1].split()[0] == "8"
    clean, robust = map(float, lines[-1].split()[1:])
    assert 0 <= robust <= clean <= 1
