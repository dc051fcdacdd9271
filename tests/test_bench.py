"""The benchmark runs and prints sane numbers (no timing thresholds)."""

from __future__ import annotations

import math

import pytest
import torch

from bnsweep import code_version
from bnsweep.bench.runner import main as bench_main
from bnsweep.bench.training import ReferenceLoop, throughput
from bnsweep.core.data import batches
from bnsweep.core.train import Trial



def test_quick_benchmark_prints_every_part(capsys):
    rows = bench_main(["--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "device cpu" in out and f"torch {torch.__version__}" in out and f"bnsweep {code_version()}" in out
    for section in ("== efficiency", "== peers", "== eval", "[loading]", "== scale", "[data]"):
        assert section in out
    assert "== gpu: skipped (no CUDA device) ==" in out or torch.cuda.is_available()

    eff = rows["efficiency"]
    assert {(r["trainable"], r["k"]) for r in eff} == {(t, k) for t in ("all", "bn", "fc") for k in (1, 2)}
    for r in eff:
        for key in ("train_s", "grad_s", "pgd_s", "images_per_s", "ideal_ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)

    loops = {(r["trainable"], r["loop"]) for r in rows["peers"]}
    assert {("all", "bnsweep"), ("all", "reference"), ("bn", "bnsweep"), ("bn", "reference")} <= loops
    assert all(r["seconds"] > 0 and r["speedup"] > 0 for r in rows["peers"])

    assert [r["function"] for r in rows["loading"]] == ["load", "history", "status"]
    assert rows["loading"][1]["rows"] == 20 * 3  # 20 trials x 3 epochs in --quick
    assert rows["loading"][2]["rows"] == 20

    ours, bare = rows["scale"]  # 4 trials of one epoch each way, one checkpoint per trial
    assert (ours["run"], bare["run"]) == ("bnsweep run", "bare Ray Tune")
    for r in (ours, bare):
        assert r["wall_s"] > 0 and r["trial_s"] > 0 and r["peak_rss_mb"] > 0 and r["checkpoints"] == 4
        assert 0 < r["checkpoint_mb"] < r["disk_mb"]
    assert ours["ratio"] == ours["wall_s"] / bare["wall_s"]

    (folder_row,) = rows["data"]
    assert folder_row["images"] == 60 and folder_row["first_s"] > 0 and folder_row["cached_s"] > 0

    survivors, every = rows["eval"]
    assert survivors["seconds"] > 0 and every["seconds"] > 0
    assert survivors["clean_acc"] == every["clean_acc"]
    assert all(0 <= v <= 1 for r in (survivors, every) for k, v in r.items() if k.endswith("acc") or "acc_" in k)


def test_quick_benchmark_runs_one_part(capsys):
    rows = bench_main(["--quick", "--device", "cpu", "--part", "efficiency", "--trainable", "bn",
                       "--steps", "1"])
    assert list(rows) == ["efficiency"] and len(rows["efficiency"]) == 1
    assert "== peers" not in capsys.readouterr().out


def test_bench_takes_trainable_expressions_and_refuses_bad_ones_up_front(capsys):
    rows = bench_main(["--quick", "--part", "efficiency", "--trainable", "bn@stage3", "all-stem"])
    assert [r["trainable"] for r in rows["efficiency"]] == ["bn@stage3"] * 2 + ["all-stem"] * 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        bench_main(["--quick", "--part", "efficiency", "--trainable", "bn", "bn@stage9"])
    assert stopped.value.code == 2
    out = capsys.readouterr()
    assert "bench |" not in out.out  # stopped before the header, so before any part ran
    assert out.err.count("\n") == 1 and "'bn@stage9' is not allowed" in out.err


def test_throughput_table_runs_on_cpu():
    """The gpu part's measurement, on the CPU: device-resident uint8 data, augmentation, bf16."""
    rows = throughput(torch.device("cpu"), ["resnet8"], steps=1, batch_size=16, n_batches=2, reps=1,
                            warmup=1, precisions=("fp32", "bf16"), compiles=(False,), width=0.25)
    assert [(r["precision"], r["compile"]) for r in rows] == [("fp32", False), ("bf16", False)]
    assert all(r["images_per_s"] > 0 and r["compile_s"] is None for r in rows)


def test_reference_loop_trains_only_the_chosen_set(tiny_config):
    trial = Trial(tiny_config(trainable="bn"))
    ref = ReferenceLoop(trial.model, "bn", eps=8 / 255, alpha=2 / 255, steps=2)
    x, y = next(batches(trial.data.train_x, trial.data.train_y, 64, shuffle=False, augment=False))
    conv_before = ref.model.conv1.weight.detach().clone()
    bn_before = ref.model.bn1.weight.detach().clone()
    ref.step(x, y)
    assert torch.equal(ref.model.conv1.weight, conv_before)  # has a gradient, but is not in the optimiser
    assert ref.model.conv1.weight.grad is not None
    assert not torch.equal(ref.model.bn1.weight, bn_before)
