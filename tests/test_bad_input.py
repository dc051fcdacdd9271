"""Malformed sweep files and command lines: exit 2, one line naming file, key and what is allowed,
no Ray started and nothing written to the storage directory."""

from __future__ import annotations

import os
import pickle
import textwrap

import pytest

from bnsweep.cli import main
from bnsweep.sweep import driver as sweep_module

GOOD_TRIAL = "dataset: planted\n  model: resnet8\n  epochs: 1"


def sweep_text(body: str) -> str:
    return textwrap.dedent(body).replace("TRIAL", GOOD_TRIAL)


# (id, sweep file text, words the one error line must contain)
CASES = [
    ("yaml-syntax", "trial: {dataset: planted\n", ["file", "YAML"]),
    ("not-a-mapping", "- a\n- b\n", ["file", "mapping"]),
    ("unknown-top-key", "trail:\n  TRIAL\n", ["key", "trail", "stages"]),
    ("unknown-trial-key", "trial:\n  TRIAL\n  learning_rate: 0.1\n", ["learning_rate", "dataset"]),
    ("unknown-stage-key", "stages:\n  - name: a\n    trial:\n      epochs: 1\n    grids: {seed: [0]}\n",
     ["stage 'a'", "grids", "match"]),
    ("unknown-grid-key", "grid:\n  sead: [0, 1]\n", ["grid", "sead", "seed"]),
    ("unknown-search-key", "search:\n  lrr: {loguniform: [0.01, 0.1]}\n", ["search", "lrr"]),
    ("trainable-bnn", "trial:\n  trainable: bnn\n", ["trainable", "bnn", "bn+fc"]),
    ("grid-trainable-bnn", "grid:\n  trainable: [bn, bnn]\n", ["grid.trainable", "bnn", "bn+fc"]),
    # trainable expressions: the error names the term and lists the model's groups
    ("trainable-unknown-group", "trial:\n  trainable: bn+stage9\n",
     ["trainable", "'stage9' names no group", "resnet20's groups", "stem, stage1, stage2, stage3, head"]),
    ("trainable-unknown-place", "trial:\n  trainable: bn@stage4+fc\n", ["trainable", "'bn@stage4'", "stage3, head"]),
    ("trainable-matches-nothing", "trial:\n  trainable: bn@head\n",
     ["trainable", "'bn@head' matches no parameter", "stage3"]),
    ("trainable-bad-glob", "trial:\n  trainable: 'glob:layer[3.*'\n", ["trainable", "'glob:layer[3.*'", "glob pattern"]),
    ("trainable-glob-matches-nothing", "trial:\n  trainable: 'glob:layer4.*'\n",
     ["trainable", "'glob:layer4.*' matches no parameter", "stage3"]),
    ("trainable-selects-nothing", "trial:\n  trainable: bn-bn\n", ["trainable", "'bn-bn'", "selects no parameter"]),
    ("trainable-empty-term", "trial:\n  trainable: bn++fc\n", ["trainable", "'bn++fc'", "empty"]),
    ("grid-trainable-removes-nothing", "grid:\n  model: [preact_resnet18]\n  trainable: [bn, bn-stem]\n",
     ["grid.trainable", "'bn-stem'", "'-stem' removes nothing", "preact_resnet18's groups", "stage4"]),
    ("eps-negative", "trial:\n  train_eps_255: -1\n", ["train_eps_255", "-1", ">= 0"]),
    ("eps-huge", "trial:\n  train_eps_255: 1000\n", ["train_eps_255", "1000", "255"]),
    ("eval-eps-empty", "trial:\n  eval_eps_255: []\n", ["eval_eps_255", "[]", "non-empty"]),
    ("epochs-zero", "trial:\n  epochs: 0\n", ["epochs", "0", ">= 1"]),
    ("epochs-string", "trial:\n  epochs: three\n", ["epochs", "three", "integer"]),
    ("adv-fraction-2", "trial:\n  adv_fraction: 2\n", ["adv_fraction", "2", "<= 1"]),
    ("adv-fraction-negative", "trial:\n  adv_fraction: -0.5\n", ["adv_fraction", "-0.5", ">= 0"]),
    ("batch-size-zero", "trial:\n  batch_size: 0\n", ["batch_size", "0", ">= 1"]),
    ("unknown-dataset", "trial:\n  dataset: mnist\n", ["dataset", "mnist", "cifar10"]),
    ("unknown-model", "trial:\n  model: resnet9\n", ["model", "resnet9", "resnet20"]),
    ("unknown-attack", "trial:\n  train_attack: cw\n", ["train_attack", "cw", "pgd"]),
    ("unknown-final-attack", "trial:\n  final_attack: square\n", ["final_attack", "square", "autoattack"]),
    ("unknown-scheduler", "scheduler: pbt\n", ["scheduler", "pbt", "asha"]),
    ("asha-bad-arg", "scheduler: {asha: {grace: 1}}\n", ["scheduler.asha", "grace", "grace_period"]),
    ("unknown-search-alg", "search_alg: hyperopt\n", ["search_alg", "hyperopt", "optuna"]),
    ("optuna-with-grid", "search_alg: optuna\ngrid: {seed: [0, 1]}\nsearch: {lr: {uniform: [0.01, 0.1]}}\n",
     ["search_alg", "optuna", "choice"]),
    ("search-bad-spec", "search:\n  lr: {normal: [0, 1]}\n", ["search.lr", "loguniform"]),
    ("search-low-high", "search:\n  lr: {loguniform: [0.1, 0.01]}\n", ["search.lr", "low < high"]),
    ("empty-grid", "grid: {}\n", ["grid", "{}", "non-empty"]),
    ("empty-grid-list", "grid:\n  seed: []\n", ["grid.seed", "[]", "non-empty"]),
    ("num-samples-zero", "num_samples: 0\n", ["num_samples", "0", ">= 1"]),
    ("metric-unknown", "metric: accuracy\n", ["metric", "accuracy", "robust_acc"]),
    ("mode-unknown", "mode: best\n", ["mode", "best", "max"]),
    ("gpu-string", "resources: {cpu: 1, gpu: 'one'}\n", ["resources.gpu", "one", "fraction"]),
    ("gpu-fraction-above-1", "resources: {gpu: 1.5}\n", ["resources.gpu", "1.5", "fraction"]),
    ("cpu-zero", "resources: {cpu: 0}\n", ["resources.cpu", "0", "> 0"]),
    ("resources-unknown", "resources: {tpu: 1}\n", ["resources", "tpu", "gpu"]),
    ("from-stage-missing", "stages:\n  - name: a\n    trial: {init: {from_stage: pre}}\n",
     ["stage 'a'", "init", "pre", "earlier stage"]),
    ("from-stage-later", "stages:\n  - name: a\n    trial: {init: {from_stage: b}}\n  - name: b\n",
     ["stage 'a'", "init", "'b'", "earlier stage"]),
    ("from-stage-self", "stages:\n  - name: a\n    trial: {init: {from_stage: a}}\n", ["init", "earlier stage"]),
    ("from-stage-no-match", "stages:\n  - name: a\n    grid: {seed: [0]}\n"
     "  - name: b\n    grid: {seed: [1]}\n    trial: {init: {from_stage: a}}\n", ["stage 'b'", "init", "seed=1"]),
    ("match-unknown-key", "stages:\n  - name: a\n  - name: b\n    match: [sede]\n", ["match", "sede"]),
    ("duplicate-stage", "stages:\n  - name: a\n  - name: a\n", ["stages[1].name", "'a'"]),
    ("stages-empty", "stages: []\n", ["stages", "non-empty"]),
    ("init-missing-checkpoint", "trial:\n  init: /no/such/checkpoint.pt\n", ["init", "/no/such/checkpoint.pt"]),
    ("bad-name", "name: 'my sweep/x'\n", ["name", "my sweep/x"]),
]


@pytest.mark.parametrize("case_id, text, words", CASES, ids=[c[0] for c in CASES])
def test_bad_sweep_file_exits_2_with_one_line_before_ray(case_id, text, words, tmp_path, capsys, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for a bad sweep file")

    monkeypatch.setattr(sweep_module, "connect", no_ray)
    path = tmp_path / "bad.yaml"
    path.write_text(sweep_text(text))
    storage = tmp_path / "storage"
    assert main(["run", str(path), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not storage.exists()
    assert main(["validate", str(path)]) == 2


def test_missing_sweep_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


@pytest.fixture
def checkpoint_of(tmp_path):
    from bnsweep.core import checkpoints
    from bnsweep.core.models import build_model

    def make(model: str, name: str) -> str:
        path = str(tmp_path / name)
        checkpoints.save(path, {"model": build_model(model, 10, width=0.25).state_dict(),
                                "config": {"model": model, "width": 0.25}, "epoch": 1})
        return path

    return make


class _RunsCode:
    def __reduce__(self):
        return (open, ("/tmp/bnsweep-pwned", "w"))


def test_checkpoint_from_another_architecture_is_refused(checkpoint_of, tmp_path, capsys):
    path = checkpoint_of("resnet20", "r20.pt")
    code = main(["train", "--set", "dataset=planted", "model=resnet8", "width=0.25", f"init={path}",
                 "epochs=1", "n_train=32", "n_test=16", "--out", str(tmp_path / "out")])
    assert code == 2
    line = capsys.readouterr().err.strip()
    assert "init" in line and "resnet20" in line and len(line.splitlines()) == 1


def test_checkpoint_that_is_not_one_and_pickle_that_runs_code_are_refused(tmp_path, capsys):
    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("hello")
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"model": _RunsCode()}, fh)
    for path in (not_ckpt, evil):
        code = main(["train", "--set", "dataset=planted", "model=resnet8", f"init={path}", "epochs=1",
                     "--out", str(tmp_path / "out")])
        assert code == 2
        assert str(path) in capsys.readouterr().err
    assert not os.path.exists("/tmp/bnsweep-pwned")


@pytest.mark.parametrize("expression, term", [("bnn", "bnn"), ("bn@stage4+fc", "bn@stage4"), ("bn@head", "bn@head"),
                                              ("glob:layer[3.*", "glob:layer[3.*"), ("all-stem-stem", "-stem")])
def test_bad_trainable_on_the_command_line_writes_nothing(expression, term, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--set", "dataset=planted", "model=resnet8", f"trainable={expression}",
                 "--out", str(out)]) == 2
    assert main(["layers", "resnet8", "--trainable", expression]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(f"term {term!r}" in line and "stage3, head" in line for line in lines), lines
    assert not out.exists()


def test_bad_command_lines(tmp_path, capsys):
    cases = [
        (["train", "--set", "trainable=bnn"], "trainable"),
        (["train", "--set", "nokey"], "--set"),
        (["eval", str(tmp_path / "none.pt")], "checkpoint"),
        (["resume", str(tmp_path / "no-experiment")], "resume"),
        (["results", str(tmp_path / "no-experiment")], "no-experiment"),
    ]
    for argv, word in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err, (argv, err)
