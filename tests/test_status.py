"""`bnsweep status`: counts, epochs, best trial and ETA per stage, on fake experiments in every state
and on a real sweep while it runs; read-only."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bnsweep import results
from bnsweep.cli import main
from bnsweep.layout.paths import sweep_dir
from bnsweep.results.status import format_status, sweep_status
from bnsweep.sweep.driver import execute
from bnsweep.sweep.spec import load_sweep
from bnsweep.testing import (
    FakeTrial,
    realistic_config,
    realistic_rows,
    write_experiment,
)


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in root.rglob("*")}


def by_name(stages) -> dict:
    return {s.name: s for s in stages}


def test_mixed_sweep_counts_epochs_best_and_eta(mixed_dir):
    before = snapshot(mixed_dir)
    root, stages = sweep_status(str(mixed_dir))
    assert snapshot(mixed_dir) == before  # read-only: nothing written, no lock file
    pre, adv = by_name(stages)["pre"], by_name(stages)["adv"]
    assert [s.name for s in stages] == ["pre", "adv"]  # the sweep file's order
    assert pre.counts == {"pending": 0, "running": 0, "terminated": 2, "error": 0, "diverged": 0}
    assert adv.counts == {"pending": 1, "running": 2, "terminated": 2, "error": 1, "diverged": 1}
    # adv, 3 epochs each: terminated 3 + 3, error 1 (of 3), running 2 and 1 (of 3), pending 0 (of 3),
    # diverged 2 (ended there)
    assert (adv.epochs_done, adv.epochs_total) == (12, 20)
    assert (pre.epochs_done, pre.epochs_total) == (6, 6)
    # the fake rows take 60 s per epoch; 8 epochs left, 2 trials running
    assert adv.eta_s == pytest.approx(8 * 60 / 2) and pre.eta_s == 0
    assert (pre.metric, adv.metric) == ("clean_acc", "robust_acc")  # per stage, from sweep.yaml
    # the best is the terminated trial with the highest robust_acc, never a running or diverged one
    trials = results.load(str(mixed_dir))
    done = trials[(trials["stage"] == "adv") & (trials["status"] == "terminated")]
    value, rest = adv.best.split(", trial ")
    assert rest.split()[0] in set(done["trial_id"]) and len(done) == 2
    assert float(value) == pytest.approx(done["robust_acc"].max(), rel=1e-3)
    assert float(value) > done["robust_acc"].min()  # two different values: the choice mattered
    assert not pre.finished and not adv.finished  # no bnsweep_state.json

    text = format_status(root, stages, now=1_767_225_600 + 3600 * 24 * 30)
    assert "5 of 9 trial(s) ended, 0 of 2 stage(s) finished" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith(("pre ", "adv "))}
    assert lines["adv"].split()[:8] == ["adv", "7", "1", "2", "2", "1", "1", "12/20"]
    # the newest fake report is 3 min after the fake start; ETA as above
    assert lines["adv"].endswith("29 d 23 h ago  4 min 0 s") and lines["pre"].endswith("done")


def test_status_imports_neither_torch_nor_ray(mixed_dir):
    """Their imports alone take seconds: status must answer fast beside a running sweep."""
    code = ("import sys; from bnsweep.cli import main; assert main(['status', sys.argv[1]]) == 0; "
            "assert not {'torch', 'ray'} & set(sys.modules), sorted({'torch', 'ray'} & set(sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(mixed_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_trial_status_and_paused_and_stages_not_started(tmp_path):
    rng = random.Random(1)
    root = tmp_path / "sweep"
    (root / "sweep.yaml").parent.mkdir(parents=True)
    (root / "sweep.yaml").write_text(yaml.safe_dump({
        "trial": {"epochs": 4}, "grid": {"seed": [0, 1, 2, 3, 4, 5]},
        "stages": [{"name": "one", "metric": "train_loss", "mode": "min"},
                   {"name": "two", "grid": {"epochs": [2, 6]}}]}))

    def trial(seed, status, epochs_run, **kw):
        config = {**realistic_config(seed, "bn", "random", "one"), "epochs": 4}
        return FakeTrial(config, realistic_rows(4, rng)[:epochs_run], status=status, **kw)

    write_experiment(root / "one", [trial(0, "TERMINATED", 4), trial(1, "ERROR", 2), trial(2, "RUNNING", 3),
                                    trial(3, "PAUSED", 1), trial(4, "PENDING", 0)])
    _, stages = sweep_status(str(root))
    one, two = stages
    # six planned, five known to Ray: the sixth is pending too
    assert one.counts == {"pending": 2, "running": 1, "terminated": 1, "error": 1, "diverged": 0, "paused": 1}
    assert (one.epochs_done, one.epochs_total) == (4 + 2 + 3 + 1, 6 * 4)
    assert one.best.startswith(f"{realistic_rows(4, random.Random(1))[3]['train_loss']:.4g}, trial a0b1c_00000")
    # stage two has not started: everything pending, epochs planned from its grid (6 seeds x [2, 6])
    assert two.counts == {"pending": 12, "running": 0, "terminated": 0, "error": 0, "diverged": 0}
    assert (two.epochs_done, two.epochs_total, two.best, two.eta_s, two.newest) == (0, 48, None, None, None)
    text = format_status(str(root), stages)
    assert "paused" in text.splitlines()[2] and "nothing reported yet" in text


def test_sweep_started_without_trials_and_a_path_with_nothing(tmp_path, capsys):
    root = tmp_path / "new"
    root.mkdir()
    (root / "sweep.yaml").write_text("grid: {seed: [0, 1, 2]}\n")
    _, (stage,) = sweep_status(str(root))
    assert stage.name == "main" and stage.counts["pending"] == 3 and stage.epochs_total == 30  # default epochs
    assert main(["status", str(tmp_path / "empty")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_watch_stops_when_every_stage_finished(mixed_dir, tmp_path, capsys, monkeypatch):
    finished = tmp_path / "finished"
    rows = realistic_rows(2, random.Random())
    write_experiment(finished / "main", [FakeTrial(realistic_config(0, "bn", "random"), rows)])
    (finished / "sweep.yaml").write_text("name: finished\n")
    (finished / "bnsweep_state.json").write_text(json.dumps({"stages": {"main": {"finished": True, "checkpoints": {}}}}))
    assert main(["status", str(finished), "--watch", "0.1"]) == 0
    assert capsys.readouterr().out.count("1 of 1 stage(s) finished") == 1  # once: nothing left to watch
    sleeps = []

    def sleep(seconds):  # an unfinished sweep refreshes until Ctrl-C
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    assert main(["status", str(mixed_dir), "--watch"]) == 0
    assert sleeps == [10.0, 10.0] and capsys.readouterr().out.count("sweep mixed") == 2
    assert main(["status", str(mixed_dir), "--watch", "0"]) == 2


def gated_trial(config: dict, storage_root: str | None = None) -> None:
    """Reports epoch 1 with a checkpoint, then waits for the file `gate` before the remaining epochs."""
    import tempfile

    from ray import tune

    gate = os.path.join(config["data_dir"], "gate")
    for epoch in range(1, config["epochs"] + 1):
        with tempfile.TemporaryDirectory() as checkpoint:
            Path(checkpoint, "state").write_text(str(epoch))
            tune.report({"epoch": epoch, "robust_acc": 0.1 * epoch + 0.01 * config["seed"]},
                        checkpoint=tune.Checkpoint.from_directory(checkpoint))
        while epoch == 1 and not os.path.exists(gate):
            time.sleep(0.05)


def test_status_and_prune_of_a_real_sweep_while_it_runs_and_after(tmp_path, ray_local, capsys):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    doc = {"name": "live", "trial": {"dataset": "planted", "model": "resnet8", "epochs": 3,
                                     "data_dir": str(tmp_path)}, "grid": {"seed": [0, 1]}}
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(doc))
    root = sweep_dir(str(tmp_path / "results"), "live")
    run = threading.Thread(target=execute, args=(load_sweep(str(path)), root),
                           kwargs={"resume": False, "trainable": gated_trial})
    run.start()
    try:
        deadline = time.time() + 120
        while len([p for p in Path(root).glob("main/*/result.json") if p.stat().st_size]) < 2:
            assert time.time() < deadline and run.is_alive(), "the trials did not report"
            time.sleep(0.1)
        _, (stage,) = sweep_status(root)  # the driver holds its lock meanwhile
        assert stage.counts == {"pending": 0, "running": 2, "terminated": 0, "error": 0, "diverged": 0}
        assert (stage.epochs_done, stage.epochs_total) == (2, 6)
        assert stage.best.startswith("0.11, trial") and "seed=1, running" in stage.best
        assert stage.eta_s is not None and not stage.finished
        assert main(["prune", root, "--yes"]) == 0  # running trials keep every checkpoint
        assert "nothing to delete" in capsys.readouterr().out
    finally:
        (tmp_path / "gate").touch()
        run.join(timeout=120)
    _, (stage,) = sweep_status(root)
    assert stage.counts["terminated"] == 2 and (stage.epochs_done, stage.epochs_total) == (6, 6)
    assert stage.finished and stage.best.startswith("0.31, trial")

    # Ray kept 2 checkpoints per trial (checkpoints_to_keep); ended trials need only the newest
    before = results.load(root)
    assert len(list(Path(root).glob("main/*/checkpoint_*"))) == 4
    assert main(["prune", root, "--yes"]) == 0 and "deleted 2 checkpoint(s)" in capsys.readouterr().out
    assert sorted(p.name for p in Path(root).glob("main/*/checkpoint_*")) == ["checkpoint_000002"] * 2
    pd.testing.assert_frame_equal(results.load(root), before)
