"""The fast path: `precision`/`compile` `auto` resolved by the machine and reported, the compile
cache under bnsweep's cache, evaluation in fp32 whatever the training precision, `eval_every`."""

from __future__ import annotations

import os

import pytest
import torch

from bnsweep.core import checkpoints, hardware
from bnsweep.core.config import make_config
from bnsweep.core.data import batches
from bnsweep.core.train import Trial


@pytest.fixture
def bf16_machine(monkeypatch):
    """Pretend the CPU computes bf16 natively (AMX), whatever this machine has."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))


def test_auto_precision_takes_bf16_only_with_native_support(monkeypatch):
    cpu = torch.device("cpu")
    for flags, expected in [({"avx2", "avx512f"}, "fp32"), ({"avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")]:
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert hardware.resolve_precision("auto", cpu) == expected
        assert hardware.resolve_precision("fp32", cpu) == "fp32"  # explicit values are kept
        assert hardware.resolve_precision("bf16", cpu) == "bf16"
    assert hardware.resolve_precision("auto", torch.device("mps")) == "fp32"


def test_auto_compile_needs_a_compiler_and_a_long_enough_trial(monkeypatch):
    cpu, enough = torch.device("cpu"), hardware.AUTO_COMPILE_MIN_BATCHES
    monkeypatch.setattr(hardware, "can_compile", lambda device_type: True)
    assert hardware.resolve_compile("auto", cpu, enough) is True
    assert hardware.resolve_compile("auto", cpu, enough - 1) is False
    assert hardware.resolve_compile(False, cpu, 10 * enough) is False  # explicit values are kept
    assert hardware.resolve_compile(True, cpu, 1) is True
    monkeypatch.setattr(hardware, "can_compile", lambda device_type: False)
    assert hardware.resolve_compile("auto", cpu, 10 * enough) is False


def test_can_compile_finds_this_machines_compiler_or_says_no(monkeypatch):
    assert hardware.can_compile("mps") is False
    hardware.can_compile.cache_clear()
    monkeypatch.setattr("torch._inductor.cpp_builder.get_cpp_compiler",
                        lambda: (_ for _ in ()).throw(RuntimeError("no C++ compiler")))
    try:
        assert hardware.can_compile("cpu") is False
    finally:
        hardware.can_compile.cache_clear()


def test_auto_trial_runs_and_reports_what_it_resolved_to(tiny_config, bf16_machine, tmp_path):
    trial = Trial(tiny_config(precision="auto", compile="auto"))
    assert (trial.precision, trial.compiled) == ("bf16", False)  # a tiny trial: too short to compile
    with trial.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    reports = []
    trial.run(lambda metrics, checkpoint: reports.append(metrics))
    assert (reports[-1]["precision"], reports[-1]["compile"]) == ("bf16", False)


def test_resumed_trial_keeps_the_precision_it_started_with(tiny_config, tmp_path):
    """`auto` resolved on the machine that started a trial holds after a resume elsewhere."""
    cfg = tiny_config(precision="auto")
    trial = Trial(cfg)
    assert trial.precision == "fp32" or hardware.native_bf16(trial.device)
    state = trial.state()
    state["precision"] = "bf16"  # as if it started on a machine with native bf16
    path = str(tmp_path / checkpoints.FILENAME)
    checkpoints.save(path, state)
    resumed = Trial(cfg)
    resumed.restore(path)
    assert resumed.precision == "bf16"


def test_compiling_trial_uses_the_compile_cache_under_bnsweeps_cache(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(hardware, "can_compile", lambda device_type: True)
    monkeypatch.setattr(hardware, "AUTO_COMPILE_MIN_BATCHES", 1)
    trial = Trial(tiny_config(compile="auto"))  # compiles lazily: nothing is compiled before a call
    assert trial.compiled and trial.forward is not trial.model
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # a user's own choice wins
    Trial(tiny_config(compile=True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_evaluation_runs_in_fp32_when_training_runs_in_bf16(tiny_config):
    """bf16 must not change what is measured: every forward pass of the per-epoch and final
    evaluation computes in fp32, while training's passes are bf16."""
    trial = Trial(tiny_config(precision="bf16", final_attack="pgd", eval_eps_255=[2, 8]))
    dtypes: list[torch.dtype] = []
    hook = trial.model.fc.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    try:
        x, y = next(batches(trial.data.train_x, trial.data.train_y, 32, shuffle=False, augment=False))
        trial.train_step(x, y, 0.1)
        assert set(dtypes) == {torch.bfloat16}
        dtypes.clear()
        fp32_trial = Trial(tiny_config(final_attack="pgd", eval_eps_255=[2, 8]))
        fp32_trial.model.load_state_dict(trial.model.state_dict())
        assert trial.evaluate_epoch() == fp32_trial.evaluate_epoch()
        assert trial.final_evaluation() == fp32_trial.final_evaluation()
        assert dtypes and set(dtypes) == {torch.float32}
    finally:
        hook.remove()


def test_eval_every_skips_evaluation_but_never_the_last_epoch(tiny_config, monkeypatch):
    trial = Trial(tiny_config(epochs=3, eval_every=2, final_attack="pgd", n_train=64))
    reports = []
    trial.run(lambda metrics, checkpoint: reports.append(metrics))
    assert [m["epoch"] for m in reports] == [1, 2, 3]
    evaluated = [m["epoch"] for m in reports if "clean_acc" in m]
    assert evaluated == [2, 3]
    assert all("robust_acc" in m for m in reports if m["epoch"] in evaluated)
    assert {"final_clean_acc", "final_robust_acc"} <= set(reports[-1])
    assert all("train_loss" in m for m in reports)  # every epoch still reports its training


def test_eval_every_leaves_the_evaluated_epochs_unchanged(tiny_config):
    """Skipping evaluations changes no number: the attacks' seeds depend on the epoch only."""
    every, sparse = [], []
    Trial(tiny_config(epochs=2, n_train=64)).run(lambda m, c: every.append(m))
    Trial(tiny_config(epochs=2, n_train=64, eval_every=2)).run(lambda m, c: sparse.append(m))
    keys = ("train_loss", "clean_acc", "robust_acc", "final_robust_acc")
    assert [every[-1].get(k) for k in keys] == [sparse[-1].get(k) for k in keys]


def test_cpu_flags_are_read_from_proc_cpuinfo():
    flags = hardware.cpu_flags()
    if os.path.exists("/proc/cpuinfo"):
        assert "fpu" in flags or "fp" in flags or len(flags) > 5
    assert hardware.native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_provenance_names_the_cpu_features_that_tell_two_cpus_of_one_name_apart(monkeypatch):
    """Records of two "AMD EPYC" machines, one with AVX-512 BF16 and one with AVX2 only, must say
    which ran: `precision: auto` trains in bf16 on the first and fp32 on the second."""
    from bnsweep import provenance
    from bnsweep.core import cpuinfo
    from bnsweep.results import runinfo

    assert provenance.machine()["cpu_features"] == cpuinfo.notable_features()
    monkeypatch.setattr(cpuinfo, "cpu_flags", lambda: frozenset({"fpu", "amx_bf16", "avx2", "avx512f"}))
    assert cpuinfo.notable_features() == "avx2 avx512f amx_bf16"
    monkeypatch.setattr(cpuinfo, "cpu_flags", lambda: frozenset())
    assert cpuinfo.notable_features() is None  # unknown, not "none of them"
    line = provenance.describe_machine({"cpu": "AMD EPYC", "cpu_features": "avx2", "cpus": 2})
    assert line.startswith("AMD EPYC (avx2), 2 CPUs")
    assert provenance.describe_machine({"cpu": "AMD EPYC", "cpu_features": None}).startswith("AMD EPYC, ")
    assert "cpu_features" in runinfo.MACHINE_KEYS  # records keep it


def test_auto_values_are_valid_config():
    cfg = make_config({"precision": "auto", "compile": "auto"})
    assert (cfg.precision, cfg.compile) == ("auto", "auto")
    assert make_config({"compile": True}).compile is True
