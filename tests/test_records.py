"""Run records (`bnsweep record`): a real small sweep recorded, read back as the experiment it came
from (same frames, tables, figures, report), with the machines that ran it, wall times from what Ray
and the trials wrote, and refusals that leave nothing behind."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bnsweep import provenance, results
from bnsweep.cli import main
from bnsweep.errors import UsageError
from bnsweep.layout.labels import duration
from bnsweep.results import record, runinfo
from bnsweep.testing import (
    FakeTrial,
    realistic_config,
    realistic_rows,
    write_experiment,
)

# The demo's two stages at toy size: clean pre-training, then BN-only and classifier-only adversarial
# training from it and from random weights (what the report's comparisons need), two seeds.
TINY = {"dataset": "planted", "n_train": 64, "n_test": 32, "model": "resnet8", "width": 0.25, "batch_size": 32,
        "epochs": 1, "eval_n": 16, "eval_steps": 2, "eval_eps_255": [2, 8], "final_steps": 2, "device": "cpu"}
SWEEP = {"name": "toy", "trial": TINY, "grid": {"seed": [0, 1]}, "resources": {"cpu": 1, "gpu": 0},
         "stages": [{"name": "pretrain", "trial": {"train_attack": "none"}},
                    {"name": "adv", "trial": {"train_steps": 1, "train_step_255": 8, "epochs": 2},
                     "grid": {"trainable": ["bn", "fc"], "init": [{"from_stage": "pretrain"}, "random"]}}]}
NOT_WRITTEN_NOW = ("- Written ",)  # report.md's one line about when and by which code it was written


@pytest.fixture(scope="module")
def toy(tmp_path_factory, ray_local):
    """(experiment, its record, the command that ran it): a real sweep through `bnsweep run`."""
    tmp = tmp_path_factory.mktemp("toy")
    sweep_file = tmp / "toy.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    argv = ["run", str(sweep_file), "--storage", str(tmp / "results"), "--set", "lr=0.05"]
    assert main(argv) == 0
    root, rec = tmp / "results" / "toy", tmp / "record"
    assert main(["record", str(root), "-o", str(rec), "--allow-dirty"]) == 0  # a test may run from a dirty tree
    return root, rec, " ".join(["bnsweep", *argv])


def _report_body(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.startswith(NOT_WRITTEN_NOW)]


def test_a_record_reads_as_the_experiment_it_was_made_from(toy):
    root, rec, _ = toy
    for read in (results.load, results.history):
        from_experiment, from_record = read(root), read(rec)
        pd.testing.assert_frame_equal(from_record, from_experiment)  # values and dtypes, column order
        assert from_record.attrs == from_experiment.attrs
    assert len(results.load(rec)) == 2 + 8 and set(results.load(rec)["status"]) == {"terminated"}


def test_table_plot_results_and_report_give_the_same_output_from_both(toy, tmp_path, capsys):
    root, rec, _ = toy
    for argv in (["table", "--format", "both", "--where", "stage == 'adv'"],
                 ["table", "--compare", "trainable == 'bn' and init == 'random'", "trainable == 'fc' and init == 'random'"],
                 ["results", "--columns", "trial_id,trainable,init,seed,clean_acc,robust_acc,trial_dir"],
                 ["results", "--history", "--format", "csv"]):
        outputs = []
        for path in (root, rec):
            capsys.readouterr()
            assert main([argv[0], str(path), *argv[1:]]) == 0
            outputs.append(capsys.readouterr().out)
        assert outputs[0] == outputs[1] and outputs[0].strip(), argv
    for kind in ("study", "robustness", "training"):
        for name, path in (("experiment", root), ("record", rec)):
            assert main(["plot", kind, str(path), "-o", str(tmp_path / f"{kind}-{name}.png")]) == 0
        assert (tmp_path / f"{kind}-experiment.png").read_bytes() == (tmp_path / f"{kind}-record.png").read_bytes()
        assert (tmp_path / f"{kind}-experiment.pdf").read_bytes() == (tmp_path / f"{kind}-record.pdf").read_bytes()
    for name, path in (("experiment", root), ("record", rec)):
        assert main(["report", str(path), "-o", str(tmp_path / name)]) == 0
    first, second = (_report_body(tmp_path / n / "report.md") for n in ("experiment", "record"))
    # Only the lines saying where the trials came from differ: the experiment's path, or the record's
    provenance_ends = first.index("## Summary")
    assert first[provenance_ends:] == second[second.index("## Summary"):]
    for name in ("table.tex", "study.png", "robustness_curves.png", "training_curves.png", "trials.csv"):
        assert (tmp_path / "experiment" / name).read_bytes() == (tmp_path / "record" / name).read_bytes(), name


def test_a_record_reproduces_its_own_report(toy, tmp_path):
    _, rec, _ = toy
    assert main(["report", str(rec), "-o", str(tmp_path / "again")]) == 0
    assert _report_body(tmp_path / "again" / "report.md") == _report_body(rec / "report.md")
    for name in ("table.tex", "study.png", "study.pdf", "training_curves.png"):
        assert (tmp_path / "again" / name).read_bytes() == (rec / name).read_bytes(), name


def test_record_holds_provenance_and_wall_times_from_what_the_trials_wrote(toy):
    root, rec, command = toy
    meta = json.loads((rec / "record.json").read_text())
    assert meta["command"] == command  # the exact command that started the sweep
    assert meta["experiment"] == "toy" and meta["source"] == str(root)
    assert (rec / "sweep.yaml").read_text() == (root / "sweep.yaml").read_text()
    assert yaml.safe_load((rec / "overrides.yaml").read_text()) == {"lr": 0.05}
    here = provenance.machine()
    (machine,) = meta["machines"]  # one machine ran all ten trials: this one
    assert machine == {**{k: here[k] for k in runinfo.MACHINE_KEYS}, "trials": 10}
    (code,) = meta["code"]
    assert code["commit"] == provenance.code().commit and code["trials"] == 10
    assert meta["recorded"]["commit"] == provenance.code().commit
    assert meta["load_avg"]["reports"] == 2 * 1 + 8 * 2  # one per epoch reported

    hist = results.history(root)
    times = meta["wall_times"]
    first = hist[hist["training_iteration"] == 1]
    starts = first["timestamp"] - pd.to_timedelta(first["time_this_iter_s"], unit="s")
    assert times["sweep_s"] == pytest.approx((hist["timestamp"].max() - starts.min()).total_seconds(), abs=0.1)
    assert list(times["stages"]) == ["pretrain", "adv"]
    for stage, t in times["stages"].items():
        df = results.load(root)
        last = df[df["stage"] == stage]
        assert t["trials"] == len(last)
        assert t["mean_trial_s"] == pytest.approx(last["time_total_s"].mean(), abs=0.1)
        assert t["mean_trial_s"] <= t["wall_s"] + 1 <= times["sweep_s"] + 1  # timestamps are whole seconds
    assert sum(t["wall_s"] for t in times["stages"].values()) <= times["sweep_s"] + 1


def test_record_is_small_with_no_checkpoints_or_event_files(toy):
    _, rec, _ = toy
    names = sorted(p.name for p in rec.iterdir())
    assert names == sorted(["record.json", "sweep.yaml", "overrides.yaml", "trials.csv", "epochs.csv", "report.md",
                            "table.tex", *(f"{f}.{x}" for f in ("study", "robustness_curves", "training_curves")
                                           for x in ("png", "pdf"))])
    assert sum(p.stat().st_size for p in rec.iterdir()) < 1_000_000
    text = (rec / "report.md").read_text()
    assert "![Clean and robust accuracy per trainable set and init](study.png)" in text
    assert "[trials.csv](trials.csv)" in text  # the record's own trials.csv
    assert "### Differences over seeds" in text  # bn vs fc from pre-trained, pre-trained vs random for bn


def test_record_refuses_uncommitted_changes_unless_allowed(toy, tmp_path, monkeypatch, capsys):
    root, _, _ = toy
    monkeypatch.setattr(provenance, "code", lambda: provenance.Code("0.1.0", "f" * 40, dirty=True))
    out = tmp_path / "dirty"
    assert main(["record", str(root), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "uncommitted changes" in err and "--allow-dirty" in err
    assert not out.exists()  # nothing written
    assert main(["record", str(root), "-o", str(out), "--allow-dirty"]) == 0
    assert "warning: DIRTY record" in capsys.readouterr().err  # said on the terminal too
    assert json.loads((out / "record.json").read_text())["dirty"] is True
    assert "**DIRTY:" in (out / "report.md").read_text()


def _reporting(machine: dict, dirty: bool = False) -> list[dict]:
    """Rows as trials report them, run on `machine` from a checkout that was `dirty` or not."""
    rows = realistic_rows(2, random.Random(0))
    for row in rows:
        row.update(provenance={**machine, "bnsweep": "0.1.0", "commit": "a" * 40, "dirty": dirty}, load_avg=0.5)
    return rows


H200 = {"host": "gpu-node-7", "cpu": "Intel Xeon Platinum 8480+", "cpus": 224, "memory_gib": 2015.6,
        "gpu": "NVIDIA H200", "gpus": 8, "gpu_driver": "570.86.15", "python": "3.11.9", "torch": "2.11.0+cu130",
        "ray": "2.60.0"}


def test_record_names_the_machine_that_ran_the_trials_not_its_own(tmp_path):
    """Recorded later, here, a sweep run elsewhere still names the machine its trials reported."""
    exp = tmp_path / "gpu" / "main"
    write_experiment(exp, [FakeTrial(realistic_config(s, "bn", "random"), _reporting(H200)) for s in range(3)])
    record.write_record(str(tmp_path / "gpu"), str(tmp_path / "rec"), allow_dirty=True)
    meta = json.loads((tmp_path / "rec" / "record.json").read_text())
    assert meta["machines"] == [{**H200, "trials": 3}]
    assert meta["command"] is None  # made without bnsweep run: said, not invented
    text = (tmp_path / "rec" / "report.md").read_text()
    assert "gpu-node-7: Intel Xeon Platinum 8480+, 224 CPUs, 2015.6 GiB, 8x NVIDIA H200 (driver 570.86.15)" in text
    assert provenance.cpu_name() not in text.split("## Summary")[0].replace("- Written", "")


def test_record_refuses_trials_run_from_a_dirty_checkout(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(provenance, "code", lambda: provenance.Code("0.1.0", "f" * 40))  # records from a clean one
    write_experiment(tmp_path / "x" / "main", [FakeTrial(realistic_config(0, "bn", "random"), _reporting(H200, True))])
    assert main(["record", str(tmp_path / "x"), "-o", str(tmp_path / "rec")]) == 2
    assert "trials ran from a bnsweep checkout with uncommitted changes" in capsys.readouterr().err
    assert not (tmp_path / "rec").exists()


def test_record_goes_into_a_new_directory_or_replaces_a_record(mixed_dir, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["record", str(mixed_dir), "-o", str(busy), "--allow-dirty"]) == 2
    assert "is not a record" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"
    rec = tmp_path / "rec"
    assert main(["record", str(mixed_dir), "-o", str(rec), "--allow-dirty"]) == 0
    (rec / "stale.txt").write_text("from an older record")
    assert main(["record", str(mixed_dir), "-o", str(rec), "--allow-dirty"]) == 0
    assert not (rec / "stale.txt").exists()  # replaced whole, nothing of the old one left
    # every status survives the round trip: failed, running, pending, diverged trials and their errors
    pd.testing.assert_frame_equal(results.load(rec), results.load(mixed_dir))
    pd.testing.assert_frame_equal(results.history(rec), results.history(mixed_dir))


def test_records_and_experiments_load_together(mixed_dir, tmp_path):
    rec = tmp_path / "rec"
    record.write_record(str(mixed_dir), str(rec), allow_dirty=True)
    both = results.load([rec, mixed_dir / "pre"])
    assert len(both) == len(results.load(mixed_dir)) + 2
    assert both.attrs["trial_keys"] == results.load(mixed_dir).attrs["trial_keys"]


def test_a_damaged_record_is_one_line(mixed_dir, tmp_path, capsys):
    rec = tmp_path / "rec"
    record.write_record(str(mixed_dir), str(rec), allow_dirty=True)
    csv = (rec / "trials.csv").read_text().splitlines()
    (rec / "trials.csv").write_text("\n".join([csv[0].replace("trial_id", "trial"), *csv[1:]]) + "\n")
    assert main(["table", str(rec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trials.csv: damaged" in err
    (rec / "record.json").write_text("{")
    assert main(["results", str(rec)]) == 2
    assert "record.json: damaged" in capsys.readouterr().err


def test_typed_csv_round_trips_every_kind_of_column(tmp_path):
    df = pd.DataFrame({
        "f": [0.1, 1 / 3, float("nan")], "i": [1, 2, 3], "I": pd.array([1, None, 3], dtype="Int64"),
        "b": [True, False, True], "B": pd.array([True, None, False], dtype="boolean"),
        "s": pd.Series(["a", None, "c"], dtype="str"), "e": pd.Series(["", "x", ""], dtype="str"),
        "both": pd.Series(["", None, "y"], dtype="str"), "list": [[2.0, 8.0], None, {"a": 1}],
        "t": pd.to_datetime([1.5e9, None, 1.7e9], unit="s", utc=True)})
    df.attrs.update(trial_keys=["i"], metric_keys=["f"])
    schema = record.write_csv(df, str(tmp_path / "x.csv"))
    back = record.read_csv((tmp_path / "x.csv").read_text(), json.loads(json.dumps(schema)), "x.csv")
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs == df.attrs


def test_wall_times_use_each_trials_first_report_and_ray_clock():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [("a", "t1", 1, 10, 10.0, 10.0), ("a", "t1", 2, 18, 8.0, 18.0),  # started at 0, ended at 18
            ("a", "t2", 1, 25, 20.0, 20.0),                                  # started at 5, ended at 25
            ("b", "t3", 1, 40, 4.0, 4.0), ("b", "t3", 2, 47, 7.0, 11.0)]     # started at 36, ended at 47
    hist = pd.DataFrame(rows, columns=["stage", "trial_id", "training_iteration", "ts", "time_this_iter_s",
                                       "time_total_s"])
    hist["timestamp"] = t0 + pd.to_timedelta(hist.pop("ts"), unit="s")
    hist["status"] = "terminated"
    times = runinfo.wall_times(hist)
    assert times["sweep_s"] == 47 and times["start"] == t0.isoformat()
    assert times["stages"] == {"a": {"trials": 2, "wall_s": 25, "mean_trial_s": 19.0},
                               "b": {"trials": 1, "wall_s": 11, "mean_trial_s": 11.0}}


def test_trials_report_their_machine_with_every_result(toy):
    root, _, _ = toy
    hist = results.history(root)
    here = provenance.machine()
    for key in runinfo.MACHINE_KEYS:
        column = hist[f"provenance/{key}"]
        assert column.isna().all() if here[key] is None else (column == here[key]).all(), key
    for key in runinfo.CODE_KEYS:  # the code that ran them (this checkout, unless it moved on since)
        assert hist[f"provenance/{key}"].nunique() == 1, key
    assert hist["provenance/bnsweep"].iloc[0] == here["bnsweep"]
    assert hist["load_avg"].notna().all()
    assert os.cpu_count() == here["cpus"]


def test_bad_command_lines_are_one_line_and_write_nothing(mixed_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv in (["record", str(mixed_dir), "-o", str(tmp_path / "file")],          # -o is a file
                 ["record", str(tmp_path / "missing"), "-o", str(tmp_path / "r1")],  # no experiment
                 ["quote", str(tmp_path / "missing.md")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_quote_rewrites_blocks_and_check_fails_on_a_changed_number(mixed_dir, tmp_path, capsys):
    rec = tmp_path / "docs" / "runs" / "mixed"
    record.write_record(str(mixed_dir), str(rec), allow_dirty=True)
    doc = tmp_path / "README.md"
    doc.write_text("Took <!-- record: docs/runs/mixed wall -->?<!-- /record -->.\n\n"
                   "<!-- record: docs/runs/mixed table --where \"stage == 'adv'\" -->\n<!-- /record -->\n"
                   "```markdown\n<!-- record: docs/runs/nowhere table -->an example<!-- /record -->\n```\n")
    assert main(["quote", str(doc), "--check"]) == 1
    assert main(["quote", str(doc)]) == 0
    text = doc.read_text()
    took = duration(json.loads((rec / "record.json").read_text())["wall_times"]["sweep_s"], exact=True)
    assert f"Took <!-- record: docs/runs/mixed wall -->{took}<!-- /record -->." in text
    assert "| pre-trained (stage pre) |" not in text and "| adv |" not in text  # one stage: a shared key
    assert "an example" in text  # markers inside a code fence are an example, left alone
    capsys.readouterr()
    assert main(["quote", str(doc), "--check"]) == 0 and capsys.readouterr().out == ""
    doc.write_text(text.replace("| 2 |", "| 3 |", 1))
    assert main(["quote", str(doc), "--check"]) == 1
    assert "differs from its record" in capsys.readouterr().out
    doc.write_text("<!-- record: docs/runs/gone wall -->1 s<!-- /record -->\n")
    assert main(["quote", str(doc)]) == 2
    assert "is not a run record" in capsys.readouterr().err


def test_every_kind_of_quote(mixed_dir, tmp_path):
    from bnsweep.results import compare, quote, tables

    rec = tmp_path / "rec"
    record.write_record(str(mixed_dir), str(rec), allow_dirty=True)
    df = results.load(mixed_dir)
    meta = json.loads((rec / "record.json").read_text())
    row = compare.compare(df, "stage == 'pre'", "stage == 'adv'").set_index("metric").loc["clean_acc"]
    assert quote.render("rec interval \"stage == 'pre'\" \"stage == 'adv'\" --metric clean_acc", tmp_path) == \
        compare.inline(row) == f"{100 * row['difference']:+.1f} points (95 % interval {100 * row['low']:+.1f} " \
                               f"to {100 * row['high']:+.1f}; 2 vs 2 seeds)"
    cell = tables.display_table(tables.summarize(df[df["stage"] == "adv"]))["clean (%)"].iloc[0]
    assert quote.render("rec cell clean (%) --where \"stage == 'adv'\"", tmp_path) == cell
    timing = quote.render("rec timing", tmp_path)
    took = duration(meta["wall_times"]["sweep_s"], exact=True)
    assert f"| whole sweep (first trial start to last report) | {took} |" \
        in timing and "| stage `adv` (" in timing
    costs = quote.render("rec costs", tmp_path)
    assert costs.count("\n| `") == 2 and "| `adv` | " in costs and " %) |" in costs
    assert quote.render("rec provenance", tmp_path).startswith(meta["wall_times"]["start"][:10])
    with pytest.raises(UsageError, match="leaves 2"):
        quote.render("rec cell clean (%)", tmp_path)
    with pytest.raises(UsageError, match="record block"):
        quote.render("rec nonsense", tmp_path)


def test_report_into_its_own_record_rewrites_the_report_and_keeps_the_record(mixed_dir, tmp_path, capsys):
    """`bnsweep report RECORD -o RECORD` brings a record's report up to date with the code; the typed
    trials.csv and record.json stay as recorded, and no other trials' report may land in a record."""
    rec = tmp_path / "rec"
    record.write_record(str(mixed_dir), str(rec), allow_dirty=True)
    kept = {name: (rec / name).read_bytes() for name in ("trials.csv", "epochs.csv", "record.json")}
    (rec / "report.md").write_text("an old report\n")
    assert main(["report", str(rec), "-o", str(rec)]) == 0
    assert {name: (rec / name).read_bytes() for name in kept} == kept
    assert (rec / "report.md").read_text().startswith("# Sweep report: ")
    pd.testing.assert_frame_equal(results.load(rec), results.load(mixed_dir))
    before = {p.name: p.read_bytes() for p in rec.iterdir()}
    capsys.readouterr()
    assert main(["report", str(mixed_dir), "-o", str(rec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a run record of other trials" in err
    assert {p.name: p.read_bytes() for p in rec.iterdir()} == before  # nothing written


def test_time_split_puts_each_second_of_a_trial_in_one_part():
    """Training = images / images_per_s per epoch (records made before trials reported `train_s`),
    evaluation = the rest of each epoch, other = Ray's time outside the epochs; means over a stage's
    trials; a stage of such a record that trained on every image is left out, one whose trials
    reported `train_s` is not."""
    from bnsweep.results import runinfo

    rows = []
    for trial, scale in (("a", 1.0), ("b", 2.0)):
        rows += [dict(stage="adv", trial_id=trial, n_train=1000, images_per_s=100 / scale, epoch_s=12 * scale,
                      time_total_s=15 * scale),  # 10 s training, 2 s evaluation
                 dict(stage="adv", trial_id=trial, n_train=1000, images_per_s=200 / scale, epoch_s=9 * scale,
                      time_total_s=25 * scale)]  # 5 s training, 4 s evaluation; 25 - 21 = 4 s other
    rows.append(dict(stage="all", trial_id="c", n_train=0, images_per_s=1.0, epoch_s=1.0, time_total_s=2.0))
    split = runinfo.time_split(pd.DataFrame(rows))
    assert split == {"adv": {"training": 22.5, "evaluation": 9.0, "other": 6.0}}
    assert runinfo.time_split(pd.DataFrame(rows).drop(columns="epoch_s")) == {}
    rows.append(dict(stage="full", trial_id="d", n_train=0, images_per_s=50.0, train_s=3.0, epoch_s=4.0,
                     time_total_s=6.0))
    split = runinfo.time_split(pd.DataFrame(rows))
    assert split["full"] == {"training": 3.0, "evaluation": 1.0, "other": 2.0} and "all" not in split
    assert split["adv"] == {"training": 22.5, "evaluation": 9.0, "other": 6.0}


def test_quote_help_names_every_kind_a_block_can_have():
    """`bnsweep quote --help` lists the kinds by hand (the command line does not import the results
    layer to build its parser): every kind `quote` renders is named there."""
    from bnsweep.cli import build_parser
    from bnsweep.results import quote

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    description = sub.choices["quote"].description
    kinds = next(a for a in quote._parser()._actions if a.dest == "kind").choices
    assert [k for k in kinds if not re.search(rf"\b{k}\b", description)] == []
