"""The Python entry points `bnsweep.run_sweep` and `bnsweep.resume`: what `bnsweep run` and `bnsweep
resume` do, called from Python (a real sweep on the tests' shared local Ray)."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from _experiments import TINY_TRIAL

import bnsweep
from bnsweep import results
from bnsweep.errors import ConfigError


def write(path, doc: dict) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_run_sweep_then_resume_from_python(tmp_path, ray_local):
    doc = {"name": "py", "trial": {**TINY_TRIAL, "epochs": 2}, "grid": {"seed": [0, 1]}}
    storage = tmp_path / "results"
    root = bnsweep.run_sweep(write(tmp_path / "py.yaml", doc), {"lr": 0.05}, storage=str(storage))
    assert root == str(storage / "py")
    df = results.load(root)
    assert sorted(df["seed"]) == [0, 1] and set(df["status"]) == {"terminated"} and set(df["lr"]) == {0.05}
    assert (df["training_iteration"] == 2).all()
    # an unfinished stage (as if stopped): resume runs it again with the stored --set, adding nothing
    state_file = os.path.join(root, "bnsweep_state.json")
    state = json.loads(open(state_file).read())
    state["stages"]["main"]["finished"] = False
    with open(state_file, "w") as fh:
        json.dump(state, fh)
    assert bnsweep.resume(root) == root
    again = results.load(root)
    assert json.loads(open(state_file).read())["stages"]["main"]["finished"]
    assert sorted(again["trial_id"]) == sorted(df["trial_id"]) and set(again["lr"]) == {0.05}


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    storage = tmp_path / "results"
    with pytest.raises(ConfigError, match="lr"):
        bnsweep.run_sweep(write(tmp_path / "bad.yaml", {"trial": {**TINY_TRIAL, "lr": -1}}), storage=str(storage))
    with pytest.raises(ConfigError, match="resume"):
        bnsweep.resume(tmp_path / "none")
    assert not storage.exists()


def test_train_from_python_writes_and_resumes_a_run_directory(tmp_path):
    from bnsweep.errors import UsageError

    keys = {**TINY_TRIAL, "epochs": 1}
    out = str(tmp_path / "run")
    final = bnsweep.train(keys, out)
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "final.json", "metrics.jsonl"]
    assert final == json.loads(open(os.path.join(out, "final.json")).read()) and final["epoch"] == 1
    with pytest.raises(UsageError, match="already holds a run"):
        bnsweep.train(keys, out)
    again = bnsweep.train({"epochs": 2}, out, resume=True)  # the saved keys, one more epoch
    assert again["epoch"] == 2
    epochs = [json.loads(line)["epoch"] for line in open(os.path.join(out, "metrics.jsonl"))]
    assert epochs == [1, 2]
    assert json.loads(open(os.path.join(out, "config.json")).read())["epochs"] == 1  # as the run began
