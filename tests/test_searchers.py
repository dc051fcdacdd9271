"""The stage's search algorithm restores in agreement with the experiment's snapshot (sweep/searchers.py).

The search state and the snapshot are written here as Ray writes them, from two different moments, as
a driver killed while Ray copies them leaves them; test_faults kills a real driver into one such case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from bnsweep.sweep.searchers import SnapshotSearch, SnapshotVariants

SEEDS = [0, 1, 2, 3]


def trainable(config):
    pass


def grid(max_concurrent: int) -> SnapshotVariants:
    search = SnapshotVariants(random_state=0, max_concurrent=max_concurrent)
    search.add_configurations([Experiment("main", trainable, config={"seed": tune.grid_search(SEEDS),
                                                                       "lr": tune.uniform(0, 1)})])
    return search


def write_snapshot(directory: Path, trials: dict[str, str]) -> None:
    """An experiment_state file listing `trials` (trial id -> Ray status), laid out as Ray writes it."""
    data = [[json.dumps({"trial_id": tid, "status": status, "relative_logdir": f"run_{tid}", "config": {}}),
             json.dumps({})] for tid, status in trials.items()]
    (directory / "experiment_state-2026-12-05_00-00-00.json").write_text(json.dumps({"trial_data": data}))


def restored(saved: SnapshotVariants | SnapshotSearch, fresh, directory: Path, trials: dict[str, str]):
    saved.save_to_dir(str(directory), session_str="2026-12-05_00-00-00")
    write_snapshot(directory, trials)
    fresh.restore_from_dir(str(directory))
    return fresh


def made(search, n: int) -> list:
    return [search.next_trial() for _ in range(n)]


def test_a_search_state_older_than_the_snapshot_counts_its_running_trials_and_makes_no_trial_again(tmp_path):
    original = grid(max_concurrent=2)
    first = made(original, 2)  # the search state of an early save: trials 0 and 1 running
    ids = [t.trial_id for t in first] + [first[0].trial_id[:-1] + "2"]
    search = restored(original, grid(max_concurrent=2), tmp_path,
                      {ids[0]: "TERMINATED", ids[1]: "TERMINATED", ids[2]: "RUNNING"})
    assert search._live_trials == {ids[2]}  # Ray's own restore kept 0 and 1 running: it waited for ever
    trial = search.next_trial()  # one slot is free: the next is trial 3, not 2 again
    assert trial.trial_id.endswith("_00003") and trial.config["seed"] == 3
    assert search.next_trial() is None  # two running: the limit holds
    search.on_trial_complete(ids[2])
    search.on_trial_complete(trial.trial_id)
    assert search.next_trial() is None and search.is_finished()


def test_a_search_state_newer_than_the_snapshot_makes_the_trials_it_lacks_as_they_were(tmp_path):
    original = grid(max_concurrent=0)
    trials = made(original, 3)  # the snapshot was saved after trial 1, the search state after trial 2
    search = restored(original, grid(max_concurrent=0), tmp_path,
                      {trials[0].trial_id: "TERMINATED", trials[1].trial_id: "RUNNING"})
    again = search.next_trial()
    assert (again.trial_id, again.config) == (trials[2].trial_id, trials[2].config)  # same id, same draw of lr
    assert search.next_trial().config["seed"] == 3 and search.next_trial() is None and search.is_finished()


def test_a_search_state_that_agrees_with_the_snapshot_restores_as_ray_restores_it(tmp_path):
    original = grid(max_concurrent=2)
    trials = made(original, 2)
    search = restored(original, grid(max_concurrent=2), tmp_path,
                      {trials[0].trial_id: "RUNNING", trials[1].trial_id: "PENDING"})
    assert search._live_trials == {t.trial_id for t in trials} and search.next_trial() is None
    search.on_trial_complete(trials[0].trial_id)
    assert search.next_trial().config["seed"] == 2


def test_optuna_with_a_limit_counts_the_snapshot_s_trials(tmp_path):
    pytest.importorskip("optuna")

    def optuna(limit: int) -> SnapshotSearch:
        search = SnapshotSearch(ConcurrencyLimiter(OptunaSearch(seed=0), max_concurrent=limit))
        search.set_search_properties("acc", "max", {"lr": tune.uniform(0, 1)})
        search.add_configurations([Experiment("main", trainable, num_samples=4, config={"lr": tune.uniform(0, 1)})])
        return search

    original = optuna(2)
    first = made(original, 2)  # saved while trials 0 and 1 ran; the snapshot has 3, two finished
    third = "c0ffee00"
    search = restored(original, optuna(2), tmp_path,
                      {first[0].trial_id: "TERMINATED", first[1].trial_id: "TERMINATED", third: "RUNNING"})
    assert search._counter == 3 and search.searcher.live_trials == {third}
    assert search.next_trial() is not None  # the fourth and last sample: one slot was free
    assert search.is_finished()
