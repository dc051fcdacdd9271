"""bnsweep.results: Ray Tune experiment directories -> DataFrames, and `bnsweep results`."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
from _experiments import EPOCHS

from bnsweep import results
from bnsweep.cli import main
from bnsweep.results.columns import COLLISION_SUFFIX
from bnsweep.testing import (
    FakeTrial,
    realistic_config,
    realistic_rows,
    write_experiment,
)

# ----------------------------------------------------------------------------- a real Ray sweep


def test_load_real_sweep_one_row_per_trial(ray_dir):
    df = results.load(ray_dir)
    assert len(df) == 4
    assert not any(c.startswith("config/") for c in df.columns)
    assert set(df["experiment"]) == {"ray_sweep"} and set(df["stage"]) == {"main"}
    assert sorted(df["status"]) == ["error", "terminated", "terminated", "terminated"]
    failed = df[df["status"] == "error"].iloc[0]
    assert (failed["trainable"], failed["seed"]) == ("bn", 1)
    assert failed["error"] == "RuntimeError: simulated failure in epoch 2"
    assert failed["epoch"] == 1 and pd.isna(failed["final_robust_acc"])
    done = df[df["status"] == "terminated"]
    assert (done["epoch"] == EPOCHS).all() and done["final_clean_acc"].notna().all()
    assert done["error"].isna().all()


def test_load_real_sweep_dtypes_and_columns(ray_dir):
    df = results.load(ray_dir)
    assert df["seed"].dtype == "int64" and df["epoch"].dtype == "int64"
    for col in ("clean_acc", "robust_acc", "robust_acc_eps2", "final_robust_acc"):
        assert df[col].dtype == "float64"
    assert pd.api.types.is_string_dtype(df["trainable"])
    assert df["eval_eps_255"].iloc[0] == [2, 4, 8]
    assert "lr" in df.attrs["trial_keys"] and (df["lr"] == 0.1).all()
    assert "lr" + COLLISION_SUFFIX in df.columns  # the epoch's lr, reported
    assert "final_attack" + COLLISION_SUFFIX in df.columns
    assert pd.api.types.is_datetime64_any_dtype(df["timestamp"])
    assert not {"config", "should_checkpoint", "checkpoint_dir_name"} & set(df.columns)


def test_checkpoint_is_newest(ray_dir):
    df = results.load(ray_dir).set_index("status", append=True)
    for path in df["checkpoint"]:
        assert Path(path).is_dir()
    done = df.xs("terminated", level="status")
    assert all(p.endswith(f"checkpoint_{EPOCHS - 1:06d}") for p in done["checkpoint"])


def test_history_real_sweep(ray_dir):
    hist = results.history(ray_dir)
    assert len(hist) == 3 * EPOCHS + 1
    assert hist.groupby("trial_id")["epoch"].apply(list).map(len).sort_values().tolist() == [1, 3, 3, 3]
    assert {"trainable", "seed", "status", "clean_acc"} <= set(hist.columns)
    assert hist["epoch"].dtype == "int64"
    last = hist.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    df = results.load(ray_dir).set_index("trial_id")
    pd.testing.assert_series_equal(last["clean_acc"].sort_index(), df["clean_acc"].sort_index())


def test_experiment_dir_uri_and_list(ray_dir):
    by_dir = results.load(ray_dir / "main")
    assert set(by_dir["experiment"]) == {"ray_sweep"} and set(by_dir["stage"]) == {"main"}
    by_uri = results.load(f"file://{ray_dir}")
    assert sorted(by_uri["trial_id"]) == sorted(by_dir["trial_id"])
    assert len(results.load([ray_dir, ray_dir / "main"])) == 4  # the same stage twice counts once
    assert len(results.history(f"file://{ray_dir / 'main'}")) == 3 * EPOCHS + 1


# ----------------------------------------------------------------------------- hand-made sweeps


def test_mixed_sweep_statuses(mixed_dir):
    df = results.load(mixed_dir)
    assert list(dict.fromkeys(df["stage"])) == ["pre", "adv"]  # the sweep file's order
    adv = df[df["stage"] == "adv"].set_index("seed")
    assert adv["status"].to_dict() == {0: "terminated", 1: "terminated", 2: "error",
                                       3: "running", 4: "pending", 5: "diverged", 6: "running"}
    assert adv.loc[2, "error"] == "RuntimeError: CUDA out of memory"
    assert adv.loc[5, "error"] == "train_loss is nan in epoch 2"
    assert pd.isna(adv.loc[4, "clean_acc"]) and pd.isna(adv.loc[4, "checkpoint"])
    assert adv.loc[4, "trainable"] == "bn"  # a pending trial keeps its config
    assert pd.isna(adv.loc[3, "final_clean_acc"]) and adv.loc[3, "epoch"] == 2
    assert df["epoch"].dtype == "Int64"  # a pending trial leaves a gap, integers stay integers


def test_mixed_sweep_history_and_objectives(mixed_dir):
    hist = results.history(mixed_dir)
    per_trial = hist.groupby(["stage", "seed"]).size()
    assert per_trial.loc[("adv", 3)] == 2 and ("adv", 4) not in per_trial.index
    assert per_trial.loc[("pre", 0)] == EPOCHS
    experiments = results.find_experiments(mixed_dir)
    assert [(e.stage, e.metric, e.mode) for e in experiments] == [
        ("pre", "clean_acc", "max"), ("adv", "robust_acc", "max")]


def test_an_experiment_named_twice_counts_once(mixed_dir, tmp_path):
    """A sweep and one of its stages, or another spelling of the same directory (a symlink, `..`)."""
    (tmp_path / "link").symlink_to(mixed_dir)
    spellings = [mixed_dir, mixed_dir / "pre", tmp_path / "link" / "adv", f"{mixed_dir}/pre/../adv",
                 f"file://{mixed_dir}"]
    df = results.load(spellings)
    assert len(df) == len(results.load(mixed_dir)) and not df["trial_dir"].duplicated().any()


def test_partial_last_line_and_restored_trial(tmp_path):
    rows = realistic_rows(3, random.Random(0))
    exp = write_experiment(tmp_path / "s" / "main",
                           [FakeTrial(realistic_config(0, "bn", "random"), rows, status="RUNNING")])
    result = next(exp.glob("*/result.json"))
    lines = result.read_text().splitlines()
    restored = json.loads(lines[1])
    restored["clean_acc"] = 0.99  # re-reported after a restore from the first checkpoint
    result.write_text("\n".join(lines + [json.dumps(restored), lines[2], '{"epoch": 4, "cle']))
    df = results.load(exp)
    assert df["epoch"].tolist() == [3]
    hist = results.history(exp)
    assert hist["epoch"].tolist() == [1, 2, 3] and hist["clean_acc"].iloc[1] == 0.99


def test_no_experiment(tmp_path):
    with pytest.raises(results.NoExperimentError, match="no Ray Tune experiment"):
        results.load(tmp_path)
    with pytest.raises(results.NoExperimentError, match="no such directory"):
        results.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- CLI


def _cli(*argv: str) -> int:
    return main(["results", *argv])


def test_cli_where_columns_sort(mixed_dir, capsys):
    code = _cli(str(mixed_dir), "--where", "stage == 'adv' and status == 'terminated'",
                "--columns", "trainable,seed,robust_acc", "--sort", "seed", "--desc",
                "--format", "csv")
    assert code == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(out.columns) == ["trainable", "seed", "robust_acc"]
    assert out["seed"].tolist() == [1, 0]


@pytest.mark.parametrize("fmt,read", [
    ("csv", pd.read_csv), ("parquet", pd.read_parquet),
    ("json", lambda p: pd.read_json(p, orient="records"))])
def test_cli_formats_round_trip(mixed_dir, tmp_path, fmt, read):
    path = tmp_path / f"trials.{fmt}"
    assert _cli(str(mixed_dir), "-o", str(path)) == 0  # format from the suffix
    back, df = read(path), results.load(mixed_dir)
    assert back["trial_id"].tolist() == df["trial_id"].tolist()
    assert back["status"].tolist() == df["status"].tolist()
    pd.testing.assert_series_equal(back["robust_acc"], df["robust_acc"], check_dtype=False)
    if fmt == "parquet":
        assert back["seed"].dtype == "int64" and back["epoch"].dtype == "Int64"


def test_cli_markdown_and_history(mixed_dir, capsys):
    assert _cli(str(mixed_dir), "--history", "--format", "markdown", "--columns",
                "stage,seed,epoch,clean_acc", "--where", "stage == 'pre'") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| stage | seed | epoch | clean_acc |" and len(lines) == 2 + 2 * EPOCHS


@pytest.mark.parametrize("argv,message", [
    (["--columns", "seed,nope"], "unknown column 'nope'"),
    (["--sort", "nope"], "unknown column 'nope'"),
    (["--where", "nope == 1"], "--where"),
    (["--where", "seed =="], "--where"),
    (["--format", "parquet"], "needs -o"),
])
def test_cli_errors(mixed_dir, capsys, argv, message):
    assert _cli(str(mixed_dir), *argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_path_without_experiment(tmp_path, capsys):
    assert _cli(str(tmp_path)) == 2
    assert "no Ray Tune experiment" in capsys.readouterr().err


def test_sweep_dir_copy_is_still_found(mixed_dir, tmp_path):
    copy = shutil.copytree(mixed_dir, tmp_path / "moved")  # results move between machines
    assert results.load(copy)["trial_dir"].str.startswith(str(copy)).all()
