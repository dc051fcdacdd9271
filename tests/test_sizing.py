"""Sizing a sweep before launch: trials and work counted without building the grid, max_trials."""

from __future__ import annotations

import tracemalloc

import pytest
import yaml

from bnsweep.cli import main
from bnsweep.errors import ConfigError
from bnsweep.layout.labels import duration
from bnsweep.sweep import sizing, spec
from bnsweep.sweep.spec import parse_sweep

TRIAL = {"dataset": "planted", "model": "resnet8", "n_train": 100, "epochs": 2, "train_steps": 3}
# 10 dimensions of 10 values: 10^10 cells, each value valid on its own
HUGE_GRID = {"seed": list(range(10)), "data_seed": list(range(10)), "eval_steps": list(range(1, 11)),
             "final_steps": list(range(1, 11)), "lr": [0.01 * i for i in range(1, 11)],
             "momentum": [0.05 * i for i in range(10)], "weight_decay": [1e-4 * i for i in range(10)],
             "batch_size": list(range(16, 26)), "width": [0.25 * i for i in range(1, 11)],
             "eval_n": list(range(100, 110))}


def parse(doc: dict):
    return parse_sweep(yaml.safe_dump(doc), "s.yaml")


def test_huge_grid_is_counted_and_validated_without_being_built():
    parse({"trial": TRIAL})  # imports (torch, for model names) outside the measurement
    tracemalloc.start()
    try:
        sweep = parse({"max_trials": 10**11, "trial": TRIAL, "grid": HUGE_GRID})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (stage,) = sweep.stages
    assert stage.num_trials == 10**10
    assert peak < 10 * 2**20  # a built grid would need terabytes
    # work = trials x epochs x images x (PGD steps + 1)
    assert sizing.stage_work(stage) == 10**10 * 2 * 100 * 4


@pytest.mark.parametrize("base, dims, message", [
    # each value passes against the base; one combination of a key group does not
    ({"train_attack": "none"}, {"train_attack": ["none", "pgd"], "train_eps_255": [0, 8]},
     "train_eps_255.*train_attack is not none"),
    ({"model": "preact_resnet18"}, {"model": ["preact_resnet18", "resnet8"], "trainable": ["all", "bn@stage4"]},
     "trainable.*bn@stage4"),
    ({"n_train": 100}, {"dataset": ["planted", "digits"], "n_train": [100, 2000]}, "n_train.*at most 1438 for digits"),
])
def test_huge_grid_still_refuses_a_bad_combination_within_a_key_group(base, dims, message, monkeypatch):
    """A grid too big to enumerate is still checked for every combination within each KEY_GROUPS group
    (the random sample of cells, a safety net for checks not listed there, is switched off here)."""
    monkeypatch.setattr(spec, "SAMPLED_CELLS", 0)
    grid = {**HUGE_GRID, **dims}
    with pytest.raises(ConfigError, match=message):
        parse({"max_trials": 10**12, "trial": {**TRIAL, **base}, "grid": grid})
    grid = {**grid, next(iter(dims)): list(dims.values())[0][:1]}  # without the bad value: valid
    assert parse({"max_trials": 10**12, "trial": {**TRIAL, **base}, "grid": grid}).stages[0].num_cells > 10**10


def test_huge_later_stage_matches_its_source_by_projection():
    stages = [{"name": "pre", "grid": {"seed": list(range(10))}},
              {"name": "adv", "trial": {"init": {"from_stage": "pre"}}, "grid": HUGE_GRID}]
    sweep = parse({"max_trials": 10**11, "trial": TRIAL, "stages": stages})
    assert sweep.stages[1].from_stage == "pre" and sweep.stages[1].num_trials == 10**10
    stages[0]["grid"]["seed"] = list(range(9))  # seed 9 of the later stage has no source trial
    with pytest.raises(ConfigError, match="seed=9.*none found"):
        parse({"max_trials": 10**11, "trial": TRIAL, "stages": stages})
    stages[0]["grid"] = {"seed": list(range(10)), "lr": [0.1, 0.2]}  # two source trials per seed
    with pytest.raises(ConfigError, match="seed=0.*2 found"):
        parse({"max_trials": 10**11, "trial": TRIAL, "stages": stages})


def test_sweep_above_max_trials_is_refused_with_how_to_raise_it(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"trial": TRIAL, "grid": HUGE_GRID}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "10000000000" in err and "max_trials (10000)" in err and "max_trials: 10000000000" in err
    storage = tmp_path / "storage"
    assert main(["run", str(path), "--storage", str(storage)]) == 2
    assert not storage.exists()
    # the limit counts every stage together
    doc = {"max_trials": 3, "trial": TRIAL, "grid": {"seed": [0, 1]}, "stages": [{"name": "a"}, {"name": "b"}]}
    with pytest.raises(ConfigError, match="trials: 4 is not allowed"):
        parse(doc)
    assert len(parse({**doc, "max_trials": 4}).stages) == 2
    with pytest.raises(ConfigError, match="max_trials"):
        parse({**doc, "max_trials": 0})


def test_work_counts_attacks_epochs_images_and_sampled_keys():
    doc = {"trial": {**TRIAL, "n_train": 0}, "stages": [
        {"name": "clean", "trial": {"train_attack": "none"}, "grid": {"epochs": [1, 3]}},
        {"name": "mixed", "grid": {"train_attack": ["pgd", "fgsm"], "adv_fraction": [0.5, 1.0]}},
        {"name": "sampled", "search_alg": "optuna", "num_samples": 4,
         "search": {"train_steps": {"randint": [1, 5]}, "lr": {"loguniform": [0.01, 0.1]}}}]}
    clean, mixed, sampled = parse(doc).stages
    planted = 10_000  # n_train: 0 is the whole (default-size) planted training split
    assert sizing.stage_work(clean) == (1 + 3) * planted
    # pgd-3 at 50% and 100%, fgsm at 50% and 100%: passes 2.5, 4, 1.5, 2 per image
    assert sizing.stage_work(mixed) == pytest.approx(2 * planted * (2.5 + 4 + 1.5 + 2))
    assert sizing.stage_work(sampled) == pytest.approx(4 * 2 * planted * (1 + 3))  # E[steps] = 3


def test_validate_prints_counts_work_and_projection(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"trial": TRIAL, "grid": {"seed": [0, 1, 2]}, "max_concurrent": 2}))
    assert main(["validate", str(path), "--rate", "100", "--slots", "4"]) == 0
    out = capsys.readouterr().out
    assert "3 trial(s) in all" in out and "2.4 k image passes" in out  # 3 x 2 x 100 x 4
    # 2,400 passes at 100/s per trial, 2 at a time (max_concurrent caps the 4 slots): 12 s
    assert "100 image passes/s per trial, 4 trial(s) at a time: 12 s" in out
    assert main(["validate", str(path), "--rate", "-1"]) == 2
    assert "--rate" in capsys.readouterr().err


def test_durations_and_si():
    assert duration(40) == "40 s" and duration(125) == "2 min 5 s"
    assert duration(3 * 3600 + 300) == "3 h 5 min" and duration(2 * 86400 + 7200) == "2 d 2 h"
    assert duration(None) == "-" and duration(float("nan"), exact=True) == "-"
    assert duration(47, exact=True) == "47 s" and duration(256, exact=True) == "4 min 16 s"
    assert duration(8105, exact=True) == "2 h 15 min 5 s"
    assert sizing.si(2_400) == "2.4 k" and sizing.si(1.17e9) == "1.17 G" and sizing.si(12) == "12"
