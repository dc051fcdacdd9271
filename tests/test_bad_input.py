"""Malformed sweep files and command lines: exit 2, one line naming file, key and what is allowed,
no Ray started and nothing written to the storage directory."""

from __future__ import annotations

import json
import os
import pickle
import re
import textwrap
from pathlib import Path

import pytest

from bnsweep.cli import main
from bnsweep.layout.tune import newest_snapshot
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
    """Unpickling it creates the file `marker`: proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


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
    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    with open(evil, "wb") as fh:
        pickle.dump({"model": _RunsCode(marker)}, fh)
    with open(evil, "rb") as fh:  # positive control: unpickled, the payload runs
        pickle.load(fh)["model"].close()
    assert marker.exists()
    marker.unlink()
    for path in (not_ckpt, evil):
        code = main(["train", "--set", "dataset=planted", "model=resnet8", f"init={path}", "epochs=1",
                     "--out", str(tmp_path / "out")])
        assert code == 2
        err = capsys.readouterr().err
        assert str(path) in err and len(err.strip().splitlines()) == 1
        assert "weights_only=False" not in err and "weights_only` set to `False" not in err  # torch's advice
    assert not marker.exists()


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


def test_eval_names_the_checkpoint_whose_weights_do_not_fit(tmp_path, capsys):
    """A checkpoint whose config says width 0.25 but whose weights are width 0.5."""
    from bnsweep.core import checkpoints
    from bnsweep.core.models import build_model

    path = str(tmp_path / "lying.pt")
    checkpoints.save(path, {"model": build_model("resnet8", 10, width=0.5).state_dict(), "epoch": 1,
                            "config": {"dataset": "planted", "model": "resnet8", "width": 0.25}})
    assert main(["eval", path, "--n", "8"]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and f"checkpoint: {path!r}" in line and "shape" in line
    assert "random" not in line


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


# -- validation that used to happen only after Ray started ---------------------------------------
# Each row: (id, sweep file text with TMP for the test's directory, words the one line must contain).
# TMP holds: notes.pt (text), r8.pt (resnet8 width 0.25, with its config), r8-bare.pt (the same
# weights, no config), ckptdir/ and nocifar/ (empty), partial/ (cifar100 with its train file only).
UP_FRONT = [
    # schedulers
    ("asha-grace-above-max-t", "scheduler: {asha: {max_t: 2, grace_period: 4}}\n",
     ["scheduler.asha.grace_period", "4", "<= 2"]),
    ("asha-grace-above-epochs", "trial: {epochs: 2}\nscheduler: {asha: {grace_period: 9}}\n",
     ["scheduler.asha.grace_period", "9", "epochs"]),
    ("asha-final-metric", "metric: final_clean_acc\nscheduler: {asha: {max_t: 1}}\n",
     ["metric", "final_clean_acc", "every epoch"]),
    ("asha-huge-max-t", "scheduler: {asha: {max_t: 10000000000}}\n", ["scheduler.asha.max_t", "<= 100000"]),
    ("asha-sparse-evaluation", "trial: {eval_every: 2}\nscheduler: {asha: {max_t: 1}}\n",
     ["eval_every", "2", "asha"]),
    # names: bnsweep's own files, length, case-insensitive duplicates
    ("stage-named-state-file", "stages:\n  - name: bnsweep_state.json\n", ["stages[0].name", "bnsweep_state.json"]),
    ("stage-named-SWEEP.YAML", "stages:\n  - name: a\n  - name: SWEEP.YAML\n", ["stages[1].name", "SWEEP.YAML"]),
    ("stage-named-temp-file", "stages:\n  - name: sweep.yaml.tmp\n", ["stages[0].name", "sweep.yaml.tmp"]),
    ("stage-150-chars", f"stages:\n  - name: {'s' * 150}\n", ["stages[0].name", "150 characters", "1 to 100"]),
    ("name-256-chars", f"name: {'n' * 256}\n", ["name", "256 characters", "1 to 100"]),
    ("stages-differ-in-case", "stages:\n  - name: adv\n  - name: ADV\n", ["stages[1].name", "ADV"]),
    # search: the sampler must draw the key's type; init is not searched
    ("uniform-n-test", "search: {n_test: {uniform: [100, 200]}}\n", ["search.n_test", "randint or choice"]),
    ("loguniform-eval-n", "search: {eval_n: {loguniform: [10, 1000]}}\n", ["search.eval_n", "randint"]),
    ("uniform-epochs", "search: {epochs: {uniform: [1.0, 3.0]}}\n", ["search.epochs", "integer"]),
    ("randint-eval-eps", "search: {eval_eps_255: {randint: [1, 8]}}\n", ["search.eval_eps_255", "choice"]),
    ("uniform-trainable", "search: {trainable: {uniform: [0, 1]}}\n", ["search.trainable", "choice"]),
    ("search-init", "search: {init: {choice: [random]}}\n", ["search", "init", "grid"]),
    # range bounds that fit every consumer (numpy, torch, Ray's samplers)
    ("randint-seed-10e25", "search: {seed: {randint: [0, 10000000000000000000000000]}}\n",
     ["search.seed", "4294967295"]),
    ("randint-float-bound", "search: {batch_size: {randint: [16, 1.0e30]}}\n", ["search.batch_size", "integers"]),
    ("randint-data-seed-negative", "search: {data_seed: {randint: [-5, 5]}}\n", ["search.data_seed", "-5"]),
    # resources: finite and bounded
    ("cpu-minus-inf", "resources: {cpu: -.inf}\n", ["resources.cpu", "inf"]),
    ("cpu-NaN", "resources: {cpu: .NaN}\n", ["resources.cpu", "nan"]),
    ("gpu-inf", "resources: {gpu: .inf}\n", ["resources.gpu", "inf"]),
    ("cpu-a-billion", "resources: {cpu: 1000000000}\n", ["resources.cpu", "1024"]),
    # integers too large (or negative) for the seeds and counts they feed
    ("seed-above-2-64", "trial: {seed: 99999999999999999999999}\n", ["trial.seed", "4294967295"]),
    ("data-seed-negative", "trial: {data_seed: -3}\n", ["trial.data_seed", "-3"]),
    ("grid-seed-2-32", "grid: {seed: [0, 4294967296]}\n", ["grid.seed", "4294967296"]),
    ("epochs-1e20", "trial: {epochs: 100000000000000000000}\n", ["trial.epochs", "100000"]),
    ("num-samples-ten-million", "num_samples: 10000000\n", ["num_samples", "10000000"]),
    ("search-seed-2-40", "seed: 1099511627776\n", ["seed", "1099511627776"]),
    ("too-many-trials", "grid: {seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], data_seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "
     "lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1], momentum: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, "
     "0.9], epochs: [1, 2]}\n", ["grid", "20000"]),
    # subsets larger than the data set
    ("digits-n-train-1500", "trial: {dataset: digits, n_train: 1500}\n", ["trial.n_train", "1438"]),
    ("digits-n-test-400", "trial: {dataset: digits, n_test: 400}\n", ["trial.n_test", "359"]),
    ("cifar100-n-train-60000", "trial: {dataset: cifar100, download: true, n_train: 60000}\n",
     ["trial.n_train", "50000"]),
    ("grid-planted-n-train", "grid: {n_train: [1000, 200000]}\n", ["grid.n_train", "200000"]),
    # init: not a checkpoint, or a checkpoint of another architecture
    ("init-text-file", "trial: {init: TMP/notes.pt}\n", ["trial.init", "notes.pt", "checkpoint"]),
    ("init-empty-directory", "trial: {init: TMP/ckptdir}\n", ["trial.init", "ckptdir"]),
    ("init-other-model", "trial: {init: TMP/r8.pt, model: resnet20, width: 0.25}\n", ["trial.init", "resnet20"]),
    ("init-other-width", "trial: {init: TMP/r8-bare.pt, model: resnet8, width: 0.5}\n",
     ["trial.init", "r8-bare.pt", "shape"]),
    ("init-other-classes", "trial: {init: TMP/r8-bare.pt, model: resnet8, width: 0.25, dataset: cifar100, "
     "download: true}\n", ["trial.init", "fc.weight"]),
    ("grid-init-one-bad", "grid: {init: [TMP/r8.pt, TMP/notes.pt]}\ntrial: {model: resnet8, width: 0.25}\n",
     ["grid.init", "notes.pt"]),
    # CIFAR without its files
    ("cifar10-empty-data-dir", "trial: {dataset: cifar10, data_dir: TMP/nocifar}\n",
     ["trial.data_dir", "nocifar", "data_batch_1"]),
    ("cifar100-partial-data-dir", "trial: {dataset: cifar100, data_dir: TMP/partial}\n",
     ["trial.data_dir", "partial", "test"]),
    ("grid-dataset-cifar10", "trial: {data_dir: TMP/nocifar}\ngrid: {dataset: [planted, cifar10]}\n",
     ["data_dir", "cifar-10-batches-py"]),
    # paths that are not regular files (a FIFO hangs a reader), models too large to build
    ("init-a-fifo", "trial: {init: TMP/afifo}\n", ["trial.init", "afifo", "FIFO"]),
    ("folder-data-dir-a-fifo", "trial: {dataset: folder, data_dir: TMP/afifo}\n", ["data_dir", "afifo", "FIFO"]),
    ("cifar-batch-a-fifo", "trial: {dataset: cifar10, data_dir: TMP/fifocifar}\n", ["trial.data_dir", "data_batch_1"]),
    ("model-wrn-1000000-1", "trial: {model: wrn-1000000-1}\n", ["trial.model", "wrn-1000000-1", "<= 1000"]),
    ("model-resnet110-width-64", "trial: {model: resnet110, width: 64}\n",
     ["trial.model", "resnet110", "1,000,000,000 parameters", "7,051,224,074"]),
    ("grid-model-wrn-28-100", "grid: {model: [resnet8, wrn-28-100]}\n", ["grid.model", "wrn-28-100", "parameters"]),
]


@pytest.fixture
def inputs(tmp_path):
    """The files the tables below refer to as TMP/..."""
    from bnsweep.core import checkpoints
    from bnsweep.core.models import build_model

    weights = build_model("resnet8", 10, width=0.25).state_dict()
    checkpoints.save(str(tmp_path / "r8.pt"), {"model": weights, "config": {"model": "resnet8", "width": 0.25}})
    checkpoints.save(str(tmp_path / "r8-bare.pt"), {"model": weights})
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    for name in ("ckptdir", "nocifar", "partial/cifar-100-python", "adir", "curves.pdf", "fifocifar/cifar-10-batches-py"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "partial/cifar-100-python/train").write_bytes(b"")
    (tmp_path / "afile").write_text("a file\n")
    os.mkfifo(tmp_path / "afifo")
    os.mkfifo(tmp_path / "fifocifar/cifar-10-batches-py/data_batch_1")
    return tmp_path


def tree(path) -> list[str]:
    """Every file and directory under `path` (to show that a refused command wrote nothing)."""
    return sorted(os.path.relpath(os.path.join(d, n), path) for d, dirs, files in os.walk(path) for n in dirs + files)


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start for bad input")

    monkeypatch.setattr(sweep_module, "connect", refuse)


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")  # what no message may hold raw


def one_line(capsys, *words) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnsweep: error: "), err
    assert not CONTROL.search(err), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("case_id, text, words", UP_FRONT, ids=[c[0] for c in UP_FRONT])
def test_checked_before_ray_starts(case_id, text, words, inputs, capsys, no_ray):
    path = inputs / "sweep-file.yaml"
    path.write_text(text.replace("TMP", str(inputs)))
    before = tree(inputs)
    assert main(["validate", str(path)]) == 2
    one_line(capsys, str(path), *words)
    assert main(["run", str(path), "--storage", str(inputs / "storage")]) == 2
    one_line(capsys, str(path), *words)
    assert tree(inputs) == before


# `bnsweep train` gets the same checks: (id, arguments after `train`, words).
TRAIN_CASES = [
    ("seed-2-64", ["--set", "seed=18446744073709551616"], ["seed", "4294967295"]),
    ("data-seed-minus-1", ["--set", "data_seed=-1"], ["data_seed", "-1"]),
    ("eval-n-2-40", ["--set", "eval_n=1099511627776"], ["eval_n", "1099511627776"]),
    ("seed-5000-digits", ["--set", "seed=" + "7" * 5000], ["seed", "5000 characters"]),
    ("digits-n-test-360", ["--set", "dataset=digits", "n_test=360"], ["n_test", "359"]),
    ("planted-n-train", ["--set", "n_train=100001"], ["n_train", "100000"]),
    ("init-text", ["--set", "init=TMP/notes.pt"], ["init", "notes.pt"]),
    ("init-other-model", ["--set", "init=TMP/r8.pt", "model=resnet32", "width=0.25"], ["init", "resnet32"]),
    ("init-other-width", ["--set", "init=TMP/r8-bare.pt", "model=resnet8", "width=0.75"], ["init", "shape"]),
    ("cifar10-no-files", ["--set", "dataset=cifar10", "data_dir=TMP/nocifar"], ["data_dir", "data_batch_1"]),
    ("cifar100-partial", ["--set", "dataset=cifar100", "data_dir=TMP/partial"], ["data_dir", "cifar-100-python/test "]),
    ("config-directory", ["--config", "TMP/adir"], ["file", "directory"]),
    ("config-alias-bomb", ["--config", "TMP/bomb.yaml"], ["file", "aliases"]),
    ("config-latin-1", ["--config", "TMP/latin1.yaml"], ["file", "UTF-8"]),
    # files where CIFAR's should be, but unreadable: refused while loading, still before writing
    ("cifar10-garbage-files", ["--set", "dataset=cifar10", "data_dir=TMP/garbage", "epochs=1"], ["cifar10"]),
    ("init-a-fifo", ["--set", "init=TMP/afifo"], ["init", "afifo", "FIFO"]),
    ("init-dev-zero", ["--set", "init=/dev/zero"], ["init", "/dev/zero", "character device"]),
    ("folder-a-fifo", ["--set", "dataset=folder", "data_dir=TMP/afifo"], ["data_dir", "FIFO"]),
    ("config-a-fifo", ["--config", "TMP/afifo"], ["file", "FIFO"]),
    ("model-wrn-1000000-1", ["--set", "model=wrn-1000000-1"], ["model", "wrn-1000000-1"]),
]


@pytest.mark.parametrize("case_id, argv, words", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_checks_everything_before_writing(case_id, argv, words, inputs, capsys):
    (inputs / "bomb.yaml").write_text(ALIAS_BOMB)
    (inputs / "latin1.yaml").write_bytes("epochs: 1  # Schöne Grüße\n".encode("latin-1"))
    folder = inputs / "garbage" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"junk")
    before = tree(inputs)
    argv = [a.replace("TMP", str(inputs)) for a in argv]
    assert main(["train", *argv, "--out", str(inputs / "run")]) == 2
    one_line(capsys, *words)
    assert tree(inputs) == before


# -- hostile or broken sweep files: one line, never a traceback, a hang or a memory blow-up -------
# 9 levels of 9 aliases each: 387 million values once expanded, from about 300 bytes.
ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


def _fifo(path):
    os.mkfifo(path)


# (id, how to make the file at the given path, words the one line must contain)
HOSTILE_FILES = [
    ("latin-1-byte", lambda p: p.write_bytes(b"name: caf\xe9\n"), ["UTF-8", "byte 9"]),
    ("utf-16", lambda p: p.write_bytes("name: x\n".encode("utf-16")), ["UTF-8"]),
    ("nul-byte", lambda p: p.write_bytes(b"name: x\x00\n"), ["YAML"]),
    ("int-5000-digits", lambda p: p.write_text("trial: {seed: 1" + "0" * 4999 + "}\n"), ["5000", "100"]),
    ("int-in-grid-10000-digits", lambda p: p.write_text("grid: {seed: [" + "7" * 10000 + "]}\n"), ["10000"]),
    ("hex-int-5000-digits", lambda p: p.write_text("trial: {seed: 0x" + "f" * 5000 + "}\n"), ["integer"]),
    ("flow-lists-10000-deep", lambda p: p.write_text("grid: {seed: " + "[" * 10000 + "]" * 10000 + "}\n"),
     ["nested deeper"]),
    ("block-lists-3000-deep", lambda p: p.write_text("stages:\n" + "- " * 3000 + "x\n"), ["nested deeper"]),
    ("mappings-5000-deep", lambda p: p.write_text("{a: " * 5000 + "1" + "}" * 5000 + "\n"), ["nested deeper"]),
    ("alias-bomb-lists", lambda p: p.write_text(ALIAS_BOMB), ["aliases"]),
    ("alias-bomb-mappings", lambda p: p.write_text("m0: &m0 {a: 1, b: 2, c: 3, d: 4}\n" + "".join(
        f"m{i}: &m{i} {{{', '.join(f'k{j}: *m{i - 1}' for j in range(8))}}}\n" for i in range(1, 9))),
     ["aliases"]),
    ("alias-chain-deep", lambda p: p.write_text("a0: &a0 " + "[" * 40 + "1" + "]" * 40 + "\n" + "".join(
        f"a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40 + "\n" for i in range(1, 30))), ["deeper"]),
    ("trial-twice", lambda p: p.write_text("trial: {epochs: 1}\ngrid: {seed: [0]}\ntrial: {lr: 0.1}\n"),
     ["'trial' twice", "line 3"]),
    ("list-of-200000", lambda p: p.write_text("grid: {seed: [" + "1, " * 200_000 + "]}\n"), ["10000 values"]),
    ("two-mebibytes", lambda p: p.write_text("# " + "x" * (2 << 20) + "\n"), ["MiB"]),
    ("a-directory", lambda p: p.mkdir(), ["directory"]),
    ("a-fifo", _fifo, ["FIFO"]),
]


@pytest.mark.parametrize("case_id, make, words", HOSTILE_FILES, ids=[c[0] for c in HOSTILE_FILES])
def test_hostile_sweep_files_get_one_line(case_id, make, words, tmp_path, capsys, no_ray):
    path = tmp_path / "hostile.yaml"
    make(path)
    before = tree(tmp_path)
    for command in (["validate", str(path)], ["run", str(path), "--storage", str(tmp_path / "storage")]):
        assert main(command) == 2
        one_line(capsys, "file", str(path), *words)
    assert tree(tmp_path) == before


# -- command lines: output paths, URIs, cluster addresses --------------------------------------
# (id, argv with TMP, EXP (an experiment directory) and SWEEP (a good sweep file), words, environment)
COMMAND_LINES = [
    ("train-out-a-file", ["train", "--out", "TMP/afile"], ["--out", "afile", "this is a file"], {}),
    ("train-out-under-a-file", ["train", "--out", "TMP/afile/run"], ["--out", "afile is a file"], {}),
    ("train-out-a-uri", ["train", "--out", "s3://bucket/run"], ["--out", "local path"], {}),
    ("results-o-a-directory", ["results", "EXP", "-o", "TMP/adir"], ["-o", "adir", "directory"], {}),
    ("results-o-under-a-file", ["results", "EXP", "-o", "TMP/afile/x.csv"], ["-o", "afile is a file"], {}),
    ("table-o-a-directory", ["table", "EXP", "-o", "TMP/adir"], ["-o", "adir"], {}),
    ("report-o-a-file", ["report", "EXP", "-o", "TMP/afile"], ["-o", "afile", "this is a file"], {}),
    ("report-o-under-a-file", ["report", "EXP", "-o", "TMP/afile/report"], ["-o", "afile is a file"], {}),
    ("plot-o-under-a-file", ["plot", "robustness", "EXP", "-o", "TMP/afile/c.png"], ["-o", "afile"], {}),
    ("plot-pdf-a-directory", ["plot", "training", "EXP", "-o", "TMP/curves.png"], ["-o", "curves.pdf"], {}),
    ("results-unknown-scheme", ["results", "weird://x"], ["path", "weird://x"], {}),
    ("report-unknown-scheme", ["report", "nosuch://bucket/exp", "-o", "TMP/report"], ["nosuch://bucket/exp"], {}),
    ("table-relative-file-uri", ["table", "file://relative/x"], ["file://relative/x"], {}),
    ("resume-unknown-scheme", ["resume", "weird://x"], ["weird://x"], {}),
    ("report-no-experiment", ["report", "TMP/adir", "-o", "TMP/report"], ["adir"], {}),
    ("run-storage-a-file", ["run", "SWEEP", "--storage", "TMP/afile"], ["--storage", "afile"], {}),
    ("run-storage-under-a-file", ["run", "SWEEP", "--storage", "TMP/afile/x"], ["--storage", "afile is a file"], {}),
    ("run-storage-unknown-scheme", ["run", "SWEEP", "--storage", "weird://bucket"], ["weird://bucket"], {}),
    ("run-address-words", ["run", "SWEEP", "--storage", "TMP/st", "--address", "the cluster"], ["--address"], {}),
    ("run-address-port-70000", ["run", "SWEEP", "--storage", "TMP/st", "--address", "head:70000"], ["head:70000"], {}),
    ("run-address-no-port", ["run", "SWEEP", "--storage", "TMP/st", "--address", "head"], ["--address"], {}),
    ("run-address-http", ["run", "SWEEP", "--storage", "TMP/st", "--address", "http://head:8265"], ["http"], {}),
    ("resume-address-empty-host", ["resume", "EXP", "--address", "ray://:10001"], ["--address"], {}),
    ("run-ray-address-env", ["run", "SWEEP", "--storage", "TMP/st"], ["RAY_ADDRESS", "nowhere"],
     {"RAY_ADDRESS": "nowhere"}),
    ("validate-a-directory", ["validate", "TMP/adir"], ["file", "directory"], {}),
    # reading or writing what is not a regular file: a FIFO would hang, /dev/full fail midway
    ("eval-checkpoint-a-fifo", ["eval", "TMP/afifo"], ["checkpoint", "afifo", "FIFO"], {}),
    ("results-o-a-fifo", ["results", "EXP", "-o", "TMP/afifo"], ["-o", "afifo", "FIFO"], {}),
    ("table-o-a-fifo", ["table", "EXP", "-o", "TMP/afifo"], ["-o", "afifo", "FIFO"], {}),
    ("results-o-dev-full", ["results", "EXP", "-o", "/dev/full"], ["-o", "/dev/full", "character device"], {}),
    ("layers-wrn-1000000-1", ["layers", "wrn-1000000-1"], ["model", "wrn-1000000-1"], {}),
    # argparse's own errors and numbers out of every sane range: the same one line
    ("status-watch-inf", ["status", "EXP", "--watch", "inf"], ["--watch", "inf", "86400"], {}),
    ("status-watch-1e308", ["status", "EXP", "--watch", "1e308"], ["--watch", "1e308"], {}),
    ("status-watch-1e-300", ["status", "EXP", "--watch", "1e-300"], ["--watch", "1e-300", "0.1"], {}),
    ("status-watch-nan", ["status", "EXP", "--watch", "nan"], ["--watch", "nan"], {}),
    ("status-watch-abc", ["status", "EXP", "--watch", "abc"], ["--watch", "'abc'", "not a number"], {}),
    ("validate-rate-1e-308", ["validate", "SWEEP", "--rate", "1e-308"], ["--rate", "1e-308", "0.001"], {}),
    ("validate-rate-abc", ["validate", "SWEEP", "--rate", "abc"], ["--rate", "'abc'"], {}),
    ("validate-slots-1e9", ["validate", "SWEEP", "--slots", "1e9"], ["--slots", "'1e9'", "integer"], {}),
    ("validate-slots-10-9", ["validate", "SWEEP", "--slots", "1000000000"], ["--slots", "1,000,000"], {}),
    ("results-format-xml", ["results", "EXP", "--format", "xml"], ["--format", "'xml'", "csv"], {}),
    ("results-unknown-option", ["results", "EXP", "--colums", "seed"], ["unrecognized", "--colums"], {}),
    ("no-command", [], ["command"], {}),
    ("unknown-command", ["rnu", "SWEEP"], ["'rnu'", "run"], {}),
    ("table-eps-nan", ["table", "EXP", "--eps-255", "nan"], ["--eps-255", "nan"], {}),
    ("layers-num-classes-10-9", ["layers", "resnet8", "--num-classes", "1000000000"], ["--num-classes"], {}),
    # control characters of user input are shown escaped, never echoed
    ("results-path-with-escapes", ["results", "TMP/x\x1b[2J\nbnsweep: error: forged"], ["\\x1b[2J\\nbnsweep"], {}),
    ("set-key-with-newline", ["train", "--set", "epochs\nbnsweep: error: forged=1"], ["\\nbnsweep"], {}),
]


@pytest.mark.parametrize("case_id, argv, words, env", COMMAND_LINES, ids=[c[0] for c in COMMAND_LINES])
def test_bad_command_lines_get_one_line_and_write_nothing(case_id, argv, words, env, inputs, mixed_dir,
                                                          capsys, monkeypatch, no_ray):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sweep = inputs / "good.yaml"
    sweep.write_text("name: good\ntrial: {dataset: planted, model: resnet8, epochs: 1}\n")
    before, experiment = tree(inputs), tree(mixed_dir)
    subs = {"TMP": str(inputs), "EXP": str(mixed_dir), "SWEEP": str(sweep)}
    for old, new in subs.items():
        argv = [a.replace(old, new) for a in argv]
    assert main(argv) == 2
    one_line(capsys, *words)
    assert tree(inputs) == before and tree(mixed_dir) == experiment


# -- hostile image folders and archives (`dataset: folder`) --------------------------------------
# Each maker builds a data set at the path it is given (a small valid tree, then one hostile thing)
# and returns the data_dir; `where` says which commands must refuse it: `validate` lists the source
# (and runs before anything starts), `train` also decodes it.

def _tree(path):
    from test_folder import make_tree

    make_tree(path)
    return path


def _fifo_image(path):
    os.mkfifo(_tree(path) / "train" / "ant" / "x.png")
    return path


def _link_to_dev_zero(path):
    (_tree(path) / "train" / "ant" / "x.png").symlink_to("/dev/zero")
    return path


def _broken_link(path):
    (_tree(path) / "train" / "ant" / "x.png").symlink_to(path / "nowhere.png")
    return path


def _sparse_image(path):
    with open(_tree(path) / "train" / "ant" / "x.png", "wb") as fh:
        fh.truncate(40 << 30)  # 40 GiB of nothing on disk
    return path


def _archive(path, cut=None, compress=False):
    import tarfile

    tree = _tree(path.with_name(path.name + "-tree"))
    archive = path.with_suffix(".tar.gz" if compress else ".tar")
    with tarfile.open(archive, "w:gz" if compress else "w") as tf:
        tf.add(tree, arcname="data")
    with tarfile.open(archive) as tf:
        last = tf.getmembers()[-1]
    data = archive.read_bytes()
    archive.write_bytes(data[:cut(data, last)] if cut else data)
    return archive


def _tar_gz_cut_in_half(path):
    return _archive(path, cut=lambda data, last: len(data) // 2, compress=True)


def _tar_cut_before_its_last_member(path):
    return _archive(path, cut=lambda data, last: last.offset)


def _tar_with_a_sparse_member(path):
    import shutil
    import subprocess

    if not shutil.which("tar"):
        pytest.skip("needs GNU tar to write a sparse member")
    tree = _tree(path)
    with open(tree / "train" / "ant" / "big.png", "wb") as fh:
        fh.truncate(100 << 30)  # a 100 GiB hole: GNU tar stores it in a few KB
    archive = path.with_suffix(".tar")
    subprocess.run(["tar", "--sparse", "-cf", str(archive), "-C", str(path.parent), path.name], check=True)
    shutil.rmtree(tree)
    return archive


def _png_bomb(path):
    """A valid 1-bit PNG of 20000x20000 pixels: 7 KB on disk, 1.2 GB once decoded to RGB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = 20000
    packer, row = zlib.compressobj(9), b"\x00" + bytes(side // 8)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    (_tree(path) / "train" / "ant" / "x.png").write_bytes(png)
    return path


def _gif_named_png(path):
    (_tree(path) / "train" / "ant" / "x.png").write_bytes(b"GIF89a" + bytes(64))
    return path


def _class_named_to_forge_a_line(path):
    os.rename(_tree(path) / "test" / "bee", path / "test" / "bee\nbnsweep: error: forged")
    return path


BOTH = ("validate", "train")
FOLDERS = [
    ("fifo-named-like-an-image", _fifo_image, BOTH, ["train/ant/x.png", "FIFO"]),
    ("link-to-dev-zero", _link_to_dev_zero, BOTH, ["train/ant/x.png", "character device"]),
    ("link-to-nothing", _broken_link, BOTH, ["train/ant/x.png", "symbolic link to nothing"]),
    ("sparse-40-gib-image", _sparse_image, BOTH, ["train/ant/x.png", "larger than 64 MiB (40 GiB)"]),
    ("tar-with-a-gnu-sparse-member", _tar_with_a_sparse_member, BOTH, ["train/ant/big.png", "sparse"]),
    ("tar-gz-cut-in-half", _tar_gz_cut_in_half, BOTH, ["damaged or cut short"]),
    ("tar-cut-before-its-last-member", _tar_cut_before_its_last_member, BOTH, ["end-of-archive marker"]),
    ("png-bomb-20000x20000", _png_bomb, ("train",), ["train/ant/x.png", "20000x20000", "67,108,864"]),
    ("gif-named-png", _gif_named_png, ("train",), ["train/ant/x.png", "no PNG or JPEG header"]),
    ("class-folder-named-to-forge-a-line", _class_named_to_forge_a_line, BOTH, ["bee\\nbnsweep: error: forged"]),
]


@pytest.mark.parametrize("case_id, make, where, words", FOLDERS, ids=[c[0] for c in FOLDERS])
def test_hostile_image_folders_get_one_line(case_id, make, where, words, tmp_path, capsys, monkeypatch, no_ray):
    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    source = make(tmp_path / "data")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"trial: {{dataset: folder, data_dir: '{source}', model: resnet8, width: 0.25, epochs: 1}}\n")
    commands = {"validate": ["validate", str(sweep)],
                "train": ["train", "--set", "dataset=folder", f"data_dir={source}", "model=resnet8", "width=0.25",
                          "epochs=1", "batch_size=8", "eval_n=4", "final_attack=none", "--out", str(tmp_path / "out")]}
    for command in where:
        assert main(commands[command]) == 2, command
        one_line(capsys, *words)
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing cached from a bad source


# -- the decoded-image cache: a damaged one is decoded anew, one that cannot be written is one line --

def _cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _edited(edit):
    def damage(path):
        import torch

        cache = torch.load(path)
        edit(cache)
        torch.save(cache, path)
    return damage


def _fifo_in_its_place(path):
    path.unlink()
    os.mkfifo(path)


CACHE_DAMAGE = [
    ("cut-short", _cut_short, "PytorchStreamReader"),
    ("labels-permuted", _edited(lambda c: c.update(train_y=c["train_y"].flip(0))), "train_y does not match"),
    ("a-key-missing", _edited(lambda c: c.pop("test_x")), "no test_x"),
    ("another-version", _edited(lambda c: c.update(version=1)), "version 1"),
    ("a-fifo", _fifo_in_its_place, "a FIFO"),
]


@pytest.mark.parametrize("case_id, damage, words", CACHE_DAMAGE, ids=[c[0] for c in CACHE_DAMAGE])
def test_a_damaged_image_cache_is_decoded_anew_with_one_warning(case_id, damage, words, tmp_path, monkeypatch):
    import warnings

    import torch

    from bnsweep.core import folder
    from bnsweep.errors import DamagedWarning

    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    source = str(_tree(tmp_path / "data"))
    want = folder.load(source)
    damage(Path(folder.cache_path(source)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = folder.load(source)
    assert [str(w.message) for w in caught if w.category is DamagedWarning] == [
        f"decoded-image cache {folder.cache_path(source)} does not read back ({words}"
        + str(caught[0].message).split(words, 1)[1]]
    assert got["classes"] == want["classes"] and all(torch.equal(got[k], want[k]) for k in folder.TENSORS)
    again = folder.load(source)  # rewritten whole: no second warning, no second decode
    assert torch.equal(again["train_y"], want["train_y"])


def test_a_cut_cache_of_an_archive_gives_validate_and_train_one_warning(tmp_path, capsys, monkeypatch, no_ray):
    from bnsweep.core import folder

    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    source = _archive(tmp_path / "data")
    folder.load(str(source))
    _cut_short(Path(folder.cache_path(str(source))))
    folder._archive_inventory.cache_clear()  # a new process, as `validate` is
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"trial: {{dataset: folder, data_dir: '{source}', model: resnet8, width: 0.25, epochs: 1}}\n")
    assert main(["validate", str(sweep)]) == 0
    assert main(["train", "--set", "dataset=folder", f"data_dir={source}", "model=resnet8", "width=0.25", "epochs=1",
                 "batch_size=8", "eval_n=4", "final_attack=none", "--out", str(tmp_path / "out")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bnsweep: warning:")]
    assert len(warned) == 2 and all("does not read back (PytorchStreamReader" in line for line in warned), warned


@pytest.mark.parametrize("where", ["under-a-file", "on-a-full-disk"])
def test_an_image_cache_that_cannot_be_written_is_one_line(where, tmp_path, capsys, monkeypatch, small_tmpfs):
    if where == "under-a-file":
        (tmp_path / "afile").write_text("x")
        cache = tmp_path / "afile" / "cache"
    else:
        cache = small_tmpfs("16k") / "cache"
    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(cache))
    source = _tree(tmp_path / "data")
    (source / "train" / "ant" / "pad.png").write_bytes((source / "train" / "ant" / "000.png").read_bytes())
    for i in range(200):  # 40 KB of pixels once decoded: more than the 16 KiB disk holds
        (source / "test" / "ant" / f"{i:03d}x.png").write_bytes((source / "test" / "ant" / "000.png").read_bytes())
    assert main(["train", "--set", "dataset=folder", f"data_dir={source}", "model=resnet8", "width=0.25", "epochs=1",
                 "--out", str(tmp_path / "out")]) == 2
    line = one_line(capsys, "cannot write the decoded-image cache", "BNSWEEP_CACHE_DIR")
    assert str(cache) in line and not (tmp_path / "out").exists()
    if where == "on-a-full-disk":
        assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []  # no half-written file left


def test_16_bit_pngs_are_decoded_to_8_bits(tmp_path, monkeypatch):
    """A 16-bit PNG decoded as uint16 made trials fail later (in bincount); now it is 8-bit, rounded."""
    import struct
    import zlib

    import torch

    from bnsweep.core.data import load_dataset

    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    source = _tree(tmp_path / "data")
    values = torch.arange(64, dtype=torch.int64).reshape(8, 8) * 1000  # 0 .. 63000
    raw = b"".join(b"\x00" + struct.pack(">8H", *row) for row in values.tolist())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    for split in ("train", "test"):
        (source / split / "ant" / "000.png").write_bytes(png)  # the first image of each split
    ds = load_dataset("folder", data_dir=str(source), download=False, n_train=0, n_test=0, data_seed=0,
                      device="cpu")
    assert ds.train_x.dtype == torch.uint8 and ds.test_y.dtype == torch.int64
    from bnsweep.core import folder

    image = folder.load(str(source))["train_x"][0]
    assert torch.equal(image, ((values * 255 + 32767) // 65535).to(torch.uint8).expand(3, 8, 8))


# -- experiment files that are not what Ray or bnsweep wrote -------------------------------------
# A hand-made, started experiment (stages pre and adv, bnsweep_state.json, overrides.yaml) is damaged
# one way; each command then gives one error line (exit 2), or skips what it cannot read with one
# warning line (exit 0), and never hangs, reads a file whole that it need not, follows a link out of
# the experiment or deletes anything outside it. EXP is the experiment, OUT a directory beside it.

def started_experiment(base: Path) -> Path:
    import hashlib

    from _experiments import mixed_sweep

    root = mixed_sweep(base)
    (root / "overrides.yaml").write_text("epochs: 3\n")
    digest = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in ("sweep.yaml", "overrides.yaml")}
    (root / "bnsweep_state.json").write_text(json.dumps({
        "sweep_sha256": digest["sweep.yaml"], "overrides_sha256": digest["overrides.yaml"],
        "stages": {"pre": {"finished": True, "trials": 2, "checkpoints": {}}}}))
    return root


def _trial(root: Path, stage: str = "adv", index: int = 0) -> Path:
    return sorted(p for p in (root / stage).iterdir() if p.is_dir())[index]


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _sparse_result(root: Path) -> None:
    with open(_trial(root) / "result.json", "ab") as fh:
        fh.truncate(40 << 30)  # its rows, then 40 GiB of nothing


def _trial_dir_links_outside(root: Path) -> None:
    import shutil

    trial = _trial(root)
    shutil.move(trial, root.parent / "OUT")
    trial.symlink_to(root.parent / "OUT")


EXPERIMENT_FILES = [
    # (id, damage, {command: (exit status, words of the one line: an error when 2, a warning when 0)})
    ("sweep-yaml-a-fifo", lambda r: _replace_with_fifo(r / "sweep.yaml"),
     {"resume": (2, ["sweep.yaml", "FIFO"]), "status": (2, ["sweep.yaml", "FIFO"]),
      "results": (0, ["sweep.yaml", "FIFO"]), "prune": (2, ["sweep.yaml", "FIFO"])}),
    ("state-file-a-fifo", lambda r: _replace_with_fifo(r / "bnsweep_state.json"),
     {"resume": (2, ["bnsweep_state.json", "FIFO"]), "status": (2, ["bnsweep_state.json", "FIFO"]),
      "prune": (2, ["bnsweep_state.json", "FIFO"])}),
    ("state-file-40-gib", lambda r: os.truncate(r / "bnsweep_state.json", 40 << 30),
     {"resume": (2, ["bnsweep_state.json", "larger than 64 MiB"]), "status": (2, ["bnsweep_state.json", "64 MiB"])}),
    ("result-json-a-fifo", lambda r: _replace_with_fifo(_trial(r) / "result.json"),
     {"resume": (2, ["result.json", "FIFO"]), "status": (0, ["result.json", "FIFO", "trial skipped"]),
      "results": (0, ["result.json", "FIFO", "trial skipped"]), "history": (0, ["result.json", "FIFO"])}),
    ("result-json-40-gib-sparse", _sparse_result,
     {"status": (0, ["result.json", "no line ends in its last 16 MiB"]),
      "results": (0, ["result.json", "no line ends"]), "history": (0, ["result.json", "larger than 512 MiB"])}),
    ("result-json-link-to-dev-zero", lambda r: (_trial(r) / "result.json").unlink()
     or (_trial(r) / "result.json").symlink_to("/dev/zero"),
     {"resume": (2, ["result.json", "symbolic link"]), "results": (0, ["result.json", "symbolic link"]),
      "history": (0, ["result.json", "symbolic link"])}),
    ("params-json-a-fifo", lambda r: _replace_with_fifo(_trial(r) / "params.json"),
     {"results": (0, ["params.json", "FIFO"])}),
    # the newest snapshot, the one bnsweep reads (a stage that ran longer than a second has several)
    ("experiment-state-a-fifo", lambda r: _replace_with_fifo(r / "adv" / newest_snapshot(os.listdir(r / "adv"))),
     {"resume": (2, ["experiment_state", "FIFO"]), "results": (0, ["experiment_state", "FIFO"])}),
    ("trial-dir-a-link-outside", _trial_dir_links_outside,
     {"prune": (2, ["symbolic link", "trusted like code"]), "results": (0, ["symbolic link", "not followed"]),
      "status": (0, ["symbolic link"]), "resume": (2, ["symbolic link"])}),
    ("overrides-edited", lambda r: (r / "overrides.yaml").write_text("epochs: 30\n"),
     {"resume": (2, ["overrides.yaml", "edited after the experiment started"])}),
    ("overrides-removed", lambda r: (r / "overrides.yaml").unlink(),
     {"resume": (2, ["overrides.yaml", "edited"])}),
]
_COMMANDS = {"resume": ["resume", "EXP"], "status": ["status", "EXP"], "results": ["results", "EXP"],
             "history": ["results", "EXP", "--history"], "prune": ["prune", "EXP", "--yes"]}


@pytest.mark.parametrize("case_id, damage, expect", EXPERIMENT_FILES, ids=[c[0] for c in EXPERIMENT_FILES])
def test_damaged_experiment_files_get_one_line(case_id, damage, expect, tmp_path, capsys, no_ray):
    root = started_experiment(tmp_path)
    damage(root)
    outside = tree(tmp_path / "OUT") if (tmp_path / "OUT").exists() else None
    for command, (code, words) in expect.items():
        argv = [str(root) if a == "EXP" else a for a in _COMMANDS[command]]
        assert main(argv) == code, command
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        prefix = "bnsweep: error: " if code else "bnsweep: warning: "
        assert lines and all(line.startswith(prefix) for line in lines) and not CONTROL.search(err), (command, err)
        assert code == 0 or len(lines) == 1, (command, err)
        assert any(all(w in line for w in words) for line in lines), (command, words, err)
    if outside is not None:
        assert tree(tmp_path / "OUT") == outside  # prune deleted nothing outside the experiment


def test_every_bad_input_counted_in_the_docs():
    """The count of bad inputs tried that docs/reliability.md states is the number of rows of this
    file's tables."""
    import re
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    count = (len(CASES) + len(UP_FRONT) + len(TRAIN_CASES) + len(HOSTILE_FILES) + len(COMMAND_LINES) + len(FOLDERS)
             + len(CACHE_DAMAGE) + 2 + len(EXPERIMENT_FILES))  # 2: the cache that cannot be written
    assert re.search(rf"\b{count}\s+bad\s+inputs\b", page), count
