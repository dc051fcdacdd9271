"""`bnsweep prune`: frees the checkpoints ended trials no longer need, keeps what stages and resume need,
never touches results, and deletes only when told to."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pandas as pd
import pytest

from bnsweep import prune, results
from bnsweep.cli import main
from bnsweep.testing import (
    FakeTrial,
    realistic_config,
    realistic_rows,
    write_experiment,
)

EPOCHS = 3


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Stage pre (2 ended trials, 3 checkpoints each; the state file names an older one of seed 1),
    stage adv (terminated, diverged, error, running: 3, 1, 1, 2 checkpoints)."""
    rng = random.Random(0)
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "sweep.yaml").write_text("stages:\n  - name: pre\n  - name: adv\n")

    def trial(seed, stage, epochs=EPOCHS, **kw):
        config = {**realistic_config(seed, "bn", "random", stage), "epochs": EPOCHS}
        return FakeTrial(config, realistic_rows(EPOCHS, rng)[:epochs], **kw)

    pre = write_experiment(root / "pre", [trial(0, "pre"), trial(1, "pre")], prefix="pre00")
    diverged = trial(3, "adv", epochs=2)
    diverged.rows[-1].update(diverged=True, diverged_reason="train_loss is nan")
    write_experiment(root / "adv", [trial(2, "adv"), diverged, trial(4, "adv", 1, status="ERROR"),
                                    trial(5, "adv", 2, status="RUNNING")], prefix="adv00")
    old = min(pre.glob("*seed=1*/checkpoint_*"))
    (root / "bnsweep_state.json").write_text(json.dumps({"stages": {"pre": {"finished": True, "checkpoints": {
        '["from_stage:pre", "cifar10", "resnet20", 1]': str(old)}}}}))
    return root


def checkpoints(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob("*/*/checkpoint_*")}


def other_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file() and "checkpoint_" not in str(p)}


def test_prune_frees_what_nobody_needs_and_keeps_results_identical(sweep, capsys):
    before, files, frame = checkpoints(sweep), other_files(sweep), results.load(sweep)
    assert main(["prune", str(sweep), "--yes"]) == 0
    out = capsys.readouterr().out
    after = checkpoints(sweep)
    deleted = before - after
    # pre seed 0: 2 older; pre seed 1: 1 older (the other is named in the state file);
    # adv: terminated 2 older, diverged 1 older; error and running keep theirs
    assert len(deleted) == 6 and "would delete 6 checkpoint(s) of 4 ended trial(s)" in out
    assert "1 more that later stages start from" in out and "2 trial(s) not ended" in out
    by_trial = {}
    for c in after:
        by_trial.setdefault(str(Path(c).parent), []).append(Path(c).name)
    for trial_dir, names in by_trial.items():
        seed = int(trial_dir.split("seed=")[1].split("_")[0])
        expected = {0: ["checkpoint_000002"], 1: ["checkpoint_000000", "checkpoint_000002"],
                    2: ["checkpoint_000002"], 3: ["checkpoint_000001"], 4: ["checkpoint_000000"],
                    5: ["checkpoint_000000", "checkpoint_000001"]}[seed]
        assert sorted(names) == expected, trial_dir
    assert other_files(sweep) == files  # result.json, params.json, progress.csv, state files: untouched
    pd.testing.assert_frame_equal(results.load(sweep), frame)
    assert main(["prune", str(sweep), "--yes"]) == 0 and "nothing to delete" in capsys.readouterr().out


def test_prune_asks_and_without_a_terminal_deletes_nothing(sweep, capsys, monkeypatch):
    before = checkpoints(sweep)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal: refuse, say how
    assert main(["prune", str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing deleted" in err and "--yes" in err
    assert checkpoints(sweep) == before

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert main(["prune", str(sweep)]) == 0 and "nothing deleted" in capsys.readouterr().out
    assert checkpoints(sweep) == before
    monkeypatch.setattr("sys.stdin", Terminal(""))  # stdin closed at the prompt: no
    assert main(["prune", str(sweep)]) == 0 and checkpoints(sweep) == before
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert main(["prune", str(sweep / "adv")]) == 0  # one stage only
    assert len(before - checkpoints(sweep)) == 3 and "freed" in capsys.readouterr().out


def test_plan_lists_sizes(sweep):
    p = prune.plan(str(sweep))
    assert len(p.delete) == 6 and p.bytes == 6  # each fake checkpoint holds one byte
    assert all(Path(uri).name.startswith("checkpoint_") for uri, _ in p.delete)


def checkpointed_trial(config: dict, storage_root: str | None = None) -> None:
    """Three epochs, each reported with a checkpoint; seed 1 fails after epoch 2 while `block` exists,
    and resumes from its checkpoint."""
    import os
    import tempfile

    from ray import tune

    start = tune.get_checkpoint()
    first = int((Path(start.path) / "epoch").read_text()) + 1 if start else 1
    for epoch in range(first, 4):
        with tempfile.TemporaryDirectory() as checkpoint:
            Path(checkpoint, "epoch").write_text(str(epoch))
            tune.report({"epoch": epoch, "robust_acc": 0.1 * epoch}, checkpoint=tune.Checkpoint.from_directory(checkpoint))
        if config["seed"] == 1 and epoch == 2 and os.path.exists(os.path.join(config["data_dir"], "block")):
            raise RuntimeError("interrupted")


def test_resume_after_prune_finishes_the_failed_trial(tmp_path, ray_local):
    """Prune between a failed stage and its resume: the terminated trial loses its older checkpoint,
    the failed one keeps both, and resume continues it from its newest."""
    import sys

    import ray.cloudpickle
    import yaml

    from bnsweep.layout.paths import sweep_dir
    from bnsweep.sweep.driver import SweepFailed, execute
    from bnsweep.sweep.spec import load_sweep

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    (tmp_path / "block").touch()
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "max_failures": 0, "grid": {"seed": [0, 1]},
                                    "trial": {"dataset": "planted", "epochs": 3, "data_dir": str(tmp_path)}}))
    root = sweep_dir(str(tmp_path / "results"), "p")
    with pytest.raises(SweepFailed):
        execute(load_sweep(str(path)), root, resume=False, trainable=checkpointed_trial)
    assert main(["prune", root, "--yes"]) == 0
    kept = {p.parent.name.split("seed=")[1][0]: sorted(c.name for c in p.parent.glob("checkpoint_*"))
            for p in Path(root).glob("main/*/result.json")}
    assert kept == {"0": ["checkpoint_000002"], "1": ["checkpoint_000000", "checkpoint_000001"]}
    (tmp_path / "block").unlink()
    execute(load_sweep(str(path)), root, resume=True, trainable=checkpointed_trial)
    df = results.load(root).set_index("seed")
    assert set(df["status"]) == {"terminated"} and list(df["epoch"]) == [3, 3]
