"""The benchmark runs and prints sane numbers (no timing thresholds)."""

from __future__ import annotations

import math

import pytest
import torch

from bnsweep import code_version, provenance
from bnsweep.bench.runner import main as bench_main
from bnsweep.bench.training import ReferenceLoop, throughput
from bnsweep.core.data import batches
from bnsweep.core.train import Trial


def test_quick_benchmark_prints_every_part(capsys, ray_local):
    """Every part at toy size; the Ray parts share the tests' Ray instead of starting three."""
    rows = bench_main(["--quick", "--device", "cpu"])
    assert ray_local.is_initialized()  # the parts left the session's Ray running
    out = capsys.readouterr().out
    assert "device cpu" in out and f"torch {torch.__version__}" in out and f"bnsweep {code_version()}" in out
    for section in ("== efficiency", "== peers", "== eval", "[loading]", "== scale", "[data]", "== cpu"):
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

    (folder_row,) = rows["data"]
    assert folder_row["images"] == 60 and folder_row["first_s"] > 0 and folder_row["cached_s"] > 0

    # cpu: eager fp32 and bf16 at toy size (--quick skips compiling), in NCHW (what trials ran in before)
    # and channels_last (as they run now), ratios against fp32 eager NCHW
    cpu = rows["cpu"]
    assert [(r["precision"], r["compile"], r["layout"]) for r in cpu] == [
        ("fp32", False, "NCHW"), ("bf16", False, "NCHW"), ("fp32", False, "NHWC"), ("bf16", False, "NHWC")]
    assert all(r[f"{step}_images_per_s"] > 0 for r in cpu for step in ("clean", "pgd", "eval"))
    assert cpu[0]["pgd_ratio"] == cpu[0]["clean_ratio"] == 1.0
    assert "native bf16: " in out and "cpu " in out

    # every printed target carries this run's verdict, from the numbers it printed
    lowest = min(r["ideal_ratio"] for r in eff)
    assert f"lowest ideal/measured: {lowest:.2f} (target >= 0.9: {'met' if lowest >= 0.9 else 'MISSED'})" in out
    ratio = ours["wall_s"] / bare["wall_s"]
    assert f"bare Ray Tune: {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'})" in out

    survivors, every = rows["eval"]
    assert survivors["seconds"] > 0 and every["seconds"] > 0
    assert survivors["clean_acc"] == every["clean_acc"]
    assert all(0 <= v <= 1 for r in (survivors, every) for k, v in r.items() if k.endswith("acc") or "acc_" in k)


def test_a_target_says_whether_this_run_met_it():
    from bnsweep.bench.common import target

    assert target(0.95, ">= 0.9") == "(target >= 0.9: met)"
    assert target(0.85, ">= 0.9", "for long trials") == "(target >= 0.9 for long trials: MISSED)"
    assert target(1.10, "<= 1.10") == "(target <= 1.10: met)" and target(1.2, "<= 1.10").endswith("MISSED)")


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


def test_record_writes_the_output_under_a_provenance_header(tmp_path, capsys):
    path = tmp_path / "bench-cpu.txt"
    argv = ["--quick", "--device", "cpu", "--part", "loading", "--record", str(path), "--allow-dirty"]
    bench_main(argv)
    printed = capsys.readouterr().out
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0] == "# bnsweep benchmark record: python -m bnsweep.bench " + " ".join(argv)
    code = provenance.code()
    assert f"# bnsweep {code}" in header[1] and header[2].startswith(f"# machine {provenance.machine()['host']}: ")
    assert provenance.cpu_name() in header[2] and f"torch {torch.__version__}" in header[2]
    assert header[3].startswith("# load average (1 min) at the start: ") and header[-1].startswith("# load average")
    assert ("# DIRTY" in text) == code.dirty
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert body.strip() and body.strip() in printed  # what was printed, as printed
    assert "[loading]" in body and "device cpu" in body


def test_record_over_a_committed_record_keeps_the_checkout_clean_while_running(tmp_path, monkeypatch):
    """Re-recording a committed file: while the parts run, the old record is untouched (so git sees
    no change and the header is not DIRTY), and it is replaced only at the end."""
    path = tmp_path / "bench-cpu.txt"
    path.write_text("the old record\n")
    seen = []
    from bnsweep.bench import runner

    real_run = runner._run
    monkeypatch.setattr(runner, "_run", lambda args: (seen.append(path.read_text()), real_run(args))[1])
    bench_main(["--quick", "--device", "cpu", "--part", "loading", "--record", str(path), "--allow-dirty"])
    assert seen == ["the old record\n"] and path.read_text().startswith("# bnsweep benchmark record")
    assert not (tmp_path / "bench-cpu.txt.partial").exists()

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "_run", interrupted)
    recorded = path.read_text()
    with pytest.raises(KeyboardInterrupt):
        bench_main(["--quick", "--device", "cpu", "--part", "loading", "--record", str(path), "--allow-dirty"])
    assert path.read_text() == recorded and not (tmp_path / "bench-cpu.txt.partial").exists()


def test_record_refuses_a_dirty_checkout_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(provenance, "code", lambda: provenance.Code("0.1.0", "f" * 40, dirty=True))
    with pytest.raises(SystemExit) as stopped:
        bench_main(["--quick", "--part", "loading", "--record", str(tmp_path / "b.txt")])
    assert stopped.value.code == 2 and not (tmp_path / "b.txt").exists()
    err = capsys.readouterr()
    assert "bench |" not in err.out and err.err.count("\n") == 1 and "--allow-dirty" in err.err


def test_cpu_part_times_compiled_variants_and_the_warm_cache(capsys):
    """About 40 s: compiles twice in fresh processes. Width 0.5, not --quick's 0.25: torch 2.14.1's
    compiled CPU backward of resnet8 at width 0.25 aborts the process (double free or corruption)."""
    rows = bench_main(["--quick", "--part", "cpu", "--cpu-compile", "--cpu-precisions", "fp32",
                       "--cpu-width", "0.5"])["cpu"]
    steps = [r for r in rows if r["kind"] == "throughput"]
    assert [(r["precision"], r["compile"], r["layout"]) for r in steps] == [
        ("fp32", False, "NCHW"), ("fp32", False, "NHWC"), ("fp32", True, "NHWC")]
    first, second = [r for r in rows if r["kind"] == "compile"]
    assert (first["run"], second["run"]) == ("first (empty cache)", "second (warm cache)")
    assert second["pgd_compile_s"] < first["pgd_compile_s"]  # the second process reuses the first's artefacts


def test_packing_stopped_before_every_trial_reported_says_so(monkeypatch, capsys):
    """A packing run stopped by a time limit (Ctrl-C ends the Tune run with trials unreported) prints
    what it timed and says where it stopped, instead of failing on the missing reports."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from ray import tune

    from bnsweep.bench import common, sweep

    class Stopped:  # what Tuner.fit() returns: one trial reported, the other was stopped first
        def __init__(self, *args, **kwargs):
            self.n = kwargs["param_space"]["n"]

        def fit(self):
            done = {"images": 100, "start": 0.0, "end": 1.0}
            return [SimpleNamespace(metrics=done if self.n == 1 or i == 0 else {}) for i in range(self.n)]

    monkeypatch.setattr(tune, "Tuner", Stopped)
    monkeypatch.setattr(common, "ray_session", nullcontext)
    args = SimpleNamespace(pack_counts=[1, 2], pack_model="resnet8", pack_steps=1, pack_batch_size=8,
                           pack_batches=1, pack_epochs=1, width=0.25)
    rows = sweep.packing(SimpleNamespace(args=args))
    assert [r["trials"] for r in rows] == [1] and rows[0]["ratio"] == 1
    assert "2 trials: stopped before every trial reported" in capsys.readouterr().out


def test_demo_part_times_both_commits_back_to_back(capsys):
    """Against HEAD at toy size (--set): each side runs the demo once, from a worktree and from here."""
    rows = bench_main(["--part", "demo", "--demo-against", "HEAD", "--smoke-test"])["demo"]
    *runs, ratio = rows
    assert [r["side"] for r in runs] == ["against", "this"]
    assert all(r["seconds"] > 0 and r["precision"] in ("fp32", "bf16") for r in runs)
    assert ratio["ratio"] == runs[1]["seconds"] / runs[0]["seconds"]
    out = capsys.readouterr().out
    assert "== demo: bnsweep run sweeps/demo.yaml, start to exit" in out and f"of {ratio['against']}'s time" in out
    assert "bnsweep-bench-demo-" not in provenance.git("worktree", "list")  # the temporary worktree is gone


@pytest.mark.parametrize("argv,problem", [([], "needs --demo-against REV"),
                                          (["--demo-against", "no-such-rev"], "'no-such-rev' is not a commit")])
def test_demo_part_refuses_a_missing_or_unknown_commit_up_front(argv, problem, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_main(["--part", "demo", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("python -m bnsweep.bench: error: --demo-against: ") and problem in err
