"""TensorBoard as a user sees it: a real `tensorboard` server on a real two-stage sweep, asked over
its HTTP data API for what the browser shows (HPARAMS and TIME SERIES), plus the pieces behind it."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from bnsweep import results
from bnsweep.sweep.spec import load_sweep, parse_sweep
from bnsweep.sweep.tensorboard import (
    TAGS,
    RunNames,
    _Run,
    experiment_summary,
    hparam_keys,
    metric_order,
    study_metrics,
    tag,
)

REPO = os.path.join(os.path.dirname(__file__), "..")
README_SWEEP = os.path.join(REPO, "sweeps", "demo.yaml")
# The two_stage fixture (tests/_experiments.py): eval_eps_255 [8]; pre trains clean (its robust
# radius is then the first eval radius, 8), adv with PGD at 8/255.
METRICS = ["accuracy/final_robust", "accuracy/robust@8", "accuracy/clean", "accuracy/train", "loss/train",
           "optimizer/lr", "speed/images_per_s", "speed/epoch_s", "params/trainable"]
HPARAMS = {"stage": ["adv", "pre"], "seed": [0.0, 1.0], "trainable": ["all", "bn", "fc"],
           "init": ["pre-trained (stage pre)", "random"]}
ADV_RUNS = [f"{t}, {i}, seed {s}" for t in ("bn", "fc") for i in ("pre-trained", "random") for s in (0, 1)]
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def test_tags_say_what_a_metric_means():
    assert tag("robust_acc", 8.0) == tag("robust_acc_eps8", 2.0) == "accuracy/robust@8"  # robust_acc at its radius
    assert tag("robust_acc_eps0.5", 8.0) == "accuracy/robust@0.5"
    assert tag("final_robust_acc", 8.0) == "accuracy/final_robust"
    assert tag("final_autoattack_acc", 8.0) == "accuracy/final_autoattack"  # a final attack added later fits
    assert tag("train_loss", 8.0) == "loss/train" and tag("images_per_s", 8.0) == "speed/images_per_s"
    for bookkeeping in ("epoch", "n_params", "trainable_groups", "done", "node_id", "training_iteration", "diverged"):
        assert tag(bookkeeping, 8.0) is None
    shuffled = ["loss/train", "accuracy/clean", "accuracy/robust@16", "accuracy/final_autoattack", "speed/epoch_s",
                "accuracy/robust@2", "accuracy/train", "accuracy/final_robust", "accuracy/robust@8"]
    assert sorted(shuffled, key=metric_order) == [
        "accuracy/final_robust", "accuracy/final_autoattack", "accuracy/robust@2", "accuracy/robust@8",
        "accuracy/robust@16", "accuracy/clean", "accuracy/train", "loss/train", "speed/epoch_s"]


def test_docs_name_every_tag():
    with open(os.path.join(REPO, "docs", "guides", "tensorboard.md")) as fh:
        section = fh.read().split("## TIME SERIES\n", 1)[1].split("\n## ", 1)[0]
    for name in [*TAGS.values(), "accuracy/robust@E", "accuracy/final_robust", "accuracy/final_clean"]:
        assert f"`{name}`" in section, name


def test_the_hparams_view_of_the_demo_comes_from_its_sweep_file():
    sweep = load_sweep(README_SWEEP)
    assert hparam_keys(sweep) == ["stage", "seed", "trainable", "init"]
    assert study_metrics(sweep)[:5] == ["accuracy/final_robust", "accuracy/robust@2", "accuracy/robust@4",
                                        "accuracy/robust@8", "accuracy/clean"]  # the five TensorBoard shows first
    from tensorboard.plugins.hparams import metadata

    experiment = metadata.parse_experiment_plugin_data(
        experiment_summary(sweep).value[0].metadata.plugin_data.content)
    domains = {h.name: sorted(v.string_value or v.number_value for v in h.domain_discrete.values)
               for h in experiment.hparam_infos}
    assert domains == {"stage": ["adv", "pretrain"], "seed": [0.0, 1.0],
                       "trainable": ["all", "bn", "bn+fc", "fc"], "init": ["pre-trained (stage pretrain)", "random"]}
    pretrain, adv = (RunNames(stage) for stage in sweep.stages)
    stage = sweep.stages[1]
    cell = {**stage.base, **next(stage.combinations(stage.grid)), "trainable": "bn+fc", "seed": 1}
    assert adv({**cell, "init": "from_stage:pretrain"}, "a1b2c_00003") == "bn+fc, pre-trained, seed 1"
    assert pretrain({**sweep.stages[0].base, "seed": 0}, "a1b2c_00000") == "seed 0"


@pytest.mark.parametrize("settings, named", [
    ("grid: {lr: [0.1, 0.2]}", "lr=0.1"),
    ("grid: {lr: [0.1, 0.1000001]}", "lr=0.1 (t_00000)"),  # values that print alike
    ("grid: {lr: [0.1, 0.2]}\nnum_samples: 2", "lr=0.1 (t_00000)"),
    ("search: {lr: {loguniform: [0.01, 0.2]}}", "lr=0.1 (t_00000)"),
    ("grid: {lr: [0.1]}", "main"),  # nothing varied: the stage's name
])
def test_run_names_are_unique_and_carry_the_trial_id_only_where_they_could_repeat(settings, named):
    sweep = parse_sweep(f"name: s\ntrial: {{dataset: planted, model: resnet8}}\n{settings}\n", "s.yaml")
    stage, = sweep.stages
    assert RunNames(stage)({**stage.base, "lr": 0.1}, "t_00000") == named


def test_a_resumed_run_shows_each_step_once(tmp_path):
    """A resumed trial writes a new event file from the epoch it resumes at; points the old file
    holds from there on (reported after the checkpoint it resumed from) are dropped."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.proto import summary_pb2

    path = str(tmp_path / "run")
    first = _Run(path, summary_pb2.Summary(), {"stage": "s"}, 8.0)
    for epoch in (1, 2, 3):
        first.write({"epoch": epoch, "clean_acc": epoch / 10})
    first.close(ended=False)  # interrupted
    time.sleep(1.1)  # event files are named by the second they are opened in, and read in name order
    resumed = _Run(path, summary_pb2.Summary(), {"stage": "s"}, 8.0)
    for epoch in (2, 3):
        resumed.write({"epoch": epoch, "clean_acc": 0.5 + epoch / 10})
    resumed.close(ended=True)
    events = EventAccumulator(path)
    events.Reload()
    assert [(e.step, round(e.value, 2)) for e in events.Scalars("accuracy/clean")] == [(1, 0.1), (2, 0.7), (3, 0.8)]


# -- a real TensorBoard server ------------------------------------------------------------------

@contextlib.contextmanager
def tensorboard(logdir: str, load_fast: str):
    """`tensorboard --logdir` on a free loopback port; yields a `get(path, body=None)` for its API."""
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
                             "--port", "0", f"--load_fast={load_fast}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            if m := re.search(r"TensorBoard \S+ at (http://\S+?)/? ", line):
                url = m.group(1)
                break
        assert url, "tensorboard did not start"

        def get(path: str, body: dict | None = None):
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        yield get
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


def session_groups(get, experiment: dict, sort_by: str) -> list[dict]:
    """What the HPARAMS table lists, sorted by one metric (highest first), as the browser asks."""
    columns = [{"hparam": h["name"], "includeInResult": True} for h in experiment["hparamInfos"]]
    for m in experiment["metricInfos"]:
        columns.append({"metric": m["name"], "includeInResult": True,
                        **({"order": "ORDER_DESC"} if m["name"]["tag"] == sort_by else {})})
    return get("/data/plugin/hparams/session_groups", {"experimentName": "", "allowedStatuses": STATUSES,
                                                       "colParams": columns, "startIndex": 0, "sliceSize": 100})[
        "sessionGroups"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage, load_fast", [(None, "auto"), ("pre", "false")])
def test_tensorboard_shows_the_study(two_stage, stage, load_fast):
    """The sweep's directory (TensorBoard's default, fast loader) and one stage's (the Python
    loader): the stage `pre` alone, as TensorBoard shows it while `adv` has not started yet, still
    has the whole sweep's configuration."""
    runs = ["seed 0", "seed 1"] if stage else ["pre/seed 0", "pre/seed 1", *(f"adv/{r}" for r in ADV_RUNS)]
    logdir = os.path.join(two_stage, stage) if stage else two_stage
    with tensorboard(logdir, load_fast) as get:
        deadline = time.monotonic() + 120
        while True:  # TensorBoard loads in the background
            experiment = get("/data/plugin/hparams/experiment", {"experimentName": "", "hparamsLimit": 1000})
            groups = experiment.get("metricInfos") and session_groups(get, experiment, "accuracy/final_robust")
            if groups and len(groups) == len(runs) and all(len(g["metricValues"]) == len(METRICS) for g in groups):
                break
            assert time.monotonic() < deadline, f"TensorBoard showed {experiment} and {groups}"
            time.sleep(0.5)
        # HPARAMS: every key the sweep varies, with all its values; the study's metrics first
        assert {h["name"]: sorted(h["domainDiscrete"]) for h in experiment["hparamInfos"]} == HPARAMS
        assert [m["name"]["tag"] for m in experiment["metricInfos"]] == METRICS
        assert sorted(g["name"] for g in groups) == sorted(r.split("/")[-1] for r in runs)
        finals = [next(v["value"] for v in g["metricValues"] if v["name"]["tag"] == "accuracy/final_robust")
                  for g in groups]
        assert finals == sorted(finals, reverse=True)
        for g in groups:
            (session,) = g["sessions"]
            assert session["status"] == "STATUS_SUCCESS"
            trainable, init, seed = (g["name"].split(", ") if g["hparams"]["stage"] == "adv"
                                     else ["all", "random", g["name"]])
            assert g["hparams"]["trainable"] == trainable and f"seed {g['hparams']['seed']:g}" == seed
            assert g["hparams"]["init"].startswith(init)
        # TIME SERIES: the runs, each with every tag, and no tag without points
        assert sorted(get("/data/runs")) == sorted(runs)
        tags = get("/data/plugin/scalars/tags")
        assert {run: sorted(t) for run, t in tags.items()} == {run: sorted(METRICS) for run in runs}
        for run in runs:
            for name in METRICS:
                query = urllib.parse.urlencode({"run": run, "tag": name})
                steps = [step for _, step, _ in get(f"/data/plugin/scalars/scalars?{query}")]
                assert steps == ([2] if name == "accuracy/final_robust" else [1, 2]), (run, name)
    # Ray's own TensorBoard files are not written: each trial appears once
    for trial_dir in results.load(logdir)["trial_dir"]:
        assert not glob.glob(os.path.join(trial_dir, "events.out.tfevents*"))


def test_autoattack_beside_the_final_pgd_is_a_study_metric():
    """The laptop study runs AutoAttack beside its final PGD: HPARAMS lists both, PGD first."""
    sweep = load_sweep(os.path.join(REPO, "sweeps", "cifar10-laptop.yaml"), {"dataset": "planted"})  # no images here
    assert study_metrics(sweep)[:2] == ["accuracy/final_robust", "accuracy/final_autoattack"]
    assert "accuracy/final_autoattack" not in study_metrics(load_sweep(README_SWEEP))
