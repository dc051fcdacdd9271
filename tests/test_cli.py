"""`bnsweep train` / `bnsweep eval`: bad input exits 2 with one line; a tiny run writes its files and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _experiments import TIMING

import bnsweep.core.train
from bnsweep.cli import main
from bnsweep.core import checkpoints
from bnsweep.core.config import make_config

TINY = ["dataset=planted", "model=resnet8", "width=0.25", "n_train=128", "n_test=64", "eval_n=64",
        "batch_size=64", "train_steps=2", "eval_steps=2", "final_steps=3", "device=cpu", "trainable=bn"]


def one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bnsweep: error: ")
    return lines[0]


@pytest.mark.parametrize("setting, key, value", [
    ("trainable=bnn", "trainable", "bnn"),
    ("adv_fraction=2", "adv_fraction", "2"),
    ("train_eps_255=-1", "train_eps_255", "-1"),
    ("foo=1", "key", "foo"),
    ("epochs=three", "epochs", "three"),
    ("epochs=0", "epochs", "0"),
    ("batch_size=0", "batch_size", "0"),
    ("dataset=mnist", "dataset", "mnist"),
    ("model=resnet9", "model", "resnet9"),
    ("init=/no/such/checkpoint.pt", "init", "/no/such/checkpoint.pt"),
    ("eval_eps_255=[]", "eval_eps_255", "[]"),
    ("lr=fast", "lr", "fast"),
    ("epochs", "--set", "epochs"),
])
def test_train_bad_set_exits_2_with_one_line(capsys, tmp_path, setting, key, value):
    out = tmp_path / "out"
    assert main(["train", "--set", setting, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert f"{key}:" in line and value in line
    assert not out.exists()  # refused before anything was written or loaded


@pytest.mark.parametrize("content, what", [
    ("trainable: bn\nepochs: [1\n", "parse error"),
    ("- trainable: bn\n- epochs: 1\n", "mapping"),
    ("just a string\n", "mapping"),
])
def test_train_bad_config_file_exits_2(capsys, tmp_path, content, what):
    path = tmp_path / "trial.yaml"
    path.write_text(content)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert "file:" in line and str(path) in line and what in line
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.yaml" in one_error_line(capsys)


def test_bad_value_in_config_file_names_file_and_key(capsys, tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text("trainable: bn\nbn_stats: moving\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "bn_stats:" in line and "moving" in line


def test_eval_missing_checkpoint_exits_2(capsys, tmp_path):
    assert main(["eval", "/no/such.pt"]) == 2
    line = one_error_line(capsys)
    assert "checkpoint:" in line and "/no/such.pt" in line
    assert main(["eval", str(tmp_path)]) == 2  # a directory without checkpoint.pt
    assert str(tmp_path) in one_error_line(capsys)
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    assert main(["eval", str(bogus)]) == 2
    assert str(bogus) in one_error_line(capsys)


def test_real_process_exit_status_2(tmp_path):
    bnsweep_bin = os.path.join(os.path.dirname(sys.executable), "bnsweep")
    cmd = [bnsweep_bin] if os.path.exists(bnsweep_bin) else [sys.executable, "-m", "bnsweep.cli"]
    proc = subprocess.run(cmd + ["train", "--set", "trainable=bnn", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "trainable" in proc.stderr and "bnn" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bnsweep.cli", "eval", "/no/such.pt"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "/no/such.pt" in proc.stderr


def read_jsonl(path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_eval_measures_as_the_final_evaluation(capsys, tmp_path):
    """`bnsweep eval` of a trial's checkpoint with the final attack's images, radius, steps and restarts
    reports the trial's final robust accuracy: one evaluation path, with the trial's step size (here
    not the default) and seed."""
    out = tmp_path / "run"
    assert main(["train", "--set", *TINY, "n_train=512", "trainable=all", "epochs=3", "train_attack=none",
                 "eval_step_255=0.25", "final_steps=4", "eval_eps_255=[2]", "--out", str(out)]) == 0
    final = json.loads((out / "final.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint.pt"), "--eps-255", "2", "--n", "64", "--steps", "4"]) == 0
    eps, clean, robust = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert (float(eps), float(clean)) == (2.0, pytest.approx(final["final_clean_acc"], abs=1e-4))
    assert float(robust) == pytest.approx(final["final_robust_acc"], abs=1e-4)
    assert 0 < final["final_robust_acc"] < final["final_clean_acc"]  # the attack did something: not 0 = 0


def test_train_writes_run_refuses_rerun_resumes_and_evals(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--set", *TINY, "epochs=2", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "final.json", "metrics.jsonl"]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert "final_robust_acc" in metrics[1] and "final_robust_acc" not in metrics[0]
    final = json.loads((out / "final.json").read_text())
    assert final == metrics[-1]
    config = json.loads((out / "config.json").read_text())
    assert config["trainable"] == "bn" and config["epochs"] == 2
    assert os.path.isabs(config["data_dir"])
    assert make_config(config).to_dict() == config
    state = checkpoints.load(str(out / "checkpoint.pt"))
    assert state["epoch"] == 2 and state["config"] == config
    capsys.readouterr()

    # the same --out again is refused; nothing is overwritten
    assert main(["train", "--set", *TINY, "epochs=2", "--out", str(out)]) == 2
    assert "--out" in one_error_line(capsys)
    assert read_jsonl(out / "metrics.jsonl") == metrics

    # --resume of a finished run (without repeating --set) keeps its config and adds nothing
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert read_jsonl(out / "metrics.jsonl") == metrics
    assert json.loads((out / "config.json").read_text()) == config
    # fewer epochs than the checkpoint has trained are refused, and nothing is written
    resumes = read_jsonl(out / "resumes.jsonl")
    assert main(["train", "--out", str(out), "--resume", "--set", "epochs=1"]) == 2
    assert "epochs: 1" in one_error_line(capsys)
    assert read_jsonl(out / "resumes.jsonl") == resumes and read_jsonl(out / "metrics.jsonl") == metrics
    # ... and so is another architecture, naming the checkpoint it does not fit
    assert main(["train", "--out", str(out), "--resume", "--set", "width=0.5"]) == 2
    assert f"resume: {str(out / 'checkpoint.pt')!r}" in one_error_line(capsys)
    assert read_jsonl(out / "resumes.jsonl") == resumes
    # ... and with more epochs it continues from epoch 3; config.json stays as the run began
    assert main(["train", "--out", str(out), "--resume", "--set", "epochs=3"]) == 0
    assert [m["epoch"] for m in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text()) == config
    last = read_jsonl(out / "resumes.jsonl")[-1]
    assert last["from_epoch"] == 2 and last["config"] == {**config, "epochs": 3}
    capsys.readouterr()

    # eval prints a table of radii
    assert main(["eval", str(out / "checkpoint.pt"), "--eps-255", "2", "8", "--n", "64", "--steps", "3"]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert "n=64" in stdout[0]
    assert stdout[1].split() == ["eps_255", "clean_acc", "robust_acc"]
    rows = [line.split() for line in stdout[2:]]
    assert [r[0] for r in rows] == ["2", "8"]
    clean = float(rows[0][1])
    assert float(rows[1][2]) <= float(rows[0][2]) <= clean and float(rows[1][1]) == clean
    assert main(["eval", str(out), "--eps-255", "8", "--n", "16", "--steps", "1"]) == 0  # a directory works
    assert main(["eval", str(out), "--eps-255", "-1", "--n", "16"]) == 2
    assert "eval_eps_255" in one_error_line(capsys)


def test_interrupted_train_resumes_to_the_same_result(capsys, tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = ["train", "--set", *TINY, "epochs=2", "--out"]
    assert main(args + [str(full)]) == 0

    def interrupt(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(bnsweep.core.train.Trial, "final_evaluation", interrupt)  # Ctrl-C in the last epoch
        assert main(args + [str(cut)]) == 130
    assert [m["epoch"] for m in read_jsonl(cut / "metrics.jsonl")] == [1]
    assert main(["train", "--out", str(cut), "--resume"]) == 0

    def no_timing(rows):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    assert no_timing(read_jsonl(cut / "metrics.jsonl")) == no_timing(read_jsonl(full / "metrics.jsonl"))
    assert json.loads((cut / "config.json").read_text()) == json.loads((full / "config.json").read_text())


def test_config_file_with_set_override(capsys, tmp_path):
    path = tmp_path / "trial.yaml"
    keys = [s.replace("=", ": ") for s in TINY if not s.startswith("trainable=")]  # a key twice is refused
    path.write_text("\n".join(keys) + "\ntrainable: fc\nepochs: 1\nlr: 5e-2\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--set", "trainable=bn+fc", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["trainable"] == "bn+fc"  # --set wins over the file
    assert config["lr"] == 0.05 and config["epochs"] == 1 and config["model"] == "resnet8"  # the file's values
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


def test_sweep_set_overrides_every_stage_and_refuses_grid_keys(capsys, tmp_path):
    from pathlib import Path

    from bnsweep.core.yamlfile import parse_overrides
    from bnsweep.sweep.spec import load_sweep

    demo = str(Path(__file__).parent.parent / "sweeps" / "demo.yaml")
    sweep = load_sweep(demo, parse_overrides(["epochs=1", "n_train=200", "eval_eps_255=[4, 8]"]))
    assert sweep.overrides == {"epochs": 1, "n_train": 200, "eval_eps_255": [4, 8]}
    for stage in sweep.stages:  # on top of every stage's own trial: (both stages set epochs)
        assert (stage.base["epochs"], stage.base["n_train"], stage.base["eval_eps_255"]) == (1, 200, [4.0, 8.0])
    assert main(["validate", demo, "--set", "epochs=1"]) == 0
    assert "--set in every stage: epochs=1" in capsys.readouterr().out
    for setting, words in (("trainable=bn", ["stage 'adv'", "trainable=bn", "grid: varies trainable"]),
                           ("seed=3", ["stage 'pretrain'", "seed=3", "grid: varies seed"]),
                           ("lrr=0.1", ["--set", "lrr", "trial keys"]),
                           ("epochs=0", ["trial.epochs", "0"])):
        for command in ("validate", "run"):
            argv = [command, demo, "--set", setting] + (["--storage", str(tmp_path)] if command == "run" else [])
            assert main(argv) == 2
            line = one_error_line(capsys)
            assert all(w in line for w in words), line
    assert not list(tmp_path.iterdir())  # nothing written


def test_sweep_set_is_stored_so_resume_runs_the_same(capsys, tmp_path, monkeypatch):
    """Overrides written beside sweep.yaml and read back by `bnsweep resume`: the trial settings each
    stage hands Ray Tune (its param_space) carry them. Only Ray's Tuner is left out (no Ray here)."""
    import yaml

    from bnsweep.layout.paths import sweep_dir
    from bnsweep.sweep import driver

    ran = []
    monkeypatch.setattr(driver, "connect", lambda address: None)
    monkeypatch.setattr(driver, "run_stage", lambda sweep, stage, root, lookup, trainable:
                        ran.append(driver.param_space(stage, lookup)) or [])
    monkeypatch.setattr("bnsweep.cli.sweeps.summary", lambda root, stage: "")
    monkeypatch.setattr(driver, "check_resources", lambda sweep, stages: None)  # no cluster to compare with
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: s\ntrial: {dataset: planted, model: resnet8, epochs: 3}\n"
                          "stages:\n  - name: a\n  - name: b\n    trial: {epochs: 5}\n")
    storage = str(tmp_path / "results")
    assert main(["run", str(sweep_file), "--storage", storage, "--set", "epochs=1", "lr=5e-2"]) == 0
    root = sweep_dir(storage, "s")
    assert yaml.safe_load(open(os.path.join(root, "overrides.yaml"))) == {"epochs": 1, "lr": 0.05}
    assert open(os.path.join(root, "sweep.yaml")).read() == sweep_file.read_text()  # the file as written
    assert [(space["stage"], space["epochs"], space["lr"]) for space in ran] == [("a", 1, 0.05), ("b", 1, 0.05)]

    stored = driver.resume_sweep(root)  # what `bnsweep resume` runs
    assert stored.overrides == {"epochs": 1, "lr": 0.05}
    assert [(s.base["epochs"], s.base["lr"]) for s in stored.stages] == [(1, 0.05), (1, 0.05)]
    capsys.readouterr()
    assert main(["run", str(sweep_file), "--storage", storage, "--resume"]) == 2  # without the --set
    assert "the --set the experiment started with: epochs=1 lr=0.05" in one_error_line(capsys)
    assert main(["run", str(sweep_file), "--storage", storage, "--resume", "--set", "epochs=1", "lr=0.05"]) == 0

    # `bnsweep resume` of the experiment with stage b unfinished runs b, with the stored --set
    state_file = os.path.join(root, "bnsweep_state.json")
    state = json.loads(open(state_file).read())
    del state["stages"]["b"]
    with open(state_file, "w") as fh:
        json.dump(state, fh)
    ran.clear()
    assert main(["resume", root]) == 0
    assert [(space["stage"], space["epochs"], space["lr"]) for space in ran] == [("b", 1, 0.05)]
