"""Shared fixtures for the trainer-core tests: tiny CPU trials on the synthetic `planted` data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _experiments import mixed_sweep, ray_sweep, two_stage_sweep

from bnsweep.core.config import make_config

# One thread per test process: the tests' models are tiny, and on a busy 2-core machine a second
# OpenMP thread spins against the other processes instead of helping (measured: AutoAttack on two
# images of a tiny resnet8 took 205 s of CPU with 2 threads, 8 s with 1).
torch.set_num_threads(1)

# BNSWEEP_TEST_DEVICE=cuda runs the trainer-core tests on a GPU (docs/contributing.md, Tests).
TINY = dict(dataset="planted", model="resnet8", width=0.25, n_train=128, n_test=64, eval_n=64,
            epochs=1, batch_size=64, train_steps=2, eval_steps=3, final_steps=3,
            device=os.environ.get("BNSWEEP_TEST_DEVICE", "cpu"), final_attack="none")


@pytest.fixture
def small_tmpfs(tmp_path):
    """`small_tmpfs(size)` -> a fresh directory on a tmpfs of that size (`16k`, `1500k`), for tests of
    a full disk; unmounted after the test. Needs root and mount rights, as on CI; skipped elsewhere."""
    import subprocess

    mounts = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs-{len(mounts)}"
        path.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a small tmpfs here")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tiny_config():
    """`tiny_config(**overrides)` -> a validated TrialConfig small enough to train in about a second."""

    def make(**overrides):
        return make_config({**TINY, **overrides})

    return make


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, loopback, no dashboard) shared by every test that runs a sweep."""
    import ray

    from bnsweep.sweep.driver import connect

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    connect(None)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_dir(tmp_path_factory) -> Path:
    """A real Ray Tune experiment of a tiny stand-in trainable (4 trials, one failing)."""
    return ray_sweep(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def two_stage(tmp_path_factory, ray_local) -> str:
    """A real two-stage bnsweep sweep (`_experiments.two_stage_sweep`), shared by the sweep and
    TensorBoard tests."""
    return two_stage_sweep(tmp_path_factory.mktemp("two_stage"))


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory) -> Path:
    """Hand-made experiment directories with every trial status."""
    return mixed_sweep(tmp_path_factory.mktemp("mixed"))
