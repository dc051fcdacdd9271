"""Sweeps end to end on a shared local Ray: stages, from_stage checkpoints, failures, resume, Optuna, ASHA."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _experiments import TINY_TRIAL

from bnsweep import results
from bnsweep.cli import main
from bnsweep.core import checkpoints
from bnsweep.core.models import build_model
from bnsweep.core.trainable import trainable_names
from bnsweep.layout.paths import sweep_dir
from bnsweep.sweep import driver
from bnsweep.sweep.driver import SweepFailed, execute
from bnsweep.sweep.spec import load_sweep
from bnsweep.sweep.trial import run_trial


def write_sweep(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def run(sweep_file: Path, storage: Path, *, resume: bool = False, trainable=run_trial) -> str:
    sweep = load_sweep(str(sweep_file))
    root = sweep_dir(str(storage), sweep.name)
    execute(sweep, root, resume=resume, trainable=trainable)
    return root


def epochs_reported(trial_dir: str) -> list[int]:
    with open(os.path.join(trial_dir, "result.json")) as fh:
        return [json.loads(line)["epoch"] for line in fh if line.strip()]


def test_two_stage_sweep_starts_each_trial_from_the_matching_checkpoint(two_stage):
    df = results.load(two_stage)
    assert len(df) == 10 and set(df["status"]) == {"terminated"}
    pre = df[df.stage == "pre"].set_index("seed")
    adv = df[(df.stage == "adv") & (df.init == "from_stage:pre")]
    assert len(adv) == 4
    for _, row in adv.iterrows():
        source_dir = pre.loc[row.seed, "trial_dir"]
        assert row.init_checkpoint.startswith(source_dir + "/checkpoint_")
        assert row.init_checkpoint == pre.loc[row.seed, "checkpoint"]  # the newest: after the last epoch
        # every parameter outside `trainable` is the pre-trained one, bit for bit
        source = checkpoints.load(row.init_checkpoint)["model"]
        trained = checkpoints.load(row.checkpoint)["model"]
        model = build_model("resnet8", 10, width=0.25)
        chosen = trainable_names(model, row.trainable)
        frozen = [k for k, _ in model.named_parameters() if k not in chosen]
        assert frozen and all(torch.equal(source[k], trained[k]) for k in frozen)
        assert any(not torch.equal(source[k], trained[k]) for k in chosen if k.endswith("weight"))
    random_init = df[(df.stage == "adv") & (df.init == "random")]
    assert (random_init["init_checkpoint"] == "").all()


def test_a_stage_matched_on_more_keys_than_its_source_stage_finds_its_checkpoints(tmp_path, ray_local):
    """A chain of three stages: `ft` starts from `adv` matched on trainable too, which `adv` itself (matched
    on the default keys against `pre`) does not list: each ft trial takes the adv trial of its trainable."""
    trial = {**TINY_TRIAL, "epochs": 1}
    doc = {"name": "chain", "trial": trial,
           "stages": [{"name": "pre", "trial": {"train_attack": "none"}},
                      {"name": "adv", "trial": {"init": {"from_stage": "pre"}}, "grid": {"trainable": ["bn", "fc"]}},
                      {"name": "ft", "trial": {"init": {"from_stage": "adv"}}, "grid": {"trainable": ["bn", "fc"]},
                       "match": ["dataset", "model", "seed", "trainable"]}]}
    root = run(write_sweep(tmp_path / "chain.yaml", doc), tmp_path / "results")
    df = results.load(root)
    assert len(df) == 5 and set(df["status"]) == {"terminated"}
    adv = df[df.stage == "adv"].set_index("trainable")
    ft = df[df.stage == "ft"].set_index("trainable")
    assert (adv["init_checkpoint"] == df[df.stage == "pre"]["checkpoint"].iloc[0]).all()
    for trainable in ("bn", "fc"):
        assert ft.loc[trainable, "init_checkpoint"] == adv.loc[trainable, "checkpoint"]


def test_gpu_request_without_gpu_runs_on_cpu(two_stage):
    df = results.load(two_stage)
    assert (df["status"] == "terminated").all()  # nothing left pending for want of a GPU
    assert set(df["device_used"]) == {"cpu"} and set(df["cuda_visible_devices"]) == {"unset"}


def test_rerunning_a_finished_sweep_refuses_and_resume_redoes_nothing(two_stage, capsys, monkeypatch):
    before = {d: epochs_reported(d) for d in results.load(two_stage)["trial_dir"]}
    sweep_text = open(os.path.join(two_stage, "sweep.yaml")).read()
    sweep_file = Path(two_stage).parent / "again.yaml"
    sweep_file.write_text(sweep_text)
    assert main(["run", str(sweep_file), "--storage", str(Path(two_stage).parent)]) == 2
    assert "bnsweep resume" in capsys.readouterr().err

    def no_ray(address):
        raise AssertionError("a finished experiment needs no Ray")

    monkeypatch.setattr(driver, "connect", no_ray)
    assert main(["resume", two_stage]) == 0
    assert "every stage of" in capsys.readouterr().err
    after = {d: epochs_reported(d) for d in results.load(two_stage)["trial_dir"]}
    assert after == before


def test_run_resume_starts_an_experiment_that_does_not_exist_yet(tmp_path, ray_local):
    sweep_file = write_sweep(tmp_path / "fresh.yaml", {"name": "fresh", "trial": {**TINY_TRIAL, "epochs": 1}})
    assert main(["run", str(sweep_file), "--storage", str(tmp_path / "results"), "--resume"]) == 0
    assert list(results.load(tmp_path / "results" / "fresh")["status"]) == ["terminated"]


def trial_failing_after(config: dict, kwargs: dict, should_fail) -> None:
    """`run_trial`, raising in the epoch after a report for which `should_fail(metrics)` is true (when
    its report is due): a crash mid-training. (Ray hands a report to the driver asynchronously, so a
    process that dies the instant after `tune.report` returns can lose that last report.)"""
    from ray import tune

    real_report = tune.report
    crash_next = []

    def report(metrics, checkpoint=None):
        if crash_next:
            raise RuntimeError("injected failure")
        real_report(metrics, checkpoint=checkpoint)
        if should_fail(metrics):
            crash_next.append(metrics["epoch"])

    tune.report = report
    try:
        run_trial(config, **kwargs)
    finally:
        tune.report = real_report


def flaky_trial(config, **kwargs):
    """Fails once per trial right after reporting epoch 1 (a marker file remembers it failed)."""
    marker = os.path.join(config["data_dir"], f"{config['stage']}-{config['seed']}")

    def once(metrics):
        if metrics["epoch"] == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            return True
        return False

    trial_failing_after(config, kwargs, once)


def blocked_trial(config, **kwargs):
    """Seed 1 fails after epoch 1 while the block file exists: an interruption that needs `resume`."""
    block = os.path.join(config["data_dir"], "block")
    trial_failing_after(config, kwargs,
                        lambda metrics: config["seed"] == 1 and metrics["epoch"] == 1 and os.path.exists(block))


@pytest.fixture
def markers(tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    path = tmp_path / "markers"
    path.mkdir()
    return path


def test_trial_that_raises_once_resumes_from_its_checkpoint(tmp_path, ray_local, markers):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    doc = {"name": "flaky", "trial": {**TINY_TRIAL, "epochs": 3, "data_dir": str(markers)}, "grid": {"seed": [0]},
           "max_failures": 1}
    root = run(write_sweep(tmp_path / "flaky.yaml", doc), tmp_path / "results", trainable=flaky_trial)
    df = results.load(root)
    assert list(df["status"]) == ["terminated"] and (markers / "main-0").exists()
    assert epochs_reported(df["trial_dir"][0]) == [1, 2, 3]
    assert int(df["num_failures"][0]) == 1
    events = EventAccumulator(os.path.join(root, "main", "main"))  # its TensorBoard run, named for its stage
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy/clean")] == [1, 2, 3]


def test_interrupted_sweep_finishes_with_resume_without_rerunning(tmp_path, ray_local, markers):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    doc = {"name": "interrupted", "trial": {**TINY_TRIAL, "data_dir": str(markers)}, "grid": {"seed": [0, 1]},
           "max_failures": 0}
    sweep_file = write_sweep(tmp_path / "i.yaml", doc)
    (markers / "block").touch()
    with pytest.raises(SweepFailed, match="1 of 2 trial"):
        run(sweep_file, tmp_path / "results", trainable=blocked_trial)
    root = sweep_dir(str(tmp_path / "results"), "interrupted")
    df = results.load(root).set_index("seed")
    assert df.loc[0, "status"] == "terminated" and df.loc[1, "status"] == "error"
    finished = df.loc[0, "trial_dir"]
    before = Path(finished, "result.json").read_text()
    (markers / "block").unlink()
    run(sweep_file, tmp_path / "results", resume=True, trainable=blocked_trial)
    df = results.load(root).set_index("seed")
    assert set(df["status"]) == {"terminated"}
    assert Path(finished, "result.json").read_text() == before  # not rerun: same rows, same timestamps
    assert epochs_reported(df.loc[1, "trial_dir"]) == [1, 2]  # resumed at epoch 2, each epoch once
    events = EventAccumulator(os.path.join(root, "main", "seed 1"))  # its TensorBoard run continues
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy/clean")] == [1, 2]
    end = metadata.parse_session_end_info_plugin_data(events.PluginTagToContent("hparams")["_hparams_/session_end_info"])
    assert end.status == api_pb2.STATUS_SUCCESS  # the error did not end its session


def test_optuna_search(tmp_path, ray_local):
    doc = {"name": "opt", "trial": {**TINY_TRIAL, "epochs": 1}, "search_alg": "optuna", "num_samples": 2,
           "search": {"lr": {"loguniform": [0.01, 0.2]}, "trainable": {"choice": ["bn", "all"]}}}
    df = results.load(run(write_sweep(tmp_path / "o.yaml", doc), tmp_path / "results"))
    assert len(df) == 2 and set(df["status"]) == {"terminated"}
    assert df["lr"].between(0.01, 0.2).all() and df["lr"].nunique() == 2
    assert set(df["trainable"]) <= {"bn", "all"}


def test_asha_scheduler_stops_at_max_t(tmp_path, ray_local):
    doc = {"name": "asha", "trial": {**TINY_TRIAL, "epochs": 3}, "grid": {"seed": [0, 1]},
           "scheduler": {"asha": {"max_t": 2, "grace_period": 1, "reduction_factor": 2}}}
    df = results.load(run(write_sweep(tmp_path / "a.yaml", doc), tmp_path / "results"))
    assert set(df["status"]) == {"terminated"}
    assert all(epochs_reported(d)[-1] <= 2 for d in df["trial_dir"])  # ASHA cut every trial at max_t


def test_trainable_expressions_are_strings_in_results_and_tensorboard(tmp_path, ray_local, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    doc = {"name": "cuts", "trial": {**TINY_TRIAL, "epochs": 1}, "grid": {"trainable": ["bn@stage3+fc", "all-stem"]}}
    root = run(write_sweep(tmp_path / "cuts.yaml", doc), tmp_path / "results")
    capsys.readouterr()  # Ray's progress table
    df = results.load(root).set_index("trainable")
    assert sorted(df.index) == ["all-stem", "bn@stage3+fc"] and set(df["status"]) == {"terminated"}
    model = build_model("resnet8", 10, width=0.25)
    for expression, groups in [("bn@stage3+fc", "fc+bn@stage3"), ("all-stem", "fc+stage1+stage2+stage3")]:
        assert df.loc[expression, "trainable_groups"] == groups
        chosen = trainable_names(model, expression)
        assert df.loc[expression, "n_trainable_params"] == sum(p.numel() for n, p in model.named_parameters()
                                                              if n in chosen)
    assert main(["results", root, "--where", "trainable == 'bn@stage3+fc'", "--columns", "trainable,trainable_groups",
                 "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["trainable,trainable_groups", "bn@stage3+fc,fc+bn@stage3"]
    assert main(["table", root]) == 0
    assert "| bn@stage3+fc |" in capsys.readouterr().out
    for expression in df.index:  # its TensorBoard run is named by it, and the hparams view shows it as a string
        events = EventAccumulator(os.path.join(root, "main", expression))
        events.Reload()
        assert expression.encode() in events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
